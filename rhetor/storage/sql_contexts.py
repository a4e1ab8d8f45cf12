"""The ``ContextRepository`` of the SQL backends (tables ``contexts``, ``context_messages``, ``context_summaries``).

Sequence numbers come from the context row's ``last_seq`` counter, advanced by the same upsert that
creates the context: on PostgreSQL that upsert locks the row until commit, so concurrent appends to one
context take turns and each gets a contiguous range (on SQLite, ``BEGIN IMMEDIATE`` serialises writers).
Deleting a context row cascades to its messages and summary; a concurrent append either commits first
(and keeps the context alive: the delete re-checks its condition) or recreates the context afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rhetor.storage.content_base import ContextRepository
from rhetor.storage.content_records import (
    ContextHistory,
    ContextInfo,
    ContextRecord,
    StoredMessage,
    StoredMessageIn,
    Summary,
    check_count,
    component_of,
)
from rhetor.storage.history_cache import HistoryCache
from rhetor.storage.sql_content import ContentHost, ContentTx, now_or, run
from rhetor.types import Turn

__all__ = ["SqlContexts"]

_UPSERT = """
INSERT INTO contexts (id, component, created_at, last_activity, last_seq, incarnation) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET last_seq = contexts.last_seq + excluded.last_seq,
    last_activity = {greatest}(contexts.last_activity, excluded.last_activity),
    component = COALESCE(contexts.component, excluded.component)
RETURNING last_seq
"""
_INSERT_MESSAGE = (
    "INSERT INTO context_messages (context_id, seq, role, content, tokens, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_LIST = """
SELECT c.id, c.component, c.last_activity, COUNT(m.seq) AS message_count, COALESCE(SUM(m.tokens), 0) AS tokens
FROM (SELECT id, component, last_activity FROM contexts {where}
      ORDER BY last_activity DESC, id LIMIT ? OFFSET ?) AS c
