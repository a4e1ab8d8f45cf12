"""The one interface every provider implements, and the values it exchanges with stages.

A provider is built once per configuration (its SDK client, and so its connection pool, is reused by
every request) and offers ``complete`` and ``stream``. SDK and HTTP errors are mapped inside each
provider module into ``rhetor.errors.ProviderError`` subclasses; nothing else escapes it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import msgspec

from rhetor.config.models import ProviderSpec
from rhetor.engine.runtime import Clock, MonotonicClock
from rhetor.types import Message, Usage

__all__ = ["Availability", "Provider", "ProviderRequest", "ProviderResult", "StreamDelta", "StreamEnd"]


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    model_id: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] = ()

    @property
    def system(self) -> str | None:
        """System messages joined (for APIs such as Anthropic's that take them apart)."""
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    @property
    def dialogue(self) -> tuple[Message, ...]:
        return tuple(m for m in self.messages if m.role != "system")


@dataclass(frozen=True, slots=True)
class ProviderResult:
    text: str
    usage: Usage
    finish_reason: str | None = None


class StreamDelta(msgspec.Struct, frozen=True):
    """A piece of a streamed answer's text. A frozen msgspec ``Struct``, not a dataclass: a stream makes one per chunk
    (20 in the benchmark's), and a frozen dataclass's ``__init__`` costs several times as much."""

    text: str


class StreamEnd(msgspec.Struct, frozen=True):
    """A stream's last event: the provider's usage and finish reason."""

    usage: Usage
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Availability:
    available: bool
    reason: str = ""


class Provider(abc.ABC):
    """Base of the provider kinds (``kind:`` in providers.yaml ↔ ``rhetor/providers/<kind>.py``)."""

    kind: str = ""
    unreachable_cooldown_s: float = 15.0
    """After a connection failure the provider is reported unavailable for this long (passive health)."""

    def __init__(self, name: str, spec: ProviderSpec, env: Mapping[str, str]) -> None:
        self.name = name
        self.spec = spec
        self.clock: Clock = MonotonicClock()
        self._unreachable: tuple[float, str] | None = None

    @abc.abstractmethod
    def configured(self) -> Availability:
        """Whether the provider is set up to take requests (key present, URL well formed). Never does I/O."""

    def availability(self) -> Availability:
        """Whether requests can be sent now, and why not: not configured, or unreachable recently."""
        configured = self.configured()
        if configured.available and self._unreachable is not None:
            until, reason = self._unreachable
            if self.clock.now() < until:
                return Availability(False, reason)
            self._unreachable = None
        return configured

    def mark_unreachable(self, reason: str) -> None:
        """Record a failed connection: the provider is skipped for ``unreachable_cooldown_s``."""
        self._unreachable = (self.clock.now() + self.unreachable_cooldown_s, f"unreachable: {reason}")

    @abc.abstractmethod
    async def complete(self, request: ProviderRequest) -> ProviderResult:
        """One whole answer. Raises ``ProviderError`` subclasses only."""

    @abc.abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:
        """Deltas as they arrive, then exactly one ``StreamEnd`` with the provider's usage.

        A failure after at least one delta raises ``MidStreamError`` with the text and usage so far.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the SDK client's connections."""


def resolve_key(spec: ProviderSpec, env: Mapping[str, str]) -> str | None:
    """The API key named by ``api_key: env:VAR``, or None when unset or empty."""
    if not spec.api_key:
        return None
    value = env.get(spec.api_key.removeprefix("env:"), "")
    return value or None
