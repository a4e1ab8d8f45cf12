"""``_send``: the SDK client's ``send`` without httpx2's general layers answers exactly as httpx2's own ``send``.

Each case sends the same request through ``_http.client``'s client both ways, against the same scripted loopback
server: ``client.send`` (the lean way) and ``httpx2.AsyncClient.send`` called on a twin client (the stock way).
The responses are compared field by field (status, headers, content, the read/closed state, bytes downloaded,
elapsed, history, the redirect's next request, the cookie jar), and so are the errors (type, message, the request
they name, the pool left empty). A client with auth, event hooks or a mounted proxy, and a URL with credentials,
go the stock way; the plain client does not.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from rhetor.providers import _http
from tests.fakes.harness import free_port
from tests.providers.test_http_transport import OK, Conn, Request, Server, answer_then, serve_each, serve_recording

pytestmark = pytest.mark.asyncio

SDKS = pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
Send = Callable[..., Any]


def _lean(client: Any) -> Send:
    return client.send


def _stock(client: Any) -> Send:
    return lambda request, **kw: httpx2.AsyncClient.send(client, request, **kw)


@asynccontextmanager
async def clients(sdk: Any) -> AsyncIterator[dict[str, tuple[Any, Send]]]:
    """Two clients as ``_http.client`` makes them, one sending the lean way and one the stock way."""
    made = {way: _http.client(sdk, httpx2.Timeout(2.0)) for way in ("lean", "stock")}
    try:
        yield {"lean": (made["lean"], _lean(made["lean"])), "stock": (made["stock"], _stock(made["stock"]))}
    finally:
        for client in made.values():
            await client.aclose()


def view(response: httpx2.Response, request: httpx2.Request) -> dict[str, Any]:
    """Everything a caller of ``send`` can see of a response (its content only once read)."""
    read = hasattr(response, "_content")
    return {
        "status": response.status_code, "headers": response.headers.raw, "http_version": response.http_version,
        "reason": response.reason_phrase, "content": response.content if read else None, "read": read,
        "closed": response.is_closed, "consumed": response.is_stream_consumed,
        "downloaded": response.num_bytes_downloaded if read else None,
        "elapsed": type(response.elapsed) if response.is_closed else None,
        "request_is_sent": response.request is request, "url": str(response.url),
        "history": [(r.status_code, str(r.url), r.is_closed) for r in response.history],
        "next_request": None if response.next_request is None else str(response.next_request.url),
        "default_encoding": response.default_encoding, "encoding": response.encoding,
    }


async def both(sdk: Any, script: Callable[[Conn], Any], *, path: str = "/v1/x", stream: bool = False,
               default_encoding: str | None = None, **send: Any) -> dict[str, Any]:
    """The views of the lean and the stock response, and each client's cookie jar and pool afterwards."""
    out: dict[str, Any] = {}
    async with Server(script) as server, clients(sdk) as made:
        for way, (client, do) in made.items():
            if default_encoding:
                client._default_encoding = default_encoding
            request = client.build_request("POST", server.url + path, content=b'{"q":1}')
            response = await do(request, stream=stream, **send)
            seen = view(response, request)
            if stream:
                seen["streamed"] = b"".join([part async for part in response.aiter_bytes()])
                seen["after_stream"] = view(response, request)
            with pytest.raises(httpx2.StreamConsumed):
                async for _ in response.aiter_raw():
                    pass
            out[way] = {"response": seen, "cookies": dict(client.cookies),
                        "pool_open": client._transport._open, "pool_idle": client._transport._idle_count}
        out["accepted"] = server.accepted
    return out


def answer(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


GZIPPED = gzip.compress(b'{"ok":"compressed"}')
CASES = {
    "json": serve_each(OK),
    "empty-204": serve_each(answer("HTTP/1.1 204 No Content\n")),
    "error-status": serve_each(answer("HTTP/1.1 429 Too Many Requests\nContent-Type: application/json\n"
                                      "Content-Length: 22\nRetry-After: 1\n", b'{"error":"rate_limit"}')),
    "set-cookie": serve_each(answer("HTTP/1.1 200 OK\nSet-Cookie: __cf_bm=abc; Path=/; HttpOnly\n"
                                    "Set-Cookie: _cfuvid=xyz; Path=/\nContent-Length: 2\n", b"{}")),
    "gzip": serve_each(answer(f"HTTP/1.1 200 OK\nContent-Encoding: gzip\nContent-Length: {len(GZIPPED)}\n",
                              GZIPPED)),
    "charset": serve_each(answer("HTTP/1.1 200 OK\nContent-Type: text/plain; charset=latin-1\n"
                                 "Content-Length: 3\n", "é!?".encode("latin-1"))),
}


async def _in_pieces(conn: Conn) -> None:
    """A chunked body in three pieces, 20 ms apart."""
    while await conn.request() is not None:
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b'{"a":', b'"long",', b'"b":2}'):
            await asyncio.sleep(0.02)
            await conn.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        await conn.send(b"0\r\n\r\n")


