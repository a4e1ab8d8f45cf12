"""Rhetor's HTTP/1.1 transport (``rhetor.providers._http``) through a real ``httpx2.AsyncClient``, against
scripted raw-asyncio servers on loopback: each test says byte for byte what the server answers.

Covered: keep-alive reuse and when a connection must not be reused (closed by the server while idle,
``Connection: close``, expired, an answer closed early, a cancelled request), bodies delimited by length, by
chunks and by the close, interim 1xx answers, compressed answers handed to httpx2 raw, chunks handed over as they
arrive, a large body read with pauses, a streamed request body, the pool's limit and its timeout, every transport
failure as the httpx2 error the SDKs map (refused, TLS, timeouts, closes and resets before and during the body, an
answer that does not parse), TLS with SNI, and the environment's proxy honoured through the SDK client
``_http.client`` builds.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from rhetor.providers import _http
from tests.fakes.harness import free_port

pytestmark = pytest.mark.asyncio

Script = Callable[["Conn"], Awaitable[None]]
Request = tuple[bytes, dict[bytes, bytes], bytes]  # a request's line, headers (lower-cased names) and body
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


@dataclass
class Conn:
    """One accepted connection, as the script sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    index: int  # the how-manieth connection the server accepted (0-based)

    async def request(self) -> Request | None:
        """The next request's line, headers (lower-cased names) and body (by length or chunked); None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        line, *lines = head[:-4].split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(b":", 1) for h in lines)}
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readexactly(2)
        else:
            body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return line, headers, body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@dataclass
class Server:
    script: Script
    ssl_context: ssl.SSLContext | None = None
    accepted: int = 0
    open_now: int = 0
    most_open: int = 0
    lines: list[bytes] = field(default_factory=list)
    closed_by_client: int = 0
    url: str = ""
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(reader, writer, self.accepted)
        self.accepted += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.script(conn)
            if await reader.read() == b"":
                self.closed_by_client += 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open_now -= 1
            self._tasks.discard(task)
            writer.close()


def serve_each(answer: bytes, *, record: list[bytes] | None = None) -> Script:
    """A script answering every request on a connection with ``answer`` (keep-alive)."""
    async def script(conn: Conn) -> None:
        while (req := await conn.request()) is not None:
            if record is not None:
                record.append(req[2])
            await conn.send(answer)
    return script


def serve_recording(seen: list[Request]) -> Script:
    """A script answering every request on a connection with ``OK``, keeping each request in ``seen``."""
    async def script(conn: Conn) -> None:
        while (req := await conn.request()) is not None:
            seen.append(req)
            await conn.send(OK)
    return script


def answer_then(answer: bytes, how: str) -> Script:
    """A script sending ``answer`` to the first request, then, 20 ms later, resetting the connection (``reset``),
    closing it (``close``) or waiting for the client to close it (``wait``)."""
    async def broken(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer)
        await asyncio.sleep(0.02)
        if how == "reset":
            conn.reset()
        elif how == "close":
            conn.writer.close()
        else:
            await conn.reader.read()
    return broken


def client(**limits: float | None) -> httpx2.AsyncClient:
    transport = _http.Transport(limits=httpx2.Limits(**{"max_connections": 10, **limits}))  # type: ignore[arg-type]
    return httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(2.0))


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 2 s")


# ------------------------------------------------------------------ keep-alive and when not to reuse


async def test_keep_alive_reuses_one_connection_and_aclose_closes_it() -> None:
    bodies: list[bytes] = []
    async with Server(serve_each(OK, record=bodies)) as server:
        http = client(keepalive_expiry=None)  # None: idle connections never expire
        for i in range(3):
            response = await http.post(server.url + "/v1/x?q=1", content=b"body-%d" % i)
            assert (response.status_code, response.json(), response.reason_phrase) == (200, {"ok": True}, "OK")
            assert response.http_version == "HTTP/1.1"
        assert server.accepted == 1 and bodies == [b"body-0", b"body-1", b"body-2"]
        (conn,) = http._transport._idle[(b"http", b"127.0.0.1", int(server.url.rsplit(":", 1)[1]), None)]
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        await http.aclose()
        await eventually(lambda: server.closed_by_client == 1)


async def test_the_request_goes_out_as_httpx2_built_it() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes]]] = []

    async def script(conn: Conn) -> None:
        req = await conn.request()
        assert req is not None
        seen.append((req[0], req[1]))
        await conn.send(OK)

    async with Server(script) as server:
        async with client() as http:
            await http.post(server.url + "/a%20b/c?x=1&y=%2F", json={"k": "v"}, headers={"X-Api-Key": "k1"})
    line, headers = seen[0]
    assert line == b"POST /a%20b/c?x=1&y=%2F HTTP/1.1"
    assert headers[b"host"] == server.url.removeprefix("http://").encode()
    assert headers[b"x-api-key"] == b"k1" and headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == b"9"


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def answer_once_then_close(conn: Conn) -> None:
        await conn.request()
        await conn.send(OK)
        conn.writer.close()

    async with Server(answer_once_then_close) as server:
        async with client() as http:
            assert (await http.post(server.url, content=b"1")).status_code == 200
            await asyncio.sleep(0.05)  # the server's FIN reaches the idle connection
            assert (await http.post(server.url, content=b"2")).status_code == 200
    assert server.accepted == 2


async def test_an_answer_saying_connection_close_is_not_reused() -> None:
    closing = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    async with Server(serve_each(closing)) as server:  # the server would keep it open: the client must not
        async with client() as http:
            for _ in range(2):
                assert (await http.post(server.url, content=b"x")).json() == {"ok": True}
    assert server.accepted == 2


async def test_an_idle_connection_past_its_keepalive_expiry_is_replaced() -> None:
    async with Server(serve_each(OK)) as server:
        async with client(keepalive_expiry=0.05) as http:
            await http.post(server.url, content=b"1")
            await http.post(server.url, content=b"2")
            assert server.accepted == 1
            await asyncio.sleep(0.1)
            await http.post(server.url, content=b"3")
            assert server.accepted == 2
            await eventually(lambda: server.closed_by_client == 1)  # the expired one was closed


async def test_an_answer_closed_early_closes_its_connection() -> None:
    async def endless(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            while True:  # never ends the body; the client gives up on it
                await conn.reader.readexactly(1)

    async with Server(endless) as server:
        async with client() as http:
            async with http.stream("POST", server.url, content=b"x") as response:
                async for chunk in response.aiter_bytes():
                    assert chunk == b"first"
                    break
            await eventually(lambda: server.open_now == 0)
            transport = http._transport
            assert isinstance(transport, _http.Transport) and transport._open == 0 and not transport._idle_count


async def test_a_cancelled_request_frees_its_connection_slot() -> None:
    async def silent_first(conn: Conn) -> None:
        await conn.request()
        if conn.index == 0:
            await conn.reader.read()  # never answers; the client gives up
            return
        await conn.send(OK)

    async with Server(silent_first) as server:
        async with client(max_connections=1) as http:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await http.post(server.url, content=b"x")
            assert (await http.post(server.url, content=b"y")).status_code == 200
            await eventually(lambda: server.accepted == 2 and server.open_now == 1)


# ------------------------------------------------------------------ bodies


async def test_a_body_delimited_by_the_close_is_read_whole() -> None:
    async def until_close(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
        await asyncio.sleep(0.02)
        await conn.send(b"data: 2\n\n")
        conn.writer.close()

    async with Server(until_close) as server:
        async with client() as http:
            response = await http.post(server.url, content=b"x")
            assert response.content == b"data: 1\n\ndata: 2\n\n"
            assert (await http.post(server.url, content=b"again")).content == b"data: 1\n\ndata: 2\n\n"
    assert server.accepted == 2


async def test_interim_answers_are_skipped() -> None:
    async with Server(serve_each(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                 + OK)) as server:
        async with client() as http:
            for _ in range(2):
                response = await http.post(server.url, content=b"x")
                assert response.status_code == 200 and response.json() == {"ok": True}
                assert "link" not in response.headers
    assert server.accepted == 1


async def test_chunks_are_handed_over_as_they_arrive() -> None:
    taken = asyncio.Event()

    async def paced(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await asyncio.wait_for(taken.wait(), 2)  # the client has the first chunk before the second is sent
        await conn.send(b"6\r\nsecond\r\n0\r\n\r\n")

    async with Server(paced) as server:
        async with client() as http:
            async with http.stream("POST", server.url, content=b"x") as response:
                chunks = []
                async for chunk in response.aiter_raw():
                    chunks.append(chunk)
                    taken.set()
    assert chunks == [b"first", b"second"]


async def test_a_large_body_read_slowly_arrives_intact() -> None:
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB: reading pauses and resumes many times

    async def big(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)

    async with Server(big) as server:
        async with client() as http:
            got = bytearray()
            async with http.stream("POST", server.url, content=b"x") as response:
                async for chunk in response.aiter_raw():
                    got += chunk
                    await asyncio.sleep(0.002)
            assert bytes(got) == payload
            assert (await http.post(server.url, content=b"y")).content == payload  # and the connection is reusable
    assert server.accepted == 1


async def test_a_streamed_request_body_goes_out_chunked() -> None:
    bodies: list[bytes] = []

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"", b"streamed ", b"world"):
            yield part

    async with Server(serve_each(OK, record=bodies)) as server:
        async with client() as http:
            assert (await http.post(server.url, content=parts())).status_code == 200
    assert bodies == [b"hello streamed world"]


async def test_a_compressed_answer_is_handed_over_raw_and_decoded_by_httpx2() -> None:
    body = gzip.compress(b'{"ok":true,"text":"' + b"x" * 5000 + b'"}')
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with Server(serve_each(answer)) as server:
        async with client() as http:
            response = await http.post(server.url, content=b"x")
            assert response.json() == {"ok": True, "text": "x" * 5000}
            async with http.stream("POST", server.url, content=b"x") as raw:
                assert b"".join([chunk async for chunk in raw.aiter_raw()]) == body  # as it came: httpx2 decodes
    assert server.accepted == 1


# ------------------------------------------------------------------ the pool's limit


async def test_the_pool_opens_at_most_max_connections() -> None:
    async def slow(conn: Conn) -> None:
        while await conn.request() is not None:
            await asyncio.sleep(0.05)
            await conn.send(OK)

    async with Server(slow) as server:
        async with client(max_connections=2) as http:
            answers = await asyncio.gather(*(http.post(server.url, content=b"x") for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert server.most_open == 2 and server.accepted == 2


async def test_waiting_longer_than_the_pool_timeout_is_a_pool_timeout() -> None:
    async with Server(serve_each(OK)) as server:
        transport = _http.Transport(limits=httpx2.Limits(max_connections=1))
        async with httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(2.0, pool=0.1)) as http:
            async with http.stream("POST", server.url, content=b"x"):  # holds the only connection
                with pytest.raises(httpx2.PoolTimeout):
                    await http.post(server.url, content=b"y")
            assert (await http.post(server.url, content=b"z")).status_code == 200


# ------------------------------------------------------------------ failures, as httpx2's errors


async def test_refused_is_a_connect_error() -> None:
    async with client() as http:
        with pytest.raises(httpx2.ConnectError, match="cannot connect"):
            await http.post(f"http://127.0.0.1:{free_port()}", content=b"x")
        assert http._transport._open == 0  # type: ignore[attr-defined]


async def test_no_head_within_the_read_timeout_is_a_read_timeout() -> None:
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.reader.read()

    async with Server(silent) as server:
        async with httpx2.AsyncClient(transport=_http.Transport(limits=httpx2.Limits()),
                                      timeout=httpx2.Timeout(2.0, read=0.1)) as http:
            with pytest.raises(httpx2.ReadTimeout):
                await http.post(server.url, content=b"x")


async def test_a_stalled_body_is_a_read_timeout() -> None:
    async def stall(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await conn.reader.read()

    async with Server(stall) as server:
        async with httpx2.AsyncClient(transport=_http.Transport(limits=httpx2.Limits()),
                                      timeout=httpx2.Timeout(2.0, read=0.1)) as http:
            async with http.stream("POST", server.url, content=b"x") as response:
                with pytest.raises(httpx2.ReadTimeout):
                    await response.aread()


@pytest.mark.parametrize(("answer", "how", "error", "message"), [
    (b"", "close", httpx2.RemoteProtocolError, "without sending a response"),
    (b"", "reset", httpx2.ReadError, "connection lost"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "close", httpx2.RemoteProtocolError,
     "without sending complete message body"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "close", httpx2.RemoteProtocolError,
     "without sending complete message body"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "reset", httpx2.ReadError, "connection lost"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "wait", httpx2.RemoteProtocolError, "malformed HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", "wait",
     httpx2.RemoteProtocolError, "malformed HTTP answer"),
], ids=["closed-before", "reset-before", "closed-mid-length", "closed-mid-chunks", "reset-mid-body", "bad-status",
        "length-and-chunked"])
async def test_a_broken_answer_is_the_httpx2_error_the_sdks_map(answer: bytes, how: str, error: type[Exception],
                                                                message: str) -> None:
    async with Server(answer_then(answer, how)) as server:
        async with client() as http:
            with pytest.raises(error, match=message):
                await http.post(server.url, content=b"x")
            assert http._transport._open == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------ TLS and proxies


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``rhetor-test.example`` (and 127.0.0.1), made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=rhetor-test.example", "-addext", "subjectAltName=DNS:rhetor-test.example,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_with_a_trusted_certificate_and_sni(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    async with Server(serve_each(OK), ssl_context=server_ctx) as server:
        transport = _http.Transport(limits=httpx2.Limits(), ssl_context=ssl.create_default_context(cafile=cert))
        async with httpx2.AsyncClient(transport=transport, timeout=2.0) as http:
            assert (await http.post(server.url, content=b"x")).json() == {"ok": True}
            response = await http.post(server.url, content=b"y", extensions={"sni_hostname": "rhetor-test.example"})
            assert response.status_code == 200
    assert names == [None, "rhetor-test.example"]  # no SNI for an IP address; the extension's name otherwise
    assert server.accepted == 2  # another SNI name is another origin


async def test_https_with_an_untrusted_certificate_is_a_connect_error(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with Server(serve_each(OK), ssl_context=server_ctx) as server:
        async with client() as http:  # the default context: the system's and certifi's authorities only
            http._transport._ssl_context = httpx2.create_ssl_context()  # type: ignore[attr-defined]
            with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.post(server.url, content=b"x")


async def test_a_tls_handshake_that_never_completes_is_a_connect_timeout() -> None:
    async def mute(conn: Conn) -> None:
        await conn.reader.read()

    async with Server(mute) as server:
        transport = _http.Transport(limits=httpx2.Limits(), ssl_context=httpx2.create_ssl_context())
        async with httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(2.0, connect=0.1)) as http:
            with pytest.raises(httpx2.ConnectTimeout):
                await http.post(server.url.replace("http://", "https://"), content=b"x")
            assert transport._open == 0


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
async def test_the_sdk_client_uses_this_transport_and_honours_the_environments_proxy(
        sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Request] = []
    async with Server(serve_recording(seen)) as server:
        direct = _http.client(sdk, httpx2.Timeout(2.0))
        assert isinstance(direct._transport, _http.Transport)
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.setenv("NO_PROXY", "localhost")
        proxied = _http.client(sdk, httpx2.Timeout(2.0))
        try:
            assert isinstance(proxied._transport, _http.Transport)
            answer = await proxied.post("http://api.example.invalid/v1/chat/completions", content=b"{}")
            assert answer.json() == {"ok": True}
            assert [r[0] for r in seen] == [b"POST http://api.example.invalid/v1/chat/completions HTTP/1.1"]  # proxy
            assert proxied._transport_for_url(httpx2.URL("http://localhost:1/")) is proxied._transport
        finally:
            await proxied.aclose()
            await direct.aclose()
