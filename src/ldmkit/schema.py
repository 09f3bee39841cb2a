"""Strict dataclass configs: build a dataclass from parsed YAML/JSON, checking every key and type, and apply
dotted overrides. Used by every run config (``ldmkit.config`` for diffusion, ``ldmkit.autoencoders.config``).

An unknown key, a value of the wrong type or a value outside a ``Literal`` is a :class:`ConfigError`
naming the dotted key, the value and what is allowed. Overrides such as ``--train.lr=2e-4`` are parsed as
YAML scalars and checked the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal

import yaml

from ldmkit.registry import ConfigError

# -------------------------------------------------------------------------------------- strict parsing
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.IGNORECASE)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin in (list, tuple):
        return f"a list ({tp})".replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the value converted (lists -> tuples etc.)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            raise bad(f"; did you mean {close[0]!r}?" if close else "")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError:
                pass
        raise bad()
    if tp in (bool, int, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):  # True is an int in Python
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads "2e-4" (no dot) as a string; accept any plain float literal.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
        raise bad()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad(f"; expected {len(args)} items")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        vt = args[1] if args else Any
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported annotation {tp!r} in a config dataclass")


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types raise)."""
    where = key or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in data.items():
        path = f"{key}.{k}" if key else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key{hint}; valid keys in {where}: {', '.join(names)}")
        kwargs[k] = _coerce(hints[k], v, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a component's own __post_init__ validation
        raise ConfigError(f"{where}: {e}") from e


def to_dict(obj: Any) -> Any:
    """A dataclass as plain JSON/YAML data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"--train.lr=2e-4"`` -> (["train", "lr"], 2e-4 or "2e-4"); the value is parsed as a YAML scalar."""
    body = text.removeprefix("--")
    if "=" not in body:
        raise ConfigError(f"override {text!r}: expected --section.key=value")
    name, raw = body.split("=", 1)
    parts = name.split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise ConfigError(f"override {text!r}: {name!r} is not a dotted key such as train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r} ({e})") from e
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each ``--a.b=value`` in a nested dict (a copy); keys are checked later by :func:`from_dict`."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out
