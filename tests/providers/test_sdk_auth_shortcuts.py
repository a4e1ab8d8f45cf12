"""``_sdk_client._auth_shortcuts``: the OpenAI SDK client's members that import their body from
``openai.lib._client_auth`` on every call are replaced by direct calls of the same functions, and only then.

* With the installed SDK every listed member is replaced, and each answers as the SDK's own member does on the
  same client (URL read and set, auth headers, custom auth, prepared options and request); a request goes out
  through the replaced send methods with the SDK's auth header.
* A member whose code does anything else, a subclass overriding one, or an SDK without the module: no
  replacement at all.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

from rhetor.providers import _http, _sdk_client
from tests.providers.test_http_transport import Request, Server, serve_recording

SDK = openai.AsyncOpenAI


def lean(**kw: Any) -> Any:
    return _sdk_client.lean_client(SDK)(api_key="sk-test", base_url="http://127.0.0.1:9/v1", **kw)


def test_every_delegating_member_of_the_installed_sdk_is_replaced() -> None:
    cls = _sdk_client.lean_client(SDK)
    assert sorted(_sdk_client._auth_shortcuts(SDK)) == sorted(_sdk_client._DELEGATED)
    for member in _sdk_client._DELEGATED:
        assert vars(cls)[member] is not vars(SDK)[member]


def test_the_replaced_members_answer_as_the_sdks_own() -> None:
    client = lean()
    assert client.base_url == SDK.base_url.fget(client) == httpx2.URL("http://127.0.0.1:9/v1/")
    assert client.custom_auth is SDK.custom_auth.fget(client) is None
    assert client._bearer_auth == SDK._bearer_auth.fget(client) == {"Authorization": "Bearer sk-test"}
    for security in ({"bearer_auth": True}, {}, {"admin_api_key_auth": True}):
        assert client._auth_headers(security) == SDK._auth_headers(client, security)


def test_setting_the_base_url_does_what_the_sdks_setter_does() -> None:
    ours, theirs = lean(), lean()
    ours.base_url = "http://example.invalid:8080/v2"
    SDK.base_url.fset(theirs, "http://example.invalid:8080/v2")
    assert ours.base_url == theirs.base_url == httpx2.URL("http://example.invalid:8080/v2/")
    assert vars(ours).keys() == vars(theirs).keys()
    assert ours._base_url_was_default == theirs._base_url_was_default is False


@pytest.mark.asyncio
async def test_prepared_options_and_requests_are_the_sdks_own() -> None:
    client = lean()
    options = openai._models.FinalRequestOptions.construct(method="post", url="/chat/completions",
                                                            content=b"{}", headers={"X-Custom": "1"})
    ours = await client._prepare_options(options.model_copy())
    theirs = await SDK._prepare_options(client, options.model_copy())
    assert ours.__dict__ == theirs.__dict__
    request = client._build_request(ours)
    before = (request.method, request.url, request.headers.raw)
    assert await client._prepare_request(request) is None
    assert (request.method, request.url, request.headers.raw) == before


@pytest.mark.asyncio
async def test_a_request_goes_out_through_the_replaced_send_with_the_sdks_auth() -> None:
    seen: list[Request] = []
    async with Server(serve_recording(seen)) as server:
        timeout = httpx2.Timeout(2.0)
        client = _sdk_client.lean_client(SDK)(api_key="sk-test", base_url=server.url + "/v1", timeout=timeout,
                                               http_client=_http.client(openai, timeout), max_retries=0)
        try:
            options = openai._models.FinalRequestOptions.construct(method="post", url="/chat/completions",
                                                                    content=b"{}")
            response = await client.request(httpx2.Response, options)
        finally:
            await client.close()
    assert response.json() == {"ok": True}
    assert seen[0][1][b"authorization"] == b"Bearer sk-test"


def _copy_of_sdk(**changed: Any) -> type:
    """A class standing for another version of ``AsyncOpenAI``: its members, some changed, in ``openai._client``."""
    members = {k: v for k, v in vars(SDK).items() if k not in ("__dict__", "__weakref__")}
    cls = type("AsyncOpenAI", SDK.__bases__, {**members, **changed})
    return cls


async def _prepare_request_doing_more(self: Any, request: Any) -> None:
    from openai.lib._client_auth import async_prepare_request

    request.headers["X-Extra"] = "1"
    return await async_prepare_request(self, request)


def _in_openai(source: str) -> Any:
    """A function compiled as if written in ``openai._client`` (its relative import names what the SDK's do)."""
    namespace: dict[str, Any] = {"__name__": "openai._client", "__package__": "openai"}
    exec(compile(source, "<openai._client>", "exec"), namespace)  # noqa: S102 - a fixed test source
    return next(v for k, v in namespace.items() if not k.startswith("__"))


_sync_send_request = _in_openai(  # what the SDK's _send_request does, but not async
    "def _send_request(self, request, *, stream, **kwargs):\n"
    "    from .lib._client_auth import async_send_request\n"
    "    return async_send_request(self, request, stream=stream, **kwargs)\n")


def test_an_sdk_whose_members_only_delegate_gets_the_shortcuts() -> None:
    assert _sync_send_request.__code__.co_names == vars(SDK)["_send_request"].__code__.co_names
    assert sorted(_sdk_client._auth_shortcuts(_copy_of_sdk())) == sorted(_sdk_client._DELEGATED)


def _setter(self: Any, value: Any) -> None:
    self._custom = value


@pytest.mark.parametrize("changed", ["more-work", "plain-function", "missing-target", "setter-added",
                                     "made-a-method", "made-sync"])
def test_a_member_doing_anything_else_leaves_every_member_to_the_sdk(changed: str) -> None:
    if changed == "more-work":
        cls = _copy_of_sdk(_prepare_request=_prepare_request_doing_more)
    elif changed == "plain-function":
        cls = _copy_of_sdk(_bearer_auth=property(lambda self: {"Authorization": f"Bearer {self.api_key}"}))
    elif changed == "missing-target":
        cls = _copy_of_sdk(custom_auth=property(lambda self: None))
    elif changed == "setter-added":
        cls = _copy_of_sdk(_bearer_auth=property(SDK._bearer_auth.fget, _setter))
    elif changed == "made-a-method":
        cls = _copy_of_sdk(_bearer_auth=SDK._bearer_auth.fget)
    else:
        cls = _copy_of_sdk(_send_request=_sync_send_request)
    assert _sdk_client._auth_shortcuts(cls) == {}
    made = _sdk_client.lean_client(cls)
    assert all(member not in vars(made) for member in _sdk_client._DELEGATED)


def test_a_subclass_overriding_a_member_keeps_its_own() -> None:
    class Custom(SDK):  # type: ignore[misc,valid-type]
        async def _prepare_request(self, request: Any) -> None:
            request.headers["X-Mine"] = "1"

    assert _sdk_client._auth_shortcuts(Custom) == {}
    assert vars(_sdk_client.lean_client(Custom)).get("_prepare_request") is None


def test_other_sdks_get_none() -> None:
    assert _sdk_client._auth_shortcuts(anthropic.AsyncAnthropic) == {}
    assert _sdk_client._auth_shortcuts(httpx2.AsyncClient) == {}
