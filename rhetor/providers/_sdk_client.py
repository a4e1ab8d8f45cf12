"""The SDK client class a provider makes its client from: the vendor's own (``AsyncOpenAI``, ``AsyncAnthropic``)
with three of its per-request steps done once instead, because a provider sends the same request but for its
body, again and again (and, for the OpenAI SDK, its auth members called directly: ``_auth_shortcuts``).

* ``_prepare_url``: the endpoint's absolute URL is parsed once (``kept_url``); the SDK parsed it again on every
  request with httpx2's pure-Python parser (3–5% of a request's CPU).
* ``_idempotency_key``: the SDK makes a ``uuid4`` key per request for an idempotency header neither SDK sends;
  while none is sent, one fixed key (2% of the SDK call's instructions).
* ``_build_request``: the SDK's request for a body, the same but for that body each time: headers (auth,
  ``x-stainless-*``, the client's), URL, timeout extension. The request the SDK built last is kept with what it
  was built from (``_inputs``); a request whose inputs compare equal gets a copy of it with its own body and
  ``Content-Length`` (14 µs on the 2026-11-22 machine, most of it reading the inputs) instead of a new build
  (67 µs: two header merges, each header normalised and encoded again, the URL, the body's stream). Anything
  else builds as the SDK does, and is kept in turn. A whole ``POST /message`` through the OpenAI provider runs
  12% fewer instructions (``bench/app_cost.py --full`` under callgrind: 3.68 → 3.22 M).

The inputs are everything the SDKs' ``_build_request`` reads: the request options but the body (and the
idempotency key while no idempotency header is sent), the attempt number, the client's default and auth headers
and query, its timeout, and the httpx2 client's headers and base URL. A request is built the SDK's way whenever
the body is not bytes, or empty (httpx2 then puts its ``Content-Length: 0`` first, not last). A build is kept only
while the httpx2 client holds no cookies; once it does (OpenAI's API sets some on its first answers), each copy gets
the jar's ``Cookie`` header made anew, as httpx2 makes it for every request (it depends on the jar, the URL and the
time), in the place httpx2 gives it. ``tests/providers/test_transport.py``
compares the copies with the SDK's own builds, field by field, and changes each input in turn.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from rhetor.providers._common import kept_url

__all__ = ["lean_client"]

_LENGTH = b"content-length"


def lean_client(sdk_client_cls: type) -> type:
    """``sdk_client_cls`` keeping its endpoint URL's parse and its last request's build (see the module)."""

    class LeanClient(sdk_client_cls):  # type: ignore[misc,valid-type]
        _rhetor_url: tuple[str, Any] | None = None
        _rhetor_request: tuple[tuple[Any, ...], Any, int] | None = None

        def _prepare_url(self, url: str) -> Any:
            return kept_url(self, url, super()._prepare_url)

        def _idempotency_key(self) -> str:
            """The key the SDK puts in every request's options, sent only in its idempotency header: with no such
            header (neither SDK sets one) it goes nowhere, and one fixed string spares a ``uuid4`` per request."""
            if self._idempotency_header:
                key: str = super()._idempotency_key()
                return key
            return "stainless-python-retry-unsent"

        def _build_request(self, options: Any, *, retries_taken: int = 0) -> Any:
            content = options.content
            if content.__class__ is not bytes or not content:
                return super()._build_request(options, retries_taken=retries_taken)
            inputs = _inputs(self, options, retries_taken)
            kept = self._rhetor_request
            cookies = self._client.cookies
            if kept is not None and kept[0] == inputs:
                request = _with_body(kept[1], kept[2], content)
                if cookies:
                    _add_cookies(cookies, request, kept[2])
                return request
            request = super()._build_request(options, retries_taken=retries_taken)
            at = next((i for i, (_, lower, _v) in enumerate(request.headers._list) if lower == _LENGTH), None)
            if at is not None and request.content == content and not cookies:
                self._rhetor_request = (inputs, _with_body(request, at, content), at)
            return request

    for name, value in _auth_shortcuts(sdk_client_cls).items():
        setattr(LeanClient, name, value)
    LeanClient.__name__ = LeanClient.__qualname__ = sdk_client_cls.__name__
    return LeanClient


# AsyncOpenAI members whose whole body is ``from .lib._client_auth import F`` and a call of F: member -> (F for the
# getter or method, F for the setter, whether F also takes the defining class, how the member is made)
_DELEGATED: dict[str, tuple[str, str | None, bool, str]] = {
    "base_url": ("asyncbase_url", "asyncbase_url_set", False, "property"),
    "custom_auth": ("asynccustom_auth", None, True, "property"),
    "_bearer_auth": ("async_bearer_auth", None, False, "property"),
    "_auth_headers": ("async_auth_headers", None, False, "method"),
    "_prepare_options": ("async_prepare_options", None, True, "async"),
    "_prepare_request": ("async_prepare_request", None, False, "method"),
    "_send_request": ("async_send_request", None, False, "method"),
    "_send_with_auth_retry": ("async_send_with_auth_retry", None, True, "async"),
}
_PLAIN = ("lib._client_auth",)
_WITH_OWNER = ("typing", "Any", "cast", "lib._client_auth")


def _auth_shortcuts(cls: type) -> dict[str, Any]:
    """The OpenAI SDK's client members that import their body from ``openai.lib._client_auth`` on every call, as
    direct calls of the same functions. An import statement run inside a function costs ~1.8 µs on Python 3.11
    (two ``AttributeError``s made and dropped inside the import machinery) and a request runs a dozen of them: 4.4%
    of a ``POST /message``'s instructions (``bench/instructions.sh``: 3.027 -> 2.894 M). Only when every member's
    code does nothing but that import and that call (its names are exactly those) and none is overridden below the
    class defining them; otherwise, and for any other SDK, none: the SDK's own members stay."""
    owner = next((c for c in cls.__mro__ if "_send_with_auth_retry" in vars(c)), None)
    if owner is None:
        return {}
    try:
        auth = importlib.import_module(owner.__module__.split(".")[0] + ".lib._client_auth")
    except ImportError:
        return {}
    out: dict[str, Any] = {}
    for member, (target, setter, with_owner, kind) in _DELEGATED.items():
        if next((c for c in cls.__mro__ if member in vars(c)), None) is not owner:  # a subclass made its own: leave all
            return {}
        own = vars(owner).get(member)
        if not _same_kind(own, kind, bool(setter), getattr(auth, target, None)):
            return {}
        code = [own.fget, own.fset] if isinstance(own, property) else [own]
        wanted = [(target, with_owner), (setter, False)] if setter else [(target, with_owner)]
        if len(code) < len(wanted) or not all(
            fn is not None and hasattr(fn, "__code__") and hasattr(auth, name)
            and fn.__code__.co_names == ((*_WITH_OWNER, name, "super", "__thisclass__") if owned else (*_PLAIN, name))
            for fn, (name, owned) in zip(code, wanted, strict=False)
        ):
            return {}
        call = getattr(auth, target)
        if kind == "property":
            out[member] = property(_owned(call, owner) if with_owner else call,
                                   getattr(auth, setter) if setter else None)
        elif kind == "async":
            out[member] = _owned_async(call, owner)
        else:
            out[member] = call
    return out


