"""The server's request guard, an ASGI middleware in front of every route.

In order, for every HTTP request:

1. ``Host`` must name an allowed host (loopback names by default): a page on another site whose DNS name
   was re-pointed at 127.0.0.1 (DNS rebinding) sends its own name as ``Host`` and is refused (403).
2. A present ``Origin`` must be this server's own (``scheme://`` + the ``Host`` header), and
   ``Sec-Fetch-Site: cross-site`` is refused: another site's page cannot drive the API (403).
3. With a token, every ``/api`` request needs ``Authorization: Bearer TOKEN`` or ``X-Ldmkit-Token: TOKEN``
   (401). The page and its static files carry no data and load without it; the page reads the token from
   the URL fragment (``#token=...``), which browsers never send to a server.
4. A body over ``max_body_bytes`` is refused (413) before the route sees any of it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(value: str) -> str:
    """The host part of a ``Host`` header value, lower-case (``[::1]:7860`` -> ``::1``, ``a:80`` -> ``a``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    """ASGI middleware applying the checks of the module docstring."""

    def __init__(self, app, *, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS, token: str | None = None,
                 max_body_bytes: int = 8 * 2**20, public_prefixes: tuple[str, ...] = ("/static/",),
                 public_paths: tuple[str, ...] = ("/", "/favicon.ico")):
        self.app = app
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.token = token
        self.max_body_bytes = int(max_body_bytes)
        self.public_prefixes, self.public_paths = public_prefixes, public_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await _answer(send, *refusal)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await _answer(send, 400, f"Content-Length {length!r} is not a byte count")
            if int(length) > self.max_body_bytes:
                return await _answer(send, 413, self._too_large(int(length)))
        body, more = b"", True
        while more:  # read the whole body (bounded) before the route runs
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _answer(send, 413, self._too_large(len(body), at_least=True))
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (f"request body of {'more than ' if at_least else ''}{size} bytes is over the limit of "
                f"{self.max_body_bytes} bytes (max_body_bytes)")

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if host_name(host) not in self.allowed_hosts:
            return 403, (f"Host {host!r} is not allowed (allowed: {', '.join(sorted(self.allowed_hosts))}); "
                         "requests through other host names are refused against DNS rebinding; start the "
                         "server with --allow-host NAME to add one")
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
                return 403, f"Origin {origin!r} is not this server ({host}); cross-origin requests are refused"
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site requests are refused (Sec-Fetch-Site: cross-site)"
        path = scope.get("path", "")
        public = path in self.public_paths or path.startswith(self.public_prefixes)
        if self.token is not None and not public:
            given = headers.get("x-ldmkit-token")
            auth = headers.get("authorization", "")
            if given is None and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                what = "a wrong token" if given is not None else "no token"
                return 401, (f"this server needs its token: request had {what}; send 'Authorization: Bearer "
                             "TOKEN' or 'X-Ldmkit-Token: TOKEN' (the page takes it from the URL as #token=TOKEN)")
        return None


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
