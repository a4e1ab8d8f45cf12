"""Small helpers for driving providers against the fakes: specs, requests, stream collection."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from rhetor.config.models import ProviderSpec, TimeoutsSpec
from rhetor.errors import ProviderError
from rhetor.providers.base import ProviderRequest, StreamDelta, StreamEnd
from rhetor.types import Message

__all__ = ["KEY", "collect", "free_port", "make_request", "make_spec", "stream_failure"]

KEY = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"


def make_spec(kind: str, base_url: str | None, *, api_key: str | None = None, connect: float = 1.0,
              first_token: float = 1.0, total: float = 3.0, max_retries: int = 0) -> ProviderSpec:
    return ProviderSpec(kind=kind, api_key=api_key, base_url=base_url, max_retries=max_retries,  # type: ignore[arg-type]
                        timeouts=TimeoutsSpec(connect=connect, first_token=first_token, total=total))


def make_request(model: str = "model-x", *, system: str | None = "Be brief.", user: str = "Say hello",
                 max_tokens: int = 64, temperature: float | None = None, stop: tuple[str, ...] = ()) -> ProviderRequest:
    messages = ([Message("system", system)] if system is not None else []) + [Message("user", user)]
    return ProviderRequest(model_id=model, messages=tuple(messages), max_tokens=max_tokens,
                           temperature=temperature, stop=stop)


async def collect(stream: AsyncIterator[StreamDelta | StreamEnd]) -> tuple[list[str], StreamEnd]:
    """The deltas' texts and the one ``StreamEnd``, checking it comes last and only once."""
    deltas: list[str] = []
    end: StreamEnd | None = None
    async for event in stream:
        assert end is None, f"{event!r} came after StreamEnd"
        if isinstance(event, StreamEnd):
            end = event
        else:
            assert isinstance(event, StreamDelta) and event.text
            deltas.append(event.text)
    assert end is not None, "the stream had no StreamEnd"
    return deltas, end


async def stream_failure(stream: AsyncIterator[StreamDelta | StreamEnd]) -> tuple[list[str], ProviderError]:
    """The deltas sent before the stream raised, and the error (which must be a ``ProviderError``)."""
    deltas: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for event in stream:
            assert isinstance(event, StreamDelta), f"unexpected {event!r} in a failing stream"
            deltas.append(event.text)
    return deltas, info.value


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
