"""Provider kinds: ``kind:`` in providers.yaml ↔ ``rhetor/providers/<kind>.py``.

An explicit table: YAML never names import paths.

Modules are imported on first use, so a configuration that only uses the offline provider never loads
the vendor SDKs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from rhetor.config.models import ProviderSpec
from rhetor.engine.runtime import Clock
from rhetor.providers.base import Availability, Provider, ProviderRequest, ProviderResult, StreamDelta, StreamEnd

__all__ = [
    "KINDS",
    "Availability",
    "Provider",
    "ProviderRequest",
    "ProviderResult",
    "StreamDelta",
    "StreamEnd",
    "build_provider",
]

KINDS: Mapping[str, tuple[str, str]] = {
    "simulated": ("rhetor.providers.simulated", "SimulatedProvider"),
    "anthropic": ("rhetor.providers.anthropic", "AnthropicProvider"),
    "openai": ("rhetor.providers.openai", "OpenAIProvider"),
    "ollama": ("rhetor.providers.ollama", "OllamaProvider"),
}


def build_provider(name: str, spec: ProviderSpec, env: Mapping[str, str], clock: Clock | None = None) -> Provider:
    """Create the provider named ``name`` (once per configuration; its SDK client is reused)."""
    module, cls = KINDS[spec.kind]
    provider_cls: type[Provider] = getattr(importlib.import_module(module), cls)
    provider = provider_cls(name, spec, env)
    if clock is not None:
        provider.clock = clock
    return provider