CASES["in-pieces"] = _in_pieces


@SDKS
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_whole_answer_reads_as_httpx2_reads_it(sdk: Any, case: str) -> None:
    seen = await both(sdk, CASES[case])
    assert seen["lean"] == seen["stock"]
    lean = seen["lean"]["response"]
    assert lean["read"] and lean["closed"] and lean["consumed"]
    assert lean["downloaded"] == len(lean["content"]) or case == "gzip"  # bytes on the wire: the gzipped ones
    assert seen["lean"]["pool_idle"] == 1  # read whole: the connection went back to the pool
    assert seen["accepted"] == 2  # one connection per client


@SDKS
async def test_the_lean_read_decodes_nothing_itself(sdk: Any) -> None:
    seen = await both(sdk, CASES["gzip"])
    assert seen["lean"]["response"]["content"] == b'{"ok":"compressed"}'
    assert seen["lean"]["response"]["downloaded"] == len(GZIPPED)
    assert seen["lean"]["cookies"] == {}


@SDKS
async def test_an_answer_without_a_charset_gets_the_clients_default_encoding(sdk: Any) -> None:
    text = serve_each(answer("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2\n", b"\xe9!"))
    seen = await both(sdk, text, default_encoding="latin-1")
    assert seen["lean"] == seen["stock"]
    assert seen["lean"]["response"]["encoding"] == "latin-1"


@SDKS
async def test_cookies_go_into_the_jar(sdk: Any) -> None:
    seen = await both(sdk, CASES["set-cookie"])
    assert seen["lean"]["cookies"] == seen["stock"]["cookies"] == {"__cf_bm": "abc", "_cfuvid": "xyz"}


@SDKS
async def test_a_streamed_answer_is_handed_over_unread(sdk: Any) -> None:
    seen = await both(sdk, _in_pieces, stream=True)
    assert seen["lean"] == seen["stock"]
    assert not seen["lean"]["response"]["read"] and not seen["lean"]["response"]["closed"]
    assert seen["lean"]["response"]["streamed"] == b'{"a":"long","b":2}'
    assert seen["lean"]["response"]["after_stream"]["closed"]


async def _redirecting(conn: Conn) -> None:
    while (req := await conn.request()) is not None:
        if req[0].startswith(b"POST /v1/x "):
            await conn.send(answer("HTTP/1.1 307 Temporary Redirect\nLocation: /v1/final\nContent-Length: 5\n",
                                   b"moved"))
        else:
            await conn.send(OK)


@SDKS
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_redirect_is_followed_by_httpx2s_own_loop(sdk: Any, stream: bool) -> None:
    seen = await both(sdk, _redirecting, stream=stream)
    assert seen["lean"] == seen["stock"]
    lean = seen["lean"]["response"]
    assert lean["url"].endswith("/v1/final")
    assert lean["history"] == [(307, lean["url"].replace("/final", "/x"), True)]


@SDKS
async def test_a_redirect_not_followed_names_its_next_request(sdk: Any) -> None:
    seen = await both(sdk, _redirecting, follow_redirects=False)
    assert seen["lean"] == seen["stock"]
    assert seen["lean"]["response"]["status"] == 307
    assert seen["lean"]["response"]["next_request"].endswith("/v1/final")


# ------------------------------------------------------------------ errors


async def failure(sdk: Any, script: Callable[[Conn], Any] | None) -> dict[str, Any]:
    """Type, message and named request of each way's error, and its pool afterwards (None: nothing listens)."""
    out: dict[str, Any] = {}
    nobody = f"http://127.0.0.1:{free_port()}/v1/x"
    async with clients(sdk) as made:
        for way, (client, do) in made.items():
            if script is None:
                request = client.build_request("POST", nobody, content=b"x")
                with pytest.raises(httpx2.TransportError) as caught:
                    await do(request)
            else:
                async with Server(script) as server:
                    request = client.build_request("POST", server.url + "/v1/x", content=b"x",
                                                   timeout=httpx2.Timeout(0.3))
                    with pytest.raises(httpx2.TransportError) as caught:
                        await do(request)
            error = caught.value
            out[way] = (type(error), str(error), error.request is request, client._transport._open)
    return out


PARTIAL = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"


