"""``ChunkEvents``: a stream's chunk events encoded around a template give exactly the bytes ``sse`` gives for the
same payload, whatever the text, and fall back to ``sse`` when the template cannot be trusted."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rhetor.server import wire
from rhetor.server.wire import ChunkEvents, sse

# the shapes the SSE surfaces send: /stream and /message, the legacy endpoints (the text twice), /v1 chunks
PAYLOADS = {
    "rhetor": lambda context: lambda t: {"chunk": t, "done": False, "context": context},
    "legacy": lambda context: lambda t: {"text": t, "chunk": t, "done": False},
    "openai": lambda context: lambda t: {
        "id": f"chatcmpl-{context}", "object": "chat.completion.chunk", "created": 1763830000, "model": "rhetor",
        "choices": [{"index": 0, "delta": {"content": t}, "logprobs": None, "finish_reason": None}], "usage": None},
}
TEXTS = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " hello", 'say "hi"', "back\\slash", "line\nbreak\ttab\r", "\x00\x1f\x7f", "émoji 🦜", "\u2028\u2029",
     "</script>", '"},"done":true,"x":"'])


@given(kind=st.sampled_from(sorted(PAYLOADS)), context=st.none() | st.text(max_size=20),
       texts=st.lists(TEXTS, min_size=1, max_size=5))
def test_every_chunk_is_the_bytes_sse_gives(kind: str, context: str | None, texts: list[str]) -> None:
    make = PAYLOADS[kind](context)
    events = ChunkEvents(make)
    assert [events(t) for t in texts] == [sse(make(t)) for t in texts]


def test_a_template_that_does_not_hold_falls_back_to_sse(monkeypatch: Any) -> None:
    """Were the marker also in another field (here: forced, by fixing the random marker and putting it in the
    context), the template's parts would be wrong: the first chunk's check catches it and every chunk is encoded
    plainly."""
    monkeypatch.setattr(wire.os, "urandom", lambda n: b"\x01" * n)
    marker = "\x00" + ("01" * 8) + "\x00"
    make = PAYLOADS["rhetor"](marker)  # a field holding exactly the marker (its encoding includes the quotes)
    events = ChunkEvents(make)
    assert events._parts is not None and len(events._parts) == 3  # the template is broken: two cuts, not one
    assert [events("one"), events("two")] == [sse(make("one")), sse(make("two"))]
    assert events._parts is None  # given up after the first chunk's check


def test_after_the_first_chunk_no_payload_is_built_or_encoded_whole(monkeypatch: Any) -> None:
    made: list[str] = []

    def make(text: str) -> dict[str, Any]:
        made.append(text)
        return PAYLOADS["openai"]("abc")(text)

    events = ChunkEvents(make)
    expected = [sse(PAYLOADS["openai"]("abc")(t)) for t in ("first", "second", "third")]
    assert events("first") == expected[0]
    made.clear()
    assert [events("second"), events("third")] == expected[1:]
    assert made == []
