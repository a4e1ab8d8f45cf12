"""The ``ContextRepository`` contract, run against every backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rhetor.storage import ContextHistory, ContextInfo, Storage, StoredMessage, StoredMessageIn, Summary
from rhetor.storage.sql_ledger import SqlStorage
from rhetor.types import Turn

T0 = datetime(2026, 5, 4, 10, 30, 15, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pair(n: int, tokens: tuple[int, int] = (3, 5)) -> list[StoredMessageIn]:
    return [StoredMessageIn("user", f"question {n}", tokens[0]), StoredMessageIn("assistant", f"answer {n}", tokens[1])]


async def raw_count(storage: Storage, table: str, context_id: str) -> int | None:
    """Rows of ``table`` still referring to the context (SQL backends), to see that deletes cascade."""
    if not isinstance(storage, SqlStorage):
        return None
    rows = await storage.fetch(f"SELECT COUNT(*) AS n FROM {table} WHERE context_id = ?", (context_id,))  # noqa: S608
    return int(rows[0]["n"])


async def test_append_numbers_messages_and_creates_the_context(storage: Storage) -> None:
    repo = storage.contexts
    first = await repo.append("search:s1", pair(1), now=T0)
    assert first == [StoredMessage(1, "user", "question 1", 3, T0), StoredMessage(2, "assistant", "answer 1", 5, T0)]
    second = await repo.append("search:s1", [StoredMessageIn("user", "again", 11)], now=at(60))
    assert [m.seq for m in second] == [3]
    ctx = await repo.load("search:s1")
    assert ctx is not None
    assert (ctx.id, ctx.component, ctx.created_at, ctx.last_activity, ctx.summary) == ("search:s1", "search", T0,
                                                                                        at(60), None)
    assert ctx.messages == [*first, *second]
    assert ctx.tokens == 19  # the counts given at append time, never recounted from the text
    assert await repo.load("search:unknown") is None


@pytest.mark.parametrize(
    ("context_id", "component", "expected"),
    [("chat:abc", None, "chat"), ("chat:abc", "explicit", "explicit"), ("no-prefix", None, None),
     (":empty-prefix", None, None), ("a:b:c", None, "a")],
)
async def test_component_is_given_or_derived_from_the_prefix(
    storage: Storage, context_id: str, component: str | None, expected: str | None
) -> None:
    await storage.contexts.append(context_id, pair(1), component=component, now=T0)
    ctx = await storage.contexts.load(context_id)
    assert ctx is not None and ctx.component == expected


async def test_an_existing_context_keeps_its_component(storage: Storage) -> None:
    await storage.contexts.append("x:1", pair(1), component="first", now=T0)
    await storage.contexts.append("x:1", pair(2), component="second", now=at(1))
    ctx = await storage.contexts.load("x:1")
    assert ctx is not None and ctx.component == "first" and len(ctx.messages) == 4


async def test_last_activity_never_goes_back_and_empty_appends_create(storage: Storage) -> None:
    repo = storage.contexts
    await repo.append("c:late", pair(1), now=at(100))
    await repo.append("c:late", pair(2), now=at(50))  # a replica with a slow clock
    ctx = await repo.load("c:late")
    assert ctx is not None and ctx.last_activity == at(100) and [m.seq for m in ctx.messages] == [1, 2, 3, 4]
    assert await repo.append("c:empty", [], now=T0) == []
    empty = await repo.load("c:empty")
    assert empty is not None and empty.messages == [] and empty.component == "c"


async def test_text_and_roles_round_trip_exactly(storage: Storage) -> None:
    texts = ["", "multi\nline\ttext", "émoji 🎉 and 中文", "quote ' \" ; -- DROP TABLE contexts", "x" * 100_000]
    await storage.contexts.append("r:1", [StoredMessageIn("system", t, len(t)) for t in texts], now=T0)
    ctx = await storage.contexts.load("r:1")
    assert ctx is not None
    assert [(m.role, m.content, m.tokens) for m in ctx.messages] == [("system", t, len(t)) for t in texts]


async def test_negative_counts_are_refused_everywhere(storage: Storage) -> None:
    with pytest.raises(ValueError, match="tokens"):
        StoredMessageIn("user", "x", -1)
    await storage.contexts.append("n:1", pair(1), now=T0)
    with pytest.raises(ValueError, match="upto_seq"):
        await storage.contexts.put_summary("n:1", upto_seq=-1, text="s", tokens=1, now=T0)
    with pytest.raises(ValueError, match="tokens"):
        await storage.contexts.put_summary("n:1", upto_seq=1, text="s", tokens=-5, now=T0)


async def test_list_orders_by_last_activity_and_aggregates(storage: Storage) -> None:
    repo = storage.contexts
    await repo.append("a:1", pair(1, (1, 2)), now=at(10))
    await repo.append("b:1", pair(1, (10, 20)), now=at(30))
    await repo.append("a:2", pair(1, (100, 200)) + pair(2, (1000, 2000)), now=at(20))
    await repo.append("a:0", pair(1, (4, 4)), now=at(20))  # same time as a:2: ties go by id
    await repo.append("a:1", [StoredMessageIn("user", "late", 7)], now=at(40))
    assert await repo.list() == [
        ContextInfo("a:1", "a", 3, 10, at(40)),
        ContextInfo("b:1", "b", 2, 30, at(30)),
        ContextInfo("a:0", "a", 2, 8, at(20)),
        ContextInfo("a:2", "a", 4, 3300, at(20)),
    ]
    assert [c.id for c in await repo.list(component="a")] == ["a:1", "a:0", "a:2"]
    assert [c.id for c in await repo.list(component="a", limit=2, offset=1)] == ["a:0", "a:2"]
    assert [c.id for c in await repo.list(limit=1)] == ["a:1"]
    assert await repo.list(offset=4) == [] and await repo.list(component="none") == []
    await repo.append("z:empty", [], now=at(50))
    assert (await repo.list(limit=1))[0] == ContextInfo("z:empty", "z", 0, 0, at(50))


async def test_delete_removes_messages_and_summary(storage: Storage) -> None:
    repo = storage.contexts
    await repo.append("d:1", pair(1) + pair(2), now=T0)
    await repo.append("d:2", pair(1), now=T0)
    assert await repo.put_summary("d:1", upto_seq=2, text="sum", tokens=3, now=T0)
    assert await repo.delete("d:1") is True
    assert await repo.delete("d:1") is False
    assert await repo.load("d:1") is None
    assert await raw_count(storage, "context_messages", "d:1") in (None, 0)
    assert await raw_count(storage, "context_summaries", "d:1") in (None, 0)
    again = await repo.append("d:1", pair(9), now=at(5))  # a new conversation under the same id
    assert [m.seq for m in again] == [1, 2]
    ctx = await repo.load("d:1")
    assert ctx is not None and ctx.summary is None and ctx.created_at == at(5) and len(ctx.messages) == 2
    other = await repo.load("d:2")
    assert other is not None and len(other.messages) == 2  # untouched


async def test_summary_is_replaced_only_by_a_summary_of_as_many_messages_or_more(storage: Storage) -> None:
    repo = storage.contexts
    assert await repo.put_summary("s:none", upto_seq=1, text="orphan", tokens=1, now=T0) is False
    assert await repo.load("s:none") is None  # a summary never creates a context
    await repo.append("s:1", pair(1) + pair(2) + pair(3), now=T0)
    assert await repo.put_summary("s:1", upto_seq=4, text="first four", tokens=4, now=at(1)) is True
    assert await repo.put_summary("s:1", upto_seq=2, text="stale", tokens=2, now=at(2)) is False
    ctx = await repo.load("s:1")
    assert ctx is not None and ctx.summary == Summary(4, "first four", 4, at(1))
    assert await repo.put_summary("s:1", upto_seq=4, text="redone", tokens=5, now=at(3)) is True  # equal replaces
    assert await repo.put_summary("s:1", upto_seq=6, text="all six", tokens=6, now=at(4)) is True
    ctx = await repo.load("s:1")
    assert ctx is not None and ctx.summary == Summary(6, "all six", 6, at(4)) and len(ctx.messages) == 6


async def test_history_is_what_follows_the_summary_as_turns(storage: Storage) -> None:
    """``history`` (read on every request of a conversation) says what ``load`` says, minus the summarised part, as
    the ``Turn`` values a pipeline works with, and the sum of their tokens."""
    repo = storage.contexts
    assert await repo.history("h:unknown") is None
    await repo.append("h:1", pair(1) + pair(2), component="chat", now=T0)
    await repo.append("h:1", [StoredMessageIn("user", "émoji 🎉\nline", 7)], now=at(5))
    whole = await repo.history("h:1")
    assert whole == ContextHistory("chat", at(5), None, (
        Turn.of("user", "question 1", 3, 1), Turn.of("assistant", "answer 1", 5, 2),
        Turn.of("user", "question 2", 3, 3), Turn.of("assistant", "answer 2", 5, 4),
        Turn.of("user", "émoji 🎉\nline", 7, 5)), 23)
    assert all(type(m) is Turn for m in whole.messages)
    assert await repo.put_summary("h:1", upto_seq=3, text="first three", tokens=2, now=at(6)) is True
    after = await repo.history("h:1")
    assert after == ContextHistory("chat", at(5), Summary(3, "first three", 2, at(6)), (
        Turn.of("assistant", "answer 2", 5, 4), Turn.of("user", "émoji 🎉\nline", 7, 5)), 12)
    ctx = await repo.load("h:1")
    assert ctx is not None and [Turn.of(m.role, m.content, m.tokens, m.seq) for m in ctx.messages][3:] == list(
        after.messages)
    assert await repo.put_summary("h:1", upto_seq=5, text="all", tokens=1, now=at(7)) is True
    assert (await repo.history("h:1")).tokens == 0  # type: ignore[union-attr]
    assert (await repo.history("h:1")).messages == ()  # type: ignore[union-attr]


def flat(history: ContextHistory | None) -> list[tuple[int, str]]:
    assert history is not None
    # The token total goes with the messages, on a first read and on a read that extends a kept history alike.
    assert history.tokens == sum(m.tokens for m in history.messages)
    return [(m.seq or 0, m.content) for m in history.messages]


LONG = 16  # pairs: 32 messages, a history long enough for the SQL backends to keep it (``history_cache``)


async def grow(storage: Storage, context_id: str, first: int, pairs: int, now: datetime) -> None:
    """Append pairs ``first`` .. ``first + pairs - 1`` (``pair(n)``), one append each."""
    for n in range(first, first + pairs):
        await storage.contexts.append(context_id, pair(n), now=now)


def expected(first_seq: int, first_pair: int, pairs: int) -> list[tuple[int, str]]:
    """What ``flat`` gives for ``pairs`` pairs from ``pair(first_pair)`` stored from ``first_seq`` on."""
    out = []
    for i in range(pairs):
        out += [(first_seq + 2 * i, f"question {first_pair + i}"), (first_seq + 2 * i + 1, f"answer {first_pair + i}")]
    return out


async def test_history_read_again_follows_appends_summaries_and_recreation(storage: Storage) -> None:
    """Reading a long conversation again (the SQL backends then read only what is new) gives what a first read
    would: after appends, after a new summary, and after the context is deleted or expired and created again under
    the same id, at the same instant, as far as before (same sequence numbers, different texts)."""
    repo = storage.contexts
    await grow(storage, "r:1", 0, LONG, T0)
    assert flat(await repo.history("r:1")) == expected(1, 0, LONG)
    assert flat(await repo.history("r:1")) == expected(1, 0, LONG)  # nothing new
    await grow(storage, "r:1", LONG, 1, at(1))
    assert flat(await repo.history("r:1")) == expected(1, 0, LONG + 1)
    assert await repo.put_summary("r:1", upto_seq=4, text="first pairs", tokens=2, now=at(2)) is True
    await grow(storage, "r:1", LONG + 1, 1, at(3))
    after = await repo.history("r:1")
    assert after is not None and after.summary is not None and after.summary.upto_seq == 4
    assert flat(after) == expected(5, 2, LONG)

    assert await repo.delete("r:1") is True
    assert await repo.history("r:1") is None
    await grow(storage, "r:1", 100, LONG, T0)  # recreated: the same id, instant and sequence numbers
    assert flat(await repo.history("r:1")) == expected(1, 100, LONG)

    assert await repo.expire(before=at(100)) == 1  # gone without this storage being asked to delete it
    await grow(storage, "r:1", 200, LONG, at(2))  # created again as far as before
    assert flat(await repo.history("r:1")) == expected(1, 200, LONG)


async def test_history_sees_what_another_process_stored(make_storage: Callable[[], Storage]) -> None:
    """Two storages on one database (two processes, or two replicas): what one appends, summarises or deletes, the
    other's next read of a history it read before shows (each read checks the context in its own snapshot)."""
    async with make_storage() as a, make_storage() as b:
        if a.kind == "memory":  # nothing is shared between two in-memory storages
            return
        await grow(a, "x:1", 0, LONG, T0)
        assert flat(await b.contexts.history("x:1")) == expected(1, 0, LONG)
        await grow(a, "x:1", LONG, 1, at(1))
        assert flat(await b.contexts.history("x:1")) == expected(1, 0, LONG + 1)
        assert await a.contexts.delete("x:1") is True  # and created again at once, as far as it was: b cannot tell
        await grow(a, "x:1", 100, LONG + 1, T0)  # from the sequence numbers or the times
        assert flat(await b.contexts.history("x:1")) == expected(1, 100, LONG + 1)
        assert await a.contexts.put_summary("x:1", upto_seq=3, text="s", tokens=1, now=at(2)) is True
        assert flat(await b.contexts.history("x:1")) == expected(1, 100, LONG + 1)[3:]
        assert await a.contexts.delete("x:1") is True
        assert await b.contexts.history("x:1") is None


