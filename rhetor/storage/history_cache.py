"""Recently read conversation histories, kept per storage so that continuing a conversation reads only what is new.

A conversation's history is read on every request that continues it, and reading it whole costs about 2 µs per
stored message on SQLite (20 ms at 10,000 messages). Messages are append-only within one *incarnation* of a context
(its row's random ``incarnation`` token, new when a deleted context is created again), and a context row's
``last_seq`` is the highest sequence number stored. So a history read in one snapshot as (incarnation, summary's
``upto_seq``, ``last_seq``, messages) stays true for every message up to that ``last_seq``: a later read that finds
the same incarnation, an ``upto_seq`` and a ``last_seq`` no lower, needs only the messages after the cached
``last_seq``. Every read still checks the context row and the summary in its own snapshot, so appends by other
processes or replicas, a new summary, a delete or an expiry are seen exactly as without the cache.

Only histories of at least ``min_messages`` messages are kept: a short one costs little to read whole, and keeping
every short conversation of a busy gateway would only grow the process. The rest is bounded by stored messages and
characters (least recently read contexts go first; a history larger than the bounds is not kept), which caps what the
cache can add to the process's memory at about 15 MB with the defaults. Only the event loop's thread touches it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from rhetor.types import Turn

__all__ = ["CachedHistory", "HistoryCache"]


@dataclass(frozen=True, slots=True)
class CachedHistory:
    incarnation: str
    upto_seq: int
    """The summary's ``upto_seq`` (0 without a summary): ``messages`` are those after it."""
    last_seq: int
    messages: tuple[Turn, ...]
    """As ``ContextHistory.messages``: the ``Turn`` values are made once, when read, and shared by later reads."""
    chars: int
    tokens: int
    """The sum of ``messages``' token counts (``ContextHistory.tokens``)."""

    def usable_for(self, incarnation: str, upto_seq: int, last_seq: int) -> bool:
        """Whether a snapshot with these values extends this history (else it must be read whole)."""
        return bool(incarnation) and incarnation == self.incarnation and upto_seq >= self.upto_seq \
            and last_seq >= self.last_seq

    def extended(self, upto_seq: int, new: tuple[Turn, ...]) -> tuple[Turn, ...]:
        """The messages after ``upto_seq``: the cached ones a newer summary does not cover, then ``new``."""
        kept = self.messages if upto_seq == self.upto_seq else tuple(
            m for m in self.messages if (m.seq or 0) > upto_seq)
        return kept + new if new else kept


class HistoryCache:
    """Context id → its last read history, least recently read first out."""

    def __init__(self, *, min_messages: int = 32, max_messages: int = 50_000, max_chars: int = 4_000_000) -> None:
        self.min_messages = min_messages
        self.max_messages = max_messages
        self.max_chars = max_chars
        self._items: OrderedDict[str, CachedHistory] = OrderedDict()
        self._messages = 0
        self._chars = 0

    def get(self, context_id: str) -> CachedHistory | None:
        return self._items.get(context_id)

    def put(self, context_id: str, incarnation: str, upto_seq: int, last_seq: int, messages: tuple[Turn, ...],
            previous: CachedHistory | None = None) -> CachedHistory:
        """Keep a history read in one snapshot, and return it measured (tokens; characters too unless it has more
        messages than the cache ever keeps) whether it was kept or not. ``previous`` is the entry it extended: its
        messages are measured already, so only the new ones are."""
        self.drop(context_id)
        if previous is not None and previous.messages and messages[:1] == previous.messages[:1]:
            new = messages[len(previous.messages):]
            chars = previous.chars + sum(len(m.content) for m in new)
            tokens = previous.tokens + sum(m.tokens for m in new)
        else:
            chars = sum(len(m.content) for m in messages) if len(messages) <= self.max_messages else 0
            tokens = sum(m.tokens for m in messages)
        history = CachedHistory(incarnation, upto_seq, last_seq, messages, chars, tokens)
        if not incarnation or not self.min_messages <= len(messages) <= self.max_messages or chars > self.max_chars:
            return history
        self._items[context_id] = history
        self._messages += len(messages)
        self._chars += chars
        while self._messages > self.max_messages or self._chars > self.max_chars:
            _, oldest = self._items.popitem(last=False)
            self._messages -= len(oldest.messages)
            self._chars -= oldest.chars
        return history

    def drop(self, context_id: str) -> None:
        old = self._items.pop(context_id, None)
        if old is not None:
            self._messages -= len(old.messages)
            self._chars -= old.chars

    def __len__(self) -> int:
        return len(self._items)

    @property
    def stored_messages(self) -> int:
        return self._messages
