"""Fixtures for the provider tests: one fake upstream per test (loopback HTTP in a background thread)
and a factory that builds providers and closes them afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import pytest_asyncio

from rhetor.config.models import ProviderSpec
from rhetor.providers.base import Provider
from tests.fakes import FakeAnthropic, FakeOllama, FakeOpenAI


@pytest.fixture
def openai_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def ollama_upstream() -> Iterator[FakeOllama]:
    fake = FakeOllama().start()
    yield fake
    fake.stop()


MakeProvider = Callable[[type[Provider], ProviderSpec, Mapping[str, str]], Provider]


@pytest_asyncio.fixture
async def make_provider() -> AsyncIterator[MakeProvider]:
    """``make_provider(cls, spec, env)``: a provider named ``test-<kind>``, closed after the test."""
    made: list[Provider] = []

    def make(cls: type[Provider], spec: ProviderSpec, env: Mapping[str, str]) -> Provider:
        provider = cls(f"test-{spec.kind}", spec, env)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