@SDKS
@pytest.mark.parametrize(("script", "error"), [
    (None, httpx2.ConnectError),
    (answer_then(b"", "close"), httpx2.RemoteProtocolError),
    (answer_then(PARTIAL, "close"), httpx2.RemoteProtocolError),
    (answer_then(PARTIAL, "reset"), httpx2.ReadError),
    (answer_then(PARTIAL, "wait"), httpx2.ReadTimeout),
    (answer_then(b"HTTP/1.1 2x0 OK\r\n\r\n", "wait"), httpx2.RemoteProtocolError),
], ids=["refused", "closed-before-head", "closed-mid-body", "reset-mid-body", "stalled-body", "not-http"])
async def test_an_error_is_the_one_httpx2_raises_naming_the_request(sdk: Any, script: Any, error: type) -> None:
    seen = await failure(sdk, script)
    assert seen["lean"][0] is error
    assert seen["lean"] == seen["stock"]
    assert seen["lean"][2], "the error names the request it was raised for"
    assert seen["lean"][3] == 0, "the broken connection left the pool"


# ------------------------------------------------------------------ which way a request goes


@pytest.fixture
def stock_layers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs that went through httpx2's own auth and redirect layers."""
    entered: list[str] = []
    original = httpx2.AsyncClient._send_handling_auth

    async def counting(self: Any, request: httpx2.Request, *args: Any, **kw: Any) -> Any:
        entered.append(str(request.url))
        return await original(self, request, *args, **kw)

    monkeypatch.setattr(httpx2.AsyncClient, "_send_handling_auth", counting)
    return entered


@SDKS
async def test_the_sdks_plain_requests_skip_httpx2s_layers(sdk: Any, stock_layers: list[str]) -> None:
    async with Server(serve_each(OK)) as server:
        client = _http.client(sdk, httpx2.Timeout(2.0))
        try:
            for _ in range(3):
                assert (await client.post(server.url + "/v1/x", content=b"x")).json() == {"ok": True}
        finally:
            await client.aclose()
        assert server.accepted == 1  # one kept-alive connection for the three
    assert stock_layers == []


@SDKS
@pytest.mark.parametrize("setting", ["client-auth", "call-auth", "credentials-in-url", "request-hook",
                                     "response-hook"])
async def test_auth_hooks_and_credentials_go_the_stock_way(sdk: Any, setting: str, stock_layers: list[str]) -> None:
    seen: list[Request] = []
    hooked: list[str] = []

    async def hook(_: Any) -> None:
        hooked.append(setting)

    async with Server(serve_recording(seen)) as server:
        client = _http.client(sdk, httpx2.Timeout(2.0))
        url, send = server.url + "/v1/x", {}
        if setting == "client-auth":
            client.auth = ("user", "pass")
        elif setting == "call-auth":
            send["auth"] = ("user", "pass")
        elif setting == "credentials-in-url":
            url = url.replace("http://", "http://user:pass@")
        else:
            client.event_hooks = {setting.removesuffix("-hook"): [hook]}
        try:
            response = await client.send(client.build_request("POST", url, content=b"x"), **send)
        finally:
            await client.aclose()
    assert response.json() == {"ok": True}
    assert len(stock_layers) == 1
    if setting.endswith("hook"):
        assert hooked == [setting]
    else:
        assert seen[0][1][b"authorization"] == b"Basic dXNlcjpwYXNz"


@SDKS
async def test_a_proxied_client_goes_the_stock_way(sdk: Any, stock_layers: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Request] = []
    async with Server(serve_recording(seen)) as server:
        monkeypatch.setenv("HTTP_PROXY", server.url)
        client = _http.client(sdk, httpx2.Timeout(2.0))
        try:
            assert (await client.post("http://api.example.invalid/v1/x", content=b"{}")).json() == {"ok": True}
        finally:
            await client.aclose()
    assert [r[0] for r in seen] == [b"POST http://api.example.invalid/v1/x HTTP/1.1"]
    assert stock_layers == ["http://api.example.invalid/v1/x"]


@SDKS
async def test_a_closed_client_refuses_as_httpx2_does(sdk: Any) -> None:
    client = _http.client(sdk, httpx2.Timeout(2.0))
    await client.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await client.send(client.build_request("POST", "http://127.0.0.1:9/v1/x", content=b"x"))


async def test_elapsed_is_the_time_to_the_end_of_the_body() -> None:
    async with Server(_in_pieces) as server, clients(openai) as made:
        client, do = made["lean"]
        response = await do(client.build_request("POST", server.url + "/v1/x", content=b"x"))
    assert isinstance(response.elapsed, datetime.timedelta)
    assert response.elapsed >= datetime.timedelta(milliseconds=55)  # three pieces 20 ms apart
