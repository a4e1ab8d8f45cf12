"""The history cache's bounds: it never holds more than its stored messages and characters allow, drops the least
recently read histories first, and never keeps a history it cannot trust (no incarnation) or cannot hold."""

from __future__ import annotations

from rhetor.storage.history_cache import HistoryCache
from rhetor.types import Turn


def rows(first: int, n: int, text: str = "xx", tokens: int = 1) -> tuple[Turn, ...]:
    return tuple(Turn.of("user", text, tokens, seq) for seq in range(first, first + n))


def test_least_recently_read_histories_go_first_when_messages_run_over() -> None:
    cache = HistoryCache(min_messages=1, max_messages=10, max_chars=1_000)
    cache.put("a", "i-a", 0, 4, rows(1, 4))
    cache.put("b", "i-b", 0, 4, rows(1, 4))
    assert cache.get("a") is not None  # read again: now the most recent
    cache.put("a", "i-a", 0, 4, rows(1, 4), cache.get("a"))
    cache.put("c", "i-c", 0, 4, rows(1, 4))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.stored_messages == 8


def test_characters_are_bounded_too_and_extending_counts_only_the_new_messages() -> None:
    cache = HistoryCache(min_messages=1, max_messages=1_000, max_chars=100)
    put = cache.put("a", "i-a", 0, 2, rows(1, 2, "x" * 20, tokens=7))
    first = cache.get("a")
    assert first is put and first.chars == 40 and first.tokens == 14
    grown_messages = first.extended(0, rows(3, 1, "y" * 30, tokens=9))
    assert grown_messages[:2] == first.messages and grown_messages[0] is first.messages[0]  # the same Turns, shared
    cache.put("a", "i-a", 0, 3, grown_messages, first)
    grown = cache.get("a")
    assert grown is not None and grown.chars == 70 and grown.tokens == 23 and grown.last_seq == 3
    cache.put("b", "i-b", 0, 1, rows(1, 1, "z" * 40))  # 110 characters in all: a goes
    assert cache.get("a") is None and cache.get("b") is not None


def test_a_history_not_kept_is_still_measured() -> None:
    """``put`` returns the history measured whether it keeps it or not: the storage reports its tokens either way."""
    cache = HistoryCache(min_messages=3)
    short = cache.put("s", "i-s", 0, 2, rows(1, 2, "abc", tokens=5))
    assert cache.get("s") is None and (short.chars, short.tokens, short.last_seq) == (6, 10, 2)


def test_a_newer_summary_drops_the_messages_it_covers() -> None:
    cache = HistoryCache(min_messages=1)
    cache.put("a", "i-a", 0, 4, rows(1, 4))
    entry = cache.get("a")
    assert entry is not None
    assert entry.usable_for("i-a", 2, 6) and not entry.usable_for("i-b", 2, 6) and not entry.usable_for("", 0, 4)
    assert not entry.usable_for("i-a", 0, 3)  # fewer messages than cached: not the history it extends
    assert [m.seq for m in entry.extended(2, rows(5, 2))] == [3, 4, 5, 6]
    cache.put("a", "i-a", 2, 6, entry.extended(2, rows(5, 2)), entry)
    # recounted: the summary dropped two messages
    assert (cache.get("a").chars, cache.get("a").tokens) == (8, 4)  # type: ignore[union-attr]


def test_histories_without_an_incarnation_or_beyond_the_bounds_are_not_kept() -> None:
    cache = HistoryCache(min_messages=2, max_messages=5, max_chars=50)
    cache.put("old-row", "", 0, 2, rows(1, 2))  # a context stored by a Rhetor without incarnations
    cache.put("long", "i-l", 0, 6, rows(1, 6))
    cache.put("wide", "i-w", 0, 2, rows(1, 2, "w" * 26))
    cache.put("short", "i-s", 0, 1, rows(1, 1))  # cheap to read whole: not worth memory
    assert len(cache) == 0 and cache.stored_messages == 0
    cache.put("ok", "i-o", 0, 2, rows(1, 2))
    assert len(cache) == 1
    cache.drop("ok")
    cache.drop("never-there")
    assert len(cache) == 0 and cache.stored_messages == 0
