"""``ldmkit serve``: the local web UI (generate, inpaint, img2img, upscale) over the shipped and given models."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from ldmkit.commands._common import non_negative_int, positive_int

TOKEN_ENV = "LDMKIT_SERVE_TOKEN"


def add_parser(sub, formatter_class):
    p = sub.add_parser(
        "serve", help="a local web UI and JSON API: generate, inpaint, img2img in the browser",
        formatter_class=formatter_class,
        description="Serves one page and a JSON API (FastAPI + uvicorn: pip install 'ldmkit[web]') over the "
                    "shipped models (ldmkit models) and every --model. Binds 127.0.0.1; another --host needs --token, "
                    "and every API request then needs it. Requests through a foreign Host or Origin are "
                    "refused. See docs/web.md.")
    p.add_argument("--model", action="append", default=[], metavar="NAME_OR_DIR",
                   help="a checkpoint or run folder (served under its folder name), or a shipped model's name; "
                        "repeatable")
    p.add_argument("--no-demo", action="store_true", help="do not serve the shipped models (only --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (other than loopback needs --token)")
    p.add_argument("--port", type=non_negative_int, default=7860, help="port (0: any free port)")
    p.add_argument("--token", default=None,
                   help=f"access token every API request must send (default: ${TOKEN_ENV} if set)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name clients may use in the Host header (besides the loopback names "
                        "and --host); repeatable")
    p.add_argument("--max-queue", type=non_negative_int, default=4, help="jobs that may wait per model")
    p.add_argument("--max-n", type=positive_int, default=16, help="images per generate request")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def model_sources(specs: list[str], *, demo: bool = True) -> dict[str, Path]:
    """Model id -> checkpoint folder for ``--model NAME_OR_DIR`` values, the shipped diffusion models first
    (``ldmkit.zoo``, served under their registry names unless ``demo`` is False). A spec that is an existing
    folder is served under its folder name (made unique with ``-2``, ``-3``, ...); any other spec must name a
    shipped diffusion model.

    Raises:
        UsageError: a spec that is a file (a pickle is refused as one, never read), or neither a folder nor a
            shipped model's name (the message lists the names).
    """
    from ldmkit import zoo
    from ldmkit.commands._common import UsageError, checkpoint_folder
    from ldmkit.registry import ConfigError, lookup

    shipped = {name: zoo.folder(name) for name in zoo.available() if name not in zoo.FIRST_STAGES}
    out: dict[str, Path] = dict(shipped) if demo else {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():  # e.g. a .ckpt pickle: refused by name (never read), not "unknown model name"
            checkpoint_folder(path, "--model")
        if path.is_dir():
            base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.resolve().name).strip("_")[:90] or "model"
        else:
            try:
                path, base = lookup(shipped, spec, "model name or checkpoint folder"), spec
            except ConfigError as e:
                raise UsageError(f"--model: {e}") from None
        if path.resolve() in {p.resolve() for p in out.values()}:
            continue
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out[name] = path
    return out


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """Host names the server answers to: the loopback names, ``host`` unless a wildcard, and ``extra``."""
    from ldmkit.web.security import LOOPBACK_HOSTS

    out = list(LOOPBACK_HOSTS)
    if host not in ("0.0.0.0", "::", "") and host.strip("[]") not in out:
        out.append(host.strip("[]"))
    return out + [h for h in extra if h not in out]


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return s.getsockname()[1]


def run(args) -> int:
    from ldmkit.commands._common import UsageError, device, load_model

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        raise UsageError(f"--host {args.host}: serving beyond this machine needs --token T (or ${TOKEN_ENV}); every "
                         "request must then carry it")
    if token is not None and len(token) < 8:
        raise UsageError("--token: use at least 8 characters")
    try:
        import uvicorn

        from ldmkit.web.app import create_app
        from ldmkit.web.schemas import Limits
    except ImportError as e:
        raise UsageError(f"ldmkit serve needs the web extra: pip install 'ldmkit[web]' ({e})") from None

    sources = model_sources(args.model, demo=not args.no_demo)
    if not sources:
        raise UsageError("--no-demo: no model left to serve; add --model NAME_OR_DIR")
    hosts = allowed_hosts(args.host, args.allow_host)
    where = device(args.device)
    loaded = {name: load_model(path, device=where) for name, path in sources.items()}  # clear errors, exit 1/2
    app = create_app(loaded, token=token, limits=Limits(max_queue=args.max_queue, max_n=args.max_n),
                     allowed_hosts=hosts, device=where)
    port = args.port or _free_port(args.host)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else shown
    url = f"http://{shown}:{port}/" + (f"#token={token}" if token else "")
    print(f"ldmkit serve: {len(sources)} model(s): {', '.join(sources)}; open {url}  (Host names allowed: "
          f"{', '.join(hosts)}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0