LEFT JOIN context_messages AS m ON m.context_id = c.id
GROUP BY c.id, c.component, c.last_activity
ORDER BY c.last_activity DESC, c.id
"""
_LIST_ALL = _LIST.format(where="")
_LIST_COMPONENT = _LIST.format(where="WHERE component = ?")
_LOCK_CONTEXT = "SELECT last_seq FROM contexts WHERE id = ?{for_update}"
_CONTEXT_ROW = "SELECT component, last_activity, last_seq, incarnation FROM contexts WHERE id = ?"
_SUMMARY = "SELECT upto_seq, text, tokens, created_at FROM context_summaries WHERE context_id = ?"
_HISTORY = "SELECT role, content, tokens, seq FROM context_messages WHERE context_id = ? AND seq > ? ORDER BY seq"
_PUT_SUMMARY = """
INSERT INTO context_summaries (context_id, upto_seq, text, tokens, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (context_id) DO UPDATE SET upto_seq = excluded.upto_seq, text = excluded.text,
    tokens = excluded.tokens, created_at = excluded.created_at
WHERE context_summaries.upto_seq <= excluded.upto_seq
RETURNING context_id
"""


class SqlContexts(ContextRepository):
    def __init__(self, host: ContentHost) -> None:
        self._h = host
        self._d = host.dialect
        self._upsert = self._d.sql(_UPSERT)
        self._lock_context = self._d.sql(_LOCK_CONTEXT)
        self._cache = HistoryCache()

    async def append(
        self,
        context_id: str,
        messages: Sequence[StoredMessageIn],
        *,
        component: str | None = None,
        now: datetime | None = None,
    ) -> list[StoredMessage]:
        at = now_or(now)
        msgs = list(messages)
        ts = self._d.ts(at)
        comp = component or component_of(context_id)
        incarnation = uuid.uuid4().hex  # kept only if this append creates the context

        async def op(tx: ContentTx) -> list[StoredMessage]:
            rows = await tx.fetch(self._upsert, (context_id, comp, ts, ts, len(msgs), incarnation))
            first = int(rows[0]["last_seq"]) - len(msgs) + 1
            stored = [StoredMessage(first + i, m.role, m.content, m.tokens, at) for i, m in enumerate(msgs)]
            if stored:
                await tx.executemany(
                    _INSERT_MESSAGE, [(context_id, s.seq, s.role, s.content, s.tokens, ts) for s in stored]
                )
            return stored

        return await run(self._h, op)

    async def load(self, context_id: str) -> ContextRecord | None:
        async def op(tx: ContentTx) -> tuple[Any, ...] | None:
            ctx = await tx.fetch("SELECT component, created_at, last_activity FROM contexts WHERE id = ?",
                                 (context_id,))
            if not ctx:
                return None
            messages = await tx.fetch(
                "SELECT seq, role, content, tokens, created_at FROM context_messages WHERE context_id = ? "
                "ORDER BY seq",
                (context_id,),
            )
            summary = await tx.fetch(_SUMMARY, (context_id,))
            return ctx[0], messages, summary

        found = await run(self._h, op, write=False)
        if found is None:
            return None
        ctx, messages, summary = found
        parse = self._d.parse_ts
        return ContextRecord(
            id=context_id,
            component=ctx["component"],
            created_at=parse(ctx["created_at"]),
            last_activity=parse(ctx["last_activity"]),
            messages=[self._message(r) for r in messages],
            summary=self._summary(summary),
        )

    async def history(self, context_id: str) -> ContextHistory | None:
        """Three reads in one snapshot, the messages as ``Turn`` values (made on the storage's side). With the context's
        history cached (``history_cache``), only the messages stored since are read and made."""
        cached = self._cache.get(context_id)

        async def op(tx: ContentTx) -> tuple[Any, ...] | None:
            ctx = await tx.fetch(_CONTEXT_ROW, (context_id,))
            if not ctx:
                return None
            row = ctx[0]
            summary = await tx.fetch(_SUMMARY, (context_id,))
            upto = int(summary[0]["upto_seq"]) if summary else 0
            last_seq, incarnation = int(row["last_seq"]), row["incarnation"]
            base = cached if cached is not None and cached.usable_for(incarnation, upto, last_seq) else None
            after = upto if base is None else base.last_seq
            rows = await tx.fetch_each(_HISTORY, (context_id, after), Turn.of) if last_seq > after else ()
            return row, summary, upto, last_seq, incarnation, base, rows

        found = await run(self._h, op, write=False)
        if found is None:
            self._cache.drop(context_id)
            return None
        ctx, summary, upto, last_seq, incarnation, base, rows = found
        messages = rows if base is None else base.extended(upto, rows)
        kept = self._cache.put(context_id, incarnation, upto, last_seq, messages, base)
        return ContextHistory(ctx["component"], self._d.parse_ts(ctx["last_activity"]), self._summary(summary),
                              messages, kept.tokens)

    def _summary(self, rows: Sequence[Mapping[str, Any]]) -> Summary | None:
        parse = self._d.parse_ts
        return next((Summary(int(s["upto_seq"]), s["text"], int(s["tokens"]), parse(s["created_at"])) for s in rows),
                    None)

    def _message(self, r: Mapping[str, Any]) -> StoredMessage:
        return StoredMessage(int(r["seq"]), r["role"], r["content"], int(r["tokens"]),
                             self._d.parse_ts(r["created_at"]))

    async def list(self, *, component: str | None = None, limit: int = 100, offset: int = 0) -> list[ContextInfo]:
        if component is None:
            sql, params = _LIST_ALL, (limit, offset)
        else:
            sql, params = _LIST_COMPONENT, (component, limit, offset)
        rows = await run(self._h, lambda tx: tx.fetch(sql, params), write=False)
        return [
            ContextInfo(r["id"], r["component"], int(r["message_count"]), int(r["tokens"]),
                        self._d.parse_ts(r["last_activity"]))
            for r in rows
        ]

    async def delete(self, context_id: str) -> bool:
        self._cache.drop(context_id)
        return await run(self._h, lambda tx: tx.execute("DELETE FROM contexts WHERE id = ?", (context_id,))) > 0

    async def put_summary(
        self, context_id: str, *, upto_seq: int, text: str, tokens: int, now: datetime | None = None
    ) -> bool:
        check_count("upto_seq", upto_seq)
        check_count("tokens", tokens)
        params = (context_id, upto_seq, text, tokens, self._d.ts(now_or(now)))

        async def op(tx: ContentTx) -> bool:
            if not await tx.fetch(self._lock_context, (context_id,)):  # locked: no delete can slip in between
                return False
            return bool(await tx.fetch(_PUT_SUMMARY, params))

        return await run(self._h, op)

    async def expire(self, *, before: datetime, component: str | None = None) -> int:
        sql, params = "DELETE FROM contexts WHERE last_activity < ?", (self._d.ts(before),)
        if component is not None:
            sql, params = sql + " AND component = ?", (*params, component)
        return await run(self._h, lambda tx: tx.execute(sql, params))
