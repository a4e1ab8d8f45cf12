"""Fake LLM upstreams on real loopback HTTP, for the provider tests: each speaks its vendor's wire
protocol (JSON bodies, SSE or NDJSON streams, error bodies) and injects the faults a test queues."""

from ._http import FakeUpstream, Fault, Frame, RecordedRequest, Reply
from .anthropic_server import FakeAnthropic
from .ollama_server import FakeOllama
from .openai_server import FakeOpenAI

__all__ = ["Fault", "FakeAnthropic", "FakeOllama", "FakeOpenAI", "FakeUpstream", "Frame", "RecordedRequest", "Reply"]
