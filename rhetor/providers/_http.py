"""Rhetor's HTTP/1.1 transport under the vendor SDKs: asyncio protocol, ``httptools`` parser, keep-alive pool.

The OpenAI and Anthropic SDKs send every request through an ``httpx2.AsyncClient``; its transport is the one
part of the stack that does not need to be general. The SDKs' aiohttp transport (``DefaultAioHttpClient``) spends
about 0.25 ms of CPU per call in aiohttp's session, connector and response machinery; this one writes the request
httpx2 built as it is and parses the answer with ``httptools`` (the parser uvicorn serves Rhetor with).

What it does:

* **Pool.** Keep-alive connections per origin (scheme, host, port, SNI name), reused last-in first-out; at most
  ``max_connections`` open at once (the SDK's limits), waiting up to ``timeout["pool"]`` for a free one
  (``httpx2.PoolTimeout``); at most ``max_keepalive_connections`` idle, each for ``keepalive_expiry`` seconds.
  A connection goes back to the pool only once its answer was read whole and both sides keep it alive; an
  answer closed early, a cancelled read or any error closes it.
* **TCP keepalive** probes on every connection (60 s idle, every 60 s, 5 probes), as the Anthropic SDK sets them.
* **TLS** for ``https`` with httpx2's own default context (certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR``), as the
  aiohttp transport did; the SNI name is the host or the request's ``sni_hostname`` extension.
* **Timeouts** from the request's ``timeout`` extension (the SDK's ``httpx2.Timeout``): ``connect``
  (``httpx2.ConnectTimeout``), ``read`` for each wait for the head or the next bytes of the body
  (``httpx2.ReadTimeout``), ``pool``. Rhetor's own first-token and total deadlines are enforced above the SDK.
* **Bodies** stream both ways: a request body httpx2 did not read goes out as it is iterated (chunked when httpx2
  said so), and the answer's body is handed to httpx2 as it arrives, everything received by then in one piece
  (so an SSE stream is relayed a network read at a time). Reading pauses above 256 KiB not yet taken.
  Content-Encoding is left to httpx2's response, as with every httpx2 transport.
* **Errors** are httpx2's transport errors, which the SDKs map (``APIConnectionError``, ``APITimeoutError``) and
  retry: ``ConnectError`` (refused, DNS, TLS), ``ReadError`` (reset), ``RemoteProtocolError`` (closed before a
  complete answer, an answer that does not parse), ``WriteError``.

Env proxies (``HTTPS_PROXY``...) are honoured by httpx2: ``client()`` installs this transport the way the SDK's
aiohttp client does (``_init_transport``), so httpx2 still mounts its own proxy transport for proxied URLs.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx2

from rhetor.providers import _send
from rhetor.providers._common import kept_url

__all__ = ["Transport", "client"]

_PAUSE_ABOVE = 256 * 1024  # bytes of an answer received and not yet taken before reading pauses
# TCP keepalive probes after 60 s idle, every 60 s, 5 unanswered = dead (the Anthropic SDK's own settings): a long
# answer behind a NAT or a load balancer that drops silent flows is noticed, not waited on until the deadline
_KEEPALIVE = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), *(
    (socket.IPPROTO_TCP, option, value)
    for option, value in ((getattr(socket, "TCP_KEEPIDLE", None), 60), (getattr(socket, "TCP_KEEPINTVL", None), 60),
                          (getattr(socket, "TCP_KEEPCNT", None), 5))
    if option is not None
))
_Origin = tuple[bytes, bytes, int, str | None]


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout("timed out waiting for the server's answer"))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses its answer, wakes the reader as bytes arrive."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.reason = b""
        self.head_done = False
        self.until_close = False  # a body that ends when the server closes the connection
        self.complete = False
        self.keep_alive = False
        self.error: httpx2.TransportError | None = None
        self.body: list[bytes] = []
        self._buffered = 0
        self._paused = False

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx2.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx2.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: this side has nothing more to say either

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.until_close and not self.complete:
            self.complete = True  # the close is the end of this body (never reused: keep-alive is off)
        if not self.complete and self.error is None:
            if exc is not None:
                self.error = httpx2.ReadError(f"connection lost: {exc!r}")
            elif self.head_done:
                self.error = httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
            else:
                self.error = httpx2.RemoteProtocolError("Server disconnected without sending a response.")
        self._wake()

    # ---------------------------------------------------------------- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self.status = status
        self.head_done = True
        names = {name.lower() for name, _ in self.headers}
        self.until_close = status not in (204, 304) and not names & {b"content-length", b"transfer-encoding"}

    def _interim_done(self) -> bool:
        """After an interim answer, start over for the real one on the same parser."""
        if self.head_done:
            return False
        self.headers, self.reason = [], b""
        return True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_ABOVE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if not self._interim_done():
            self.keep_alive = self._parser.should_keep_alive()  # asked here: after the message it reads False
            self.complete = True

    # ---------------------------------------------------------------- for the transport and the body stream
    def _fail(self, error: httpx2.TransportError) -> None:
        if self.error is None:
            self.error = error
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until more of the answer (or an error, or the end) arrives; ``ReadTimeout`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _time_out, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        """The body bytes received and not yet taken, in one piece; reading resumes if it was paused."""
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def begin(self) -> None:
        """Ready for the next request on this (kept-alive) connection."""
        self._reset()
        self._parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx2.AsyncByteStream):
    """An answer's body as it arrives; the connection goes back to the pool once it was read whole."""

    def __init__(self, pool: Transport, conn: _Connection, read_timeout: float | None) -> None:
        self._pool, self._conn, self._read_timeout = pool, conn, read_timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while not self._done:
                if conn.body:
                    yield conn.take()
                elif conn.complete:
                    self._finish()
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait(self._read_timeout)
        except BaseException:
            self._finish(abort=True)
            raise

    def _finish(self, *, abort: bool = False) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._conn, reuse=not abort and not self._conn.body)  # release checks the rest

    async def aclose(self) -> None:
        self._finish()  # reused only when the answer came whole (``reusable``)