async def test_expire_deletes_idle_contexts_per_component(storage: Storage) -> None:
    repo = storage.contexts
    await repo.append("a:old", pair(1), now=at(0))
    await repo.append("a:edge", pair(1), now=at(100))
    await repo.append("b:old", pair(1), now=at(0))
    await repo.append("a:new", pair(1), now=at(200))
    await repo.put_summary("a:old", upto_seq=2, text="s", tokens=1, now=at(0))
    assert await repo.expire(before=at(100), component="a") == 1  # strictly before: a:edge stays
    assert await repo.load("a:old") is None and await repo.load("b:old") is not None
    assert await raw_count(storage, "context_summaries", "a:old") in (None, 0)
    assert await raw_count(storage, "context_messages", "a:old") in (None, 0)
    assert await repo.expire(before=at(100), component="a") == 0
    assert await repo.expire(before=at(150)) == 2  # a:edge and b:old, any component
    assert [c.id for c in await repo.list()] == ["a:new"]


async def test_records_are_json_ready(storage: Storage) -> None:
    await storage.contexts.append("j:1", pair(1), now=T0)
    await storage.contexts.put_summary("j:1", upto_seq=2, text="s", tokens=1, now=T0)
    ctx = await storage.contexts.load("j:1")
    assert ctx is not None
    data = json.loads(json.dumps(ctx.to_dict()))
    assert data["created_at"] == T0.isoformat() and data["messages"][1]["seq"] == 2
    assert data["summary"] == {"upto_seq": 2, "text": "s", "tokens": 1, "created_at": T0.isoformat()}
    info = (await storage.contexts.list())[0]
    assert json.loads(json.dumps(info.to_dict())) == {"id": "j:1", "component": "j", "message_count": 2,
                                                      "tokens": 8, "last_activity": T0.isoformat()}
