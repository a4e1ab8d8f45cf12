"""``_sse.EventReader``: the event stream format as the vendor SDKs' own decoders read it, however the body is
cut into chunks. The SDK's ``SSEDecoder`` is the oracle of the property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from rhetor.providers._common import MalformedChunk
from rhetor.providers._sse import END, SKIP, Event, EventReader, batches, decode_json


def read(*chunks: bytes) -> list[Event]:
    reader = EventReader()
    return [event for chunk in chunks for event in reader.feed(chunk)]


def bytewise(body: bytes) -> list[Event]:
    return read(*(body[i:i + 1] for i in range(len(body))))


def test_one_data_line_per_event() -> None:
    body = b'data: {"a":1}\n\ndata: [DONE]\n\n'
    assert read(body) == [Event(None, b'{"a":1}'), Event(None, b"[DONE]")]
    assert bytewise(body) == read(body)


def test_named_events_multi_line_data_comments_and_unknown_fields() -> None:
    body = (b": keep-alive\n\n"
            b"event: message_start\ndata: {\"x\":\n: a comment inside\ndata: 1}\nfoo: ignored\n\n"
            b"event: ping\n\n"
            b"data:no space\ndata:  two spaces\ndata\n\n")
    expected = [Event("message_start", b'{"x":\n1}'), Event("ping", b""), Event(None, b"no space\n two spaces\n")]
    assert read(body) == expected
    assert bytewise(body) == expected


@pytest.mark.parametrize("eol", [b"\r\n", b"\r", b"\n"])
def test_every_line_ending(eol: bytes) -> None:
    body = b"event: a" + eol + b"data: 1" + eol + eol + b"data: 2" + eol + eol
    assert read(body) == [Event("a", b"1"), Event(None, b"2")]
    assert bytewise(body) == read(body)


def test_crlf_cut_between_cr_and_lf_is_one_line_end() -> None:
    assert read(b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r\n") == [Event(None, b"1"), Event(None, b"2")]
    assert read(b"data: 1\r", b"\r", b"data: 2\n\n") == [Event(None, b"1"), Event(None, b"2")]
    assert read(b"data: 1\r", b"", b"\ndata: 2\n\n") == [Event(None, b"1\n2")]  # an empty chunk between CR and LF


def test_blank_lines_before_and_between_events_dispatch_nothing() -> None:
    assert read(b"\n\n\ndata: 1\n\n\n\n\ndata: 2\n\n") == [Event(None, b"1"), Event(None, b"2")]


def test_id_retry_and_empty_event_names_alone_are_not_events() -> None:
    assert read(b"id: 7\n\nretry: 100\n\nevent:\n\nevent: x\nevent:\n\n") == []
    assert read(b"id: 7\ndata: 1\n\n") == [Event(None, b"1")]


def test_an_event_the_body_ends_in_is_dropped() -> None:
    reader = EventReader()
    assert reader.feed(b"data: 1\n\ndata: 2\n") == [Event(None, b"1")]
    assert reader.feed(b"data: 3") == []  # nothing more comes: no blank line, no event


def test_a_long_event_in_many_small_chunks() -> None:
    data = b'{"text": "' + b"x" * 200_000 + b'"}'
    body = b"data: " + data + b"\n\ndata: 2\n\n"
    events = read(*(body[i:i + 1000] for i in range(0, len(body), 1000)))
    assert events == [Event(None, data), Event(None, b"2")]
    assert all(type(e.data) is bytes for e in events)


def test_an_event_that_never_ends_is_malformed_not_kept_forever() -> None:
    reader = EventReader(max_event=1000)
    assert reader.feed(b"data: 1\n\n" + b"data: " + b"x" * 500) == [Event(None, b"1")]
    with pytest.raises(MalformedChunk, match="longer than 1000 bytes"):
        reader.feed(b"x" * 600)
    with pytest.raises(MalformedChunk):
        EventReader(max_event=1000).feed(b"y" * 1001)  # in the first chunk already


def test_decode_json_reports_malformed_data() -> None:
    assert decode_json(b'{"a": [1, "\\u00e9"]}') == {"a": [1, "é"]}
    with pytest.raises(MalformedChunk, match="not JSON"):
        decode_json(b"{not json")


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
_line = st.one_of(
    st.builds(lambda v: f"data: {v}", _text),
    st.builds(lambda v: f"data:{v}", _text),
    st.builds(lambda v: f"event: {v}", _text),
    st.builds(lambda v: f": {v}", _text),
    st.builds(lambda v: f"other: {v}", _text),
    st.just("data"),
    st.just(""),
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    lines = draw(st.lists(_line, max_size=30))
    eols = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines), max_size=len(lines)))
    body = "".join(line + eol for line, eol in zip(lines, eols, strict=True)).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
    return body, cuts


@settings(max_examples=400, deadline=None)
@given(_streams())
def test_same_events_as_the_sdk_decoder_however_the_body_is_cut(stream: tuple[bytes, list[int]]) -> None:
    body, cuts = stream
    bounds = [0, *cuts, len(body)]
    chunks = [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    sdk = [(e.event, e.data) for e in SSEDecoder().iter_bytes(iter(chunks))]
    ours = [(e.event, e.data.decode()) for e in read(*chunks)]
    assert ours == sdk


async def _body(*reads: bytes):  # type: ignore[no-untyped-def]
    for read in reads:
        yield read


async def test_a_reads_events_are_made_as_they_are_taken_so_the_first_goes_on_before_the_rest() -> None:
    made: list[bytes] = []

    def handle(event: Event) -> object:
        made.append(event.data)
        if event.data == b"bad":
            raise MalformedChunk("bad event")
        return SKIP if event.data == b"ping" else event.data

    reads = batches(_body(b"data: a\n\ndata: ping\n\ndata: b\n\ndata: bad\n\ndata: c\n\n"), handle)
    events = iter(await anext(reads))
    assert next(events) == b"a"
    assert made == [b"a"]  # nothing else of the read was decoded yet
    assert next(events) == b"b"  # the ping skipped
    with pytest.raises(MalformedChunk):  # an event's error comes after the events before it
        next(events)
    assert made == [b"a", b"ping", b"b", b"bad"]


async def test_the_reads_stop_at_the_end_event_once_it_was_taken() -> None:
    def handle(event: Event) -> object:
        return END if event.data == b"[DONE]" else event.data

    reads = batches(_body(b"data: a\n\n", b"data: b\n\ndata: [DONE]\n\ndata: after\n\n", b"data: later\n\n"),
                    handle)
    taken = [list(read) async for read in reads]
    assert taken == [[b"a"], [b"b"]]  # nothing after [DONE], in its read or later ones
