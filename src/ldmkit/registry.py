"""The one way a name becomes a thing: :func:`lookup` in a literal-dict registry, and :class:`ConfigError`.

Every registry in ldmkit (schedules, samplers, U-Net presets, datasets, feature extractors, ...) is a plain
``dict`` from name to object; ``lookup(REGISTRY, name, "what")`` returns the entry or raises a
:class:`ConfigError` that lists the valid names and the closest match.
"""

from __future__ import annotations

import difflib
from typing import Any


class ConfigError(ValueError):
    """An unknown key, a wrong type or a disallowed value; the message names key, value and what is allowed."""


def lookup(registry: dict[str, Any], name: str, what: str) -> Any:
    """``registry[name]``, or a :class:`ConfigError` listing the valid names (and the closest one)."""
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(str(name), [str(k) for k in registry], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {name!r}; valid: {', '.join(sorted(map(str, registry)))}{hint}")
