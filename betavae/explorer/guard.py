"""The checks every request passes before the app sees it: the Host header, then the body size.

Plain ASGI, outside FastAPI's request handling, so that both see the request as it arrives:

* **Host.** A page of ``evil.example`` whose name is made to resolve to 127.0.0.1 (DNS rebinding)
  can make the user's browser talk to a local server, but the browser still sends
  ``Host: evil.example``. Only the names the server was started for are answered; anything else
  (or no Host at all) gets 400. The port part of the header is not checked (a forwarded port
  changes it, a rebinding page cannot).
* **Body size.** The bytes actually received are counted, whatever the framing (Content-Length or
  chunked): a declared length over the limit is answered 413 without reading anything, and a body
  that grows past it is answered 413 as soon as it does, the rest left unread and the connection
  closed. The app then sees the client as gone, and whatever it still answers is dropped.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# A Host header: a name or IPv4 address, or an IPv6 address in brackets; an optional port.
_HOST_HEADER = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9._~%!$&'()*+,;=-]+)(?::[0-9]{1,5})?")


def host_name(value: str) -> str | None:
    """The name part of a Host header value, lowercased and without brackets (``[::1]:8765`` →
    ``::1``); None when the value is not a host name with an optional port."""
    match = _HOST_HEADER.fullmatch(value.strip().lower())
    return match["name"].strip("[]") if match else None


def normal_host(text: str) -> str | None:
    """A name or address as given on the command line (``::1`` as well as ``[::1]``, a port
    ignored) in the form :func:`host_name` gives; None if it is not one."""
    return host_name(f"[{text}]" if text.count(":") > 1 and "[" not in text else text)


async def _reply(send, status: int, detail: str) -> None:
    """Sends a JSON ``{"detail": ...}`` answer that closes the connection (so that the rest of the
    request body, if any, is never read)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: refuses requests to other host names, and bodies over ``body_limit(path)`` bytes."""

    def __init__(self, app, allowed_hosts: Iterable[str], body_limit: Callable[[str], int]):
        self.app = app
        self.allowed_hosts = frozenset(allowed_hosts)
        self.body_limit = body_limit
        self.served = ", ".join(f"[{h}]" if ":" in h else h for h in sorted(self.allowed_hosts))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        hosts = [value.decode("latin-1") for key, value in scope["headers"] if key == b"host"]
        if len(hosts) != 1 or host_name(hosts[0]) not in self.allowed_hosts:
            if scope["type"] != "http":
                return await send({"type": "websocket.close", "code": 1008})
            shown = repr(hosts[0][:80]) if len(hosts) == 1 else f"{len(hosts)} Host headers"
            return await _reply(send, 400, f"host {shown} is not served here; this explorer answers to "
                                f"{self.served} (more with --allow-host)")
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        limit = self.body_limit(scope["path"])
        too_large = f"request body over {_size(limit)}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _reply(send, 400, "bad Content-Length header")
            if int(declared) > limit:
                return await _reply(send, 413, too_large)

        received = 0
        cut = False  # past the limit: nothing more is read
        answered = False  # our 413 went out: the app's own answer is dropped
        started = False

        async def counted_receive():
            nonlocal received, cut, answered
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    if not started:
                        answered = True
                        await _reply(send, 413, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not answered:
                raise  # after a 413 the app's complaints about the vanished body are expected


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"
