"""The serving protocol (``HeadWithBodyProtocol``) on real sockets under uvicorn: a response's head and body reach
the socket in one write; a head with nothing after it yet (a stream's, a HEAD answer's, ``100 Continue``) still
goes out at once; bytes keep their order on a kept-alive connection; a WebSocket upgrade still works."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from rhetor.server.http_protocol import HeadWithBodyProtocol


class SocketLog:
    """What the protocol handed to each connection's socket transport, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []


class _Recording:
    def __init__(self, raw: asyncio.Transport, log: SocketLog) -> None:
        self._raw, self._log = raw, log

    def write(self, data: bytes) -> None:
        self._log.calls.append(("write", bytes(data)))
        self._raw.write(data)

    def writelines(self, parts: Any) -> None:
        parts = [bytes(p) for p in parts]
        self._log.calls.append(("writelines", b"".join(parts)))
        self._raw.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def recording_protocol(log: SocketLog) -> type[HeadWithBodyProtocol]:
    class Recording(HeadWithBodyProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_Recording(transport, log))  # type: ignore[arg-type]

    return Recording


BODY = json.dumps({"message": "x" * 1500}).encode()


def make_app(stream_gate: asyncio.Event) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            msg = await receive()
            await send({"type": "websocket.send", "text": "echo:" + msg["text"]})
            await send({"type": "websocket.close"})
            return
        await receive()
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await stream_gate.wait()  # the client opens the gate only once it holds the head
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})

    return app


@contextlib.asynccontextmanager
async def served(log: SocketLog, gate: asyncio.Event) -> AsyncIterator[int]:
    config = uvicorn.Config(make_app(gate), host="127.0.0.1", port=0, log_level="warning", access_log=False,
                            http=recording_protocol(log), lifespan="on",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        assert not task.done(), task.exception() if task.done() else None
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def connected(log: SocketLog, gate: asyncio.Event | None = None
                    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw client connection to the served app."""
    async with served(log, gate or asyncio.Event()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


POST = b"POST /message HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"


async def expect_answer(reader: asyncio.StreamReader) -> None:
    """The next response on the connection is the app's JSON answer, whole."""
    head, body = await asyncio.wait_for(read_response(reader), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == BODY


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await read_head(reader)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


async def test_a_json_answer_reaches_the_socket_in_one_write_with_its_head() -> None:
    log = SocketLog()
    async with connected(log) as (reader, writer):
        for _ in range(2):  # kept alive: the second answer follows the first, whole and in order
            writer.write(POST)
            await expect_answer(reader)
    answers = [(kind, data) for kind, data in log.calls if data.startswith(b"HTTP/")]
    assert len(answers) == 2
    for kind, data in answers:
        assert kind == "writelines"
        assert data.endswith(BODY)  # the head and the whole body, in one call
    assert not [data for kind, data in log.calls if data == BODY]  # never a body on its own


async def test_a_head_with_no_body_yet_goes_out_before_the_first_chunk() -> None:
    log, gate = SocketLog(), asyncio.Event()
    async with connected(log, gate) as (reader, writer):
        writer.write(b"POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        # the app sends its first chunk only after this: a head held for its body would never arrive
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        gate.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert b"data: one\n\n" in rest
    assert log.calls[0] == ("write", head)


async def test_a_head_request_gets_its_head() -> None:
    async with connected(SocketLog()) as (reader, writer):
        writer.write(b"HEAD /message HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and f"content-length: {len(BODY)}".encode() in head
        writer.write(POST)  # and the next request is answered
        await expect_answer(reader)


async def test_a_websocket_upgrade_still_works() -> None:
    import websockets  # noqa: PLC0415 - uvicorn's WebSocket implementation, installed with it

    log = SocketLog()
    async with served(log, asyncio.Event()) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 5) == "echo:hi"


async def test_100_continue_goes_out_while_the_app_waits_for_the_body() -> None:
    async with connected(SocketLog()) as (reader, writer):
        writer.write(b"POST /message HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        # the client sends its body only once told to: a held "100 Continue" would leave both sides waiting
        interim = await read_head(reader)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        await expect_answer(reader)