class Transport(httpx2.AsyncBaseTransport):
    """The pool of keep-alive HTTP/1.1 connections (see the module's docstring)."""

    def __init__(self, *, limits: httpx2.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = limits.max_connections
        self._keep = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open = 0  # connections open or being opened, idle ones included
        self._idle_count = 0
        self._waiters: collections.deque[tuple[_Origin, asyncio.Future[_Connection | None]]] = collections.deque()
        self._closed = False

    # ---------------------------------------------------------------- httpx2.AsyncBaseTransport
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise httpx2.ConnectError("the transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        timeout = request.extensions.get("timeout") or {}
        sni = request.extensions.get("sni_hostname")
        port = url.port or (443 if scheme == b"https" else 80)
        origin: _Origin = (scheme, url.raw_host, port, sni)
        conn = await self._acquire(origin, timeout)
        try:
            await self._send(conn, request)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(timeout.get("read"))
        except BaseException:
            self.release(conn, reuse=False)
            raise
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if conn.reason:
            extensions["reason_phrase"] = conn.reason
        return httpx2.Response(status_code=conn.status, headers=conn.headers, request=request,
                               stream=_Body(self, conn, timeout.get("read")), extensions=extensions)

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._open -= self._idle_count
        self._idle_count = 0
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(httpx2.ConnectError("the transport is closed"))

    # ---------------------------------------------------------------- the pool
    async def _acquire(self, origin: _Origin, timeout: dict[str, float | None]) -> _Connection:
        """A kept-alive connection to ``origin``, else a new one once a slot is free."""
        idle = self._idle.get(origin)
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                conn = idle.pop()
                self._idle_count -= 1
                if not conn.closed and (self._expiry is None or now - conn.idle_since < self._expiry):
                    conn.begin()
                    return conn
                self._discard(conn)
        if self._limit is None or self._open < self._limit:
            self._open += 1
        elif self._idle_count:  # full, but idle connections to other origins: the longest idle makes room
            self._idle_count -= 1
            next(conns for conns in self._idle.values() if conns).pop(0).close()  # its slot passes to us
        else:
            handed = await self._wait(origin, timeout.get("pool"))
            if handed is not None:
                handed.begin()
                return handed
        try:
            return await self._connect(origin, timeout.get("connect"))
        except BaseException:
            self._free_slot()
            raise

    async def _wait(self, origin: _Origin, pool_timeout: float | None) -> _Connection | None:
        """Wait for a connection to ``origin`` released by another request, or for a free slot (None)."""
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        entry = (origin, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(pool_timeout):
                return await waiter
        except TimeoutError:
            raise httpx2.PoolTimeout("no connection came free within the pool timeout") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as we gave up: pass it on
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed, reuse=True)
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _free_slot(self) -> None:
        """A connection closed: its slot goes to the first request waiting, else back to the pool."""
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._open -= 1

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._free_slot()

    def release(self, conn: _Connection, *, reuse: bool) -> None:
        """After an answer: to a request waiting for this origin, else to the idle pool when it can take
        another request; closed otherwise (its slot to a request waiting for another origin)."""
        if not (reuse and not self._closed and conn.reusable()):
            self._discard(conn)
            return
        for entry in self._waiters:
            origin, waiter = entry
            if origin == conn.origin and not waiter.done():
                self._waiters.remove(entry)
                waiter.set_result(conn)
                return
        if any(not waiter.done() for _, waiter in self._waiters) or (
                self._keep is not None and self._idle_count >= self._keep):
            self._discard(conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._idle_count += 1

    async def _connect(self, origin: _Origin, connect_timeout: float | None) -> _Connection:
        scheme, host, port, sni = origin
        hostname = host.decode("ascii")
        tls = scheme == b"https"
        conn = _Connection(origin)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(lambda: conn, hostname, port,
                                             ssl=self._ssl_context if tls else None,
                                             server_hostname=(sni or hostname) if tls else None)
        except TimeoutError:
            conn.close()
            raise httpx2.ConnectTimeout(f"no connection to {hostname}:{port} within the connect timeout") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (ssl.SSLError)
            conn.close()
            raise httpx2.ConnectError(f"cannot connect to {hostname}:{port}: {exc}") from exc
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            for level, option, value in _KEEPALIVE:
                sock.setsockopt(level, option, value)
        return conn

    @staticmethod
    async def _send(conn: _Connection, request: httpx2.Request) -> None:
        transport = conn.transport
        if transport is None or conn.closed:
            raise httpx2.WriteError("the connection closed before the request was sent")
        url = request.url
        target = url.raw_path
        head = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        try:
            content = request.content
        except httpx2.RequestNotRead:
            transport.write(b"".join(head))
            chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
            async for part in request.stream:  # type: ignore[union-attr]
                if conn.closed:
                    break
                if part:
                    transport.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
            if chunked and not conn.closed:
                transport.write(b"0\r\n\r\n")
        else:
            head.append(content)
            transport.write(b"".join(head))


def client(sdk: Any, timeout: Any) -> Any:
    """The SDK's ``DefaultAsyncHttpxClient`` (its limits, timeouts, redirects and proxy mounts) on this transport.

    The transport is installed where httpx2 makes its default one (``_init_transport``, as the SDKs' aiohttp
    clients do), so the proxies stay as the SDK and httpx2 set them up: the OpenAI SDK lets httpx2 mount the
    environment's proxies; the Anthropic SDK mounts them itself and hands httpx2 a default transport, made only
    so that httpx2 does not mount them again, which this replaces.
    """

    class RhetorHttpClient(sdk.DefaultAsyncHttpxClient):  # type: ignore[name-defined,misc]
        _rhetor_url: tuple[str, httpx2.URL] | None = None
        _rhetor_headers: tuple[list[Any], list[Any], httpx2.Headers] | None = None

        def _merge_url(self, url: httpx2.URL | str) -> httpx2.URL:
            """The OpenAI SDK hands httpx2 the URL it just parsed as a string, parsed here again on every request:
            the endpoint's parse is kept (``kept_url``)."""
            merged: httpx2.URL = kept_url(self, url, super()._merge_url)
            return merged

        def _merge_headers(self, headers: Any = None) -> Any:
            """The client's headers updated with the request's: a function of the two alone, which the SDKs call
            with the same headers (those of one endpoint's requests, a list from the OpenAI SDK, ``Headers`` from
            the Anthropic SDK) every time. The last merge is kept with copies of both inputs, compared item by item
            in order, and handed out as a copy: ``Headers(...)`` and ``update`` normalise and encode every header
            again, and the request reads the fresh object's encoding (~25 µs a request)."""
            given = headers._list if isinstance(headers, httpx2.Headers) else headers
            if not isinstance(given, list):
                merged: httpx2.Headers = super()._merge_headers(headers)
                return merged
            ours = self._headers._list
            memo = self._rhetor_headers
            if memo is not None and memo[0] == given and memo[1] == ours:
                return memo[2].copy()
            merged = super()._merge_headers(headers)
            self._rhetor_headers = (list(given), list(ours), merged.copy())
            return merged

        async def send(self, request: httpx2.Request, *, stream: bool = False, auth: Any = httpx2.USE_CLIENT_DEFAULT,
                       follow_redirects: Any = httpx2.USE_CLIENT_DEFAULT) -> httpx2.Response:
            """httpx2's ``send`` without the layers that do nothing for the SDK's requests (``_send``)."""
            if _send.stock_only(self, request, auth):
                response: httpx2.Response = await super().send(request, stream=stream, auth=auth,
                                                               follow_redirects=follow_redirects)
                return response
            return await _send.send(self, request, stream=stream, follow_redirects=follow_redirects)

        def _init_transport(self, *, verify: Any = True, cert: Any = None, trust_env: bool = True,
                            limits: httpx2.Limits, **_: Any) -> Any:
            return Transport(limits=limits,
                             ssl_context=httpx2.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env))

    return RhetorHttpClient(timeout=timeout)
