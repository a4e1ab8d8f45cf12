"""A tiny HTTP/1.1 server on loopback, run in a background thread, that fake upstreams build on.

Written on raw asyncio streams so faults can be injected at the byte level: a slow first byte, a
connection reset before any answer, a chunked body cut after N chunks (the socket closes without the
terminating chunk), and whatever malformed bytes a vendor fake puts in a frame. Keep-alive is
supported, so a provider that reuses its connection pool is seen doing so (``RecordedRequest.peer``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "FakeUpstream", "Frame", "RecordedRequest", "Reply"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 413: "Payload Too Large", 422: "Unprocessable Entity",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout", 529: "Site Overloaded"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: tuple[str, int]  # the client's address: the same port means the same (reused) connection

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    """What the fake does instead of (or on top of) its normal answer to one request."""

    status: int | None = None
    """Answer with this HTTP error status and the vendor's error body."""
    error_type: str | None = None
    """Vendor error type (OpenAI ``error.type``, Anthropic ``error.type``) instead of the status's usual one."""
    error_code: str | None = None
    """OpenAI ``error.code``."""
    message: str | None = None
    """Vendor error message instead of the status's usual one."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (``Retry-After``...)."""
    delay: float = 0.0
    """Seconds to wait before the first byte of the answer."""
    reset: bool = False
    """Reset the connection (RST) right after reading the request, answering nothing."""
    cut_after: int | None = None
    """Streams: close the socket after this many text chunks, without ending the chunked body."""
    malformed_after: int | None = None
    """Streams: send a chunk that is not valid JSON after this many text chunks."""
    error_event_after: int | None = None
    """Streams: send the vendor's in-stream error after this many text chunks, then end the stream."""
    first_text_delay: float = 0.0
    """Streams: send the preamble at once, then wait this long (sending keep-alives) before the first text."""
    chunk_delay: float = 0.0
    """Streams: seconds between text chunks."""
    truncate: bool = False
    """Streams: end the body cleanly but leave out the vendor's final events."""
    one_write: bool = False
    """Streams: send the whole body in one write, so the client reads many events at once (frame delays and
    ``cut_after`` do not apply)."""


@dataclass(frozen=True)
class Frame:
    """One chunk of a streamed body; ``text`` marks chunks that carry answer text (counted by faults)."""

    data: bytes
    text: bool = False
    delay: float = 0.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    frames: list[Frame] | None = None  # a chunked (streamed) body when set


class FakeUpstream:
    """Base of the vendor fakes: records requests, applies the queued ``Fault``s, serves the replies."""

    keepalive_frame: bytes | None = None  # what the vendor sends while it thinks (SSE comment, ping...)

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    # -------------------------------------------------------------- test-facing API

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, *faults: Fault) -> None:
        """Apply these faults to the next requests, one each, in order."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def reply(self, request: RecordedRequest, fault: Fault) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    # -------------------------------------------------------------- lifecycle

    def start(self) -> FakeUpstream:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    # -------------------------------------------------------------- protocol

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader, writer)
                if request is None:
                    return
                self.requests.append(request)
                with self._lock:
                    fault = self._faults.popleft() if self._faults else Fault()
                if not await self._answer(request, fault, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise AssertionError("the fakes expect request bodies with a Content-Length")
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return RecordedRequest(method, path, headers, body, writer.get_extra_info("peername")[:2])

    async def _answer(self, request: RecordedRequest, fault: Fault, writer: asyncio.StreamWriter) -> bool:
        """Write the reply; False when the connection was closed on purpose."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        reply = self.reply(request, fault)
        head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
        headers = {**reply.headers, **fault.headers}
        if reply.frames is None:
            headers["content-length"] = str(len(reply.body))
        else:
            headers["transfer-encoding"] = "chunked"
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()
        if reply.frames is None:
            return True
        if fault.one_write:
            writer.write(b"".join(b"%x\r\n%s\r\n" % (len(f.data), f.data) for f in reply.frames if f.data)
                         + b"0\r\n\r\n")
            await writer.drain()
            return True
        sent_text = 0
        for frame in reply.frames:
            if frame.text and fault.cut_after is not None and sent_text >= fault.cut_after:
                await self._flush(writer)
                writer.close()  # FIN without the terminating chunk: an incomplete body
                return False
            if frame.delay:
                await asyncio.sleep(frame.delay)
            if not frame.data:
                continue  # a zero-length chunk would end the body
            writer.write(b"%x\r\n%s\r\n" % (len(frame.data), frame.data))
            await writer.drain()
            sent_text += frame.text
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    async def _flush(writer: asyncio.StreamWriter) -> None:
        while writer.transport.get_write_buffer_size():
            await asyncio.sleep(0.001)

    # -------------------------------------------------------------- helpers for the vendor fakes

    def keepalives(self, seconds: float, every: float = 0.05) -> list[Frame]:
        """Frames sent while the fake 'thinks' for ``seconds`` (so only a first-token deadline fires)."""
        if seconds <= 0:
            return []
        count = max(1, int(seconds / every))
        data = self.keepalive_frame
        if data is None:
            return [Frame(b"", delay=seconds)]  # nothing to send: a quiet wait
        return [Frame(data, delay=every) for _ in range(count)]


def apply_stream_faults(fake: FakeUpstream, preamble: list[Frame], texts: list[Frame], closing: list[Frame],
                        fault: Fault, *, malformed: bytes, error_event: bytes | None) -> list[Frame]:
    """Assemble a streamed body: preamble, text chunks (with the fault's additions), closing frames."""
    frames = list(preamble) + fake.keepalives(fault.first_text_delay)
    for i, frame in enumerate(texts):
        if fault.malformed_after == i:
            return [*frames, Frame(malformed)]
        if fault.error_event_after == i and error_event is not None:
            return [*frames, Frame(error_event)]
        frames.append(Frame(frame.data, text=True, delay=fault.chunk_delay if i else 0.0))
    if fault.malformed_after is not None and fault.malformed_after >= len(texts):
        return [*frames, Frame(malformed)]
    if fault.error_event_after is not None and fault.error_event_after >= len(texts) and error_event is not None:
        return [*frames, Frame(error_event)]
    return frames if fault.truncate else frames + closing