def _same_kind(own: Any, kind: str, setter: bool, target: Any) -> bool:
    """Whether the SDK's member is what its replacement will be: a property with a setter exactly when one is
    replaced, no deleter; or a method, async exactly when its target is."""
    if isinstance(own, property):
        return kind == "property" and (own.fset is not None) == setter and own.fdel is None
    return kind != "property" and inspect.iscoroutinefunction(own) == inspect.iscoroutinefunction(target)


def _owned(call: Callable[..., Any], owner: type) -> Callable[[Any], Any]:
    def get(self: Any) -> Any:
        return call(owner, self)
    return get


def _owned_async(call: Callable[..., Any], owner: type) -> Callable[..., Any]:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await call(owner, self, *args, **kwargs)
    return method


def _inputs(client: Any, options: Any, retries_taken: int) -> tuple[Any, ...]:
    """What the SDK's ``_build_request`` reads, but the body: equal inputs, equal requests but for the body."""
    fields = options.__dict__
    skip = ("content",) if client._idempotency_header else ("content", "idempotency_key")
    security = fields.get("security")
    auth = client._auth_headers(security) if hasattr(client, "_auth_headers") else None  # OpenAI's, per option
    auth_query = client._auth_query(security) if hasattr(client, "_auth_query") else None
    http = client._client
    return (
        retries_taken,
        [(name, value) for name, value in fields.items() if name not in skip],
        _comparable(client.default_headers), auth, client.default_query, auth_query, client.timeout, client.base_url,
        client._idempotency_header, list(http.headers._list), http.base_url, http.timeout,
    )


def _comparable(headers: dict[str, Any]) -> list[tuple[str, Any]]:
    """Headers as pairs that compare by value: the SDKs' ``Omit()`` markers (a header left out, a fresh object
    each time, equal only to itself) become their class."""
    return [(name, value if value.__class__ is str else value.__class__) for name, value in headers.items()]


def _add_cookies(cookies: Any, request: Any, at: int) -> None:
    """The cookie jar's header on a copied request, made as httpx2 makes it for every request (it depends on the
    jar, the URL and the time) and put where httpx2 puts it: after the SDK's and the client's headers, before
    ``Content-Length`` (at ``at``)."""
    listed = request.headers._list
    size = len(listed)
    cookies.set_cookie_header(request)
    added = listed[size:]
    if added:
        del listed[size:]
        listed[at:at] = added


def _with_body(template: Any, at: int, content: bytes) -> Any:
    """A copy of the httpx2 ``Request`` ``template`` sending ``content``: its own headers list (``Content-Length``
    at ``at``), extensions and stream; the URL (immutable) shared."""
    request = object.__new__(template.__class__)
    request.method = template.method
    request.url = template.url
    headers = template.headers.copy()
    name, lower, _ = headers._list[at]
    headers._list[at] = (name, lower, b"%d" % len(content))
    request.headers = headers
    request.extensions = {k: (v.copy() if v.__class__ is dict else v) for k, v in template.extensions.items()}
    request.stream = template.stream.__class__(content)
    request._content = content
    return request
