"""``EventStream``: Litestar's ``Stream`` response for the SSE endpoints, watching for the client hanging up with
one plain asyncio task instead of an anyio task group.

Litestar's ``ASGIStreamingResponse`` runs the body in an anyio task group next to a task that waits for
``http.disconnect`` and cancels the group's scope. Per stream that is a task group, a cancel scope, two tasks and a
cancellation delivered by anyio's retry loop, each step asking ``current_task()`` again: about 5% of a stream's CPU
under load (``bench/profile.sh --scenario stream``). Here the body is sent from the response's own task, and one
watcher task cancels that task when the client goes; the cancellation is taken back (``Task.uncancel``) and the
response ends quietly, as Litestar's does. Nothing else changes: the headers, the body events and the ending
``more_body: false`` are Litestar's own (``ASGIStreamingResponse._stream``).

A client that hangs up must stop the run: the ASGI server drops what is sent after a disconnect without an error
(uvicorn), so without the watcher a stream nobody reads would go on to its end, and keep paying the provider.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Iterable
from typing import Any

from litestar.enums import MediaType
from litestar.response import Stream
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send
from litestar.utils.helpers import get_enum_string_value

__all__ = ["EventStream"]


class _StreamUntilHangUp(ASGIStreamingResponse):
    async def send_body(self, send: Send, receive: Receive) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None, "an ASGI response is sent from a task"
        hung_up = False

        async def watch() -> None:
            nonlocal hung_up
            while (await receive())["type"] != "http.disconnect":
                pass
            hung_up = True
            streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._stream(send)
        except asyncio.CancelledError:
            # The watcher's cancellation can only land while the body is being sent (it runs only while this task
            # waits inside ``_stream``); any other cancellation (the server shutting down) goes on up.
            if not hung_up or streaming.uncancel() > 0:
                raise
        finally:
            watcher.cancel()


class EventStream(Stream):
    """``Stream`` whose ASGI response stops the body when the client hangs up (see the module docstring)."""

    def to_asgi_response(self, app: Any, request: Any, *, background: Any = None, cookies: Iterable[Any] | None = None,
                         encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
                         headers: dict[str, str] | None = None, is_head_response: bool = False,
                         media_type: MediaType | str | None = None, status_code: int | None = None,
                         type_encoders: Any = None) -> _StreamUntilHangUp:
        """As ``Stream.to_asgi_response`` (Litestar 2), making ``_StreamUntilHangUp``."""
        iterator = self.iterator
        if not isinstance(iterator, AsyncIterable):
            raise TypeError("EventStream takes an async iterable of bytes or str")
        return _StreamUntilHangUp(
            background=self.background or background,
            content_length=0,
            cookies=self.cookies if cookies is None else itertools.chain(self.cookies, cookies),
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers={**headers, **self.headers} if headers is not None else self.headers,
            is_head_response=is_head_response,
            iterator=iterator,
            media_type=get_enum_string_value(media_type or self.media_type or MediaType.JSON),
            status_code=self.status_code or status_code,
        )
