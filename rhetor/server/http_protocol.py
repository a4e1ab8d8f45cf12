"""uvicorn's HTTP/1.1 protocol (httptools) with each response's head and first body part sent in one write.

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``, then the
body in a second write: two ``send`` system calls, two TCP segments and, for the client, two wake-ups for
every JSON answer. Here the transport uvicorn writes through holds a head until the next write of the same
connection, and sends both with one ``writelines``. A head that no write follows at once (a ``HEAD`` request,
a stream whose first chunk is not there yet, ``100 Continue``) goes out on the event loop's next turn, so
nothing waits on the next write. Everything else passes straight to the socket's transport, in order (a
WebSocket's frames too, after an upgrade: none starts with a status line).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeadWithBodyProtocol"]

_HEAD = b"HTTP/"  # what uvicorn's every head (its status line) starts with, and no body write of its own does


class _HeadHolding:
    """The connection's transport as uvicorn's protocol sees it (the methods it calls, the rest forwarded)."""

    __slots__ = ("_head", "_loop", "raw")

    def __init__(self, raw: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.raw = raw
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.raw.writelines((head, data))
        elif data.startswith(_HEAD):
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self.raw.write(data)

    def flush(self) -> None:
        """Send a held head now (its body did not follow in the same turn of the loop)."""
        head, self._head = self._head, None
        if head is not None and not self.raw.is_closing():
            self.raw.write(head)

    def close(self) -> None:
        self.flush()
        self.raw.close()

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def __getattr__(self, name: str) -> Any:  # anything else (a WebSocket protocol after an upgrade; uvicorn later)
        return getattr(self.raw, name)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """``uvicorn.run(app, http=HeadWithBodyProtocol)``: see the module's docstring."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHolding(transport, self.loop))  # type: ignore[arg-type]
