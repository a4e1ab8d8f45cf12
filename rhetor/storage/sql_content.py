"""The content repositories of the SQL backends, written once over a small per-backend ``ContentTx``.

SQL is written with ``?`` placeholders (PostgreSQL's glue renumbers them) and formatted per ``Dialect``
for the few differences (JSON parameters, ``GREATEST``, row locks). Every method runs in one transaction
of its backend: SQLite's ``BEGIN IMMEDIATE`` (reads: a deferred ``BEGIN``, a WAL snapshot), PostgreSQL's
READ COMMITTED with the rows it depends on locked (reads: a read-only REPEATABLE READ snapshot). A
transaction that PostgreSQL aborts for a deadlock or serialization failure is retried from the start.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import starmap
from typing import Any, Protocol, TypeVar

from rhetor.storage.content_base import PromptRepository, TemplateRepository
from rhetor.storage.content_records import PromptRecord, TemplateRecord

__all__ = ["ContentHost", "ContentTx", "Dialect", "SqlPrompts", "SqlTemplates", "run"]

_R = TypeVar("_R")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL backends."""

    ts: Callable[[datetime], Any]
    """A datetime as the driver stores it."""
    parse_ts: Callable[[Any], datetime]
    """A stored timestamp as an aware datetime."""
    json: str
    """The placeholder of a JSON parameter (``?`` or ``?::jsonb``)."""
    greatest: str
    """The two-argument maximum function (``MAX`` or ``GREATEST``)."""
    for_update: str
    """Appended to a SELECT to lock its rows (empty where the whole database is locked already)."""

    def sql(self, text: str) -> str:
        return text.format(json=self.json, greatest=self.greatest, for_update=self.for_update)


class ContentTx(ABC):
    """One open transaction of a SQL backend."""

    @abstractmethod
    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        """The rows of a statement (a query, or a write with RETURNING)."""

    async def fetch_each(self, sql: str, params: Sequence[object], make: Callable[..., _V]) -> tuple[_V, ...]:
        """The rows of a query, each made into ``make(*row)`` (its columns in order). A backend that reads rows one
        at a time (SQLite) makes each value as its row comes, so a long read never holds every row at once."""
        return tuple(starmap(make, await self.fetch(sql, params)))

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a write; return how many rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run a write once per parameter row."""

    @abstractmethod
    async def lock(self, key: str) -> None:
        """Hold a lock named ``key`` until the transaction ends (no-op where writers are serialised anyway)."""


class ContentHost(Protocol):
    """What a SQL storage gives the content repositories."""

    dialect: Dialect
    retryable: tuple[type[BaseException], ...]
    attempts: int

    def content_tx(self, *, write: bool = True) -> AbstractAsyncContextManager[ContentTx]:
        """A transaction: ``write`` for one that changes data, else a consistent read-only snapshot."""
        ...

    async def run_content(self, op: Callable[[ContentTx], Awaitable[_R]], *, write: bool = True) -> _R:
        """``op`` in one transaction (see ``run``)."""
        ...


async def run(host: ContentHost, op: Callable[[ContentTx], Awaitable[_R]], *, write: bool = True) -> _R:
    """``op`` in one transaction of ``host``, retried from the start after a deadlock or serialization failure.

    ``op`` awaits nothing but the ``ContentTx`` it is given, so a backend may run it whole on its own thread
    (SQLite: one thread round trip per transaction instead of one per statement)."""
    return await host.run_content(op, write=write)


async def run_in_transactions(
    host: ContentHost, op: Callable[[ContentTx], Awaitable[_R]], *, write: bool = True
) -> _R:
    """The generic ``run_content``: ``op`` inside ``host.content_tx``, retried after a ``retryable`` error."""
    for attempt in range(1, host.attempts + 1):
        try:
            async with host.content_tx(write=write) as tx:
                return await op(tx)
        except host.retryable:
            if attempt == host.attempts:
                raise
    raise AssertionError("unreachable")


def now_or(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


_T_COLUMNS = "name, content, required, optional, description, metadata, created_at, updated_at"
_T_PUT = f"""
INSERT INTO templates ({_T_COLUMNS}) VALUES (?, ?, {{json}}, {{json}}, ?, {{json}}, ?, ?)
ON CONFLICT (name) DO UPDATE SET content = excluded.content, required = excluded.required,
    optional = excluded.optional, description = excluded.description, metadata = excluded.metadata,
    updated_at = excluded.updated_at
RETURNING created_at
"""  # noqa: S608 (constant columns)


class SqlTemplates(TemplateRepository):
    def __init__(self, host: ContentHost) -> None:
        self._h = host
        self._put = host.dialect.sql(_T_PUT)

    def _record(self, r: Mapping[str, Any]) -> TemplateRecord:
        parse = self._h.dialect.parse_ts
        return TemplateRecord(
            name=r["name"], content=r["content"], required=json.loads(r["required"]),
            optional=json.loads(r["optional"]), description=r["description"], metadata=json.loads(r["metadata"]),
            created_at=parse(r["created_at"]), updated_at=parse(r["updated_at"]),
        )

    async def put(self, template: TemplateRecord, *, now: datetime | None = None) -> TemplateRecord:
        at, ts = now_or(now), self._h.dialect.ts
        params = (template.name, template.content, dumps(list(template.required)), dumps(dict(template.optional)),
                  template.description, dumps(dict(template.metadata)), ts(at), ts(at))

        async def op(tx: ContentTx) -> TemplateRecord:
            rows = await tx.fetch(self._put, params)
            return TemplateRecord(
                name=template.name, content=template.content, required=list(template.required),
                optional=dict(template.optional), description=template.description,
                metadata=json.loads(params[5]), created_at=self._h.dialect.parse_ts(rows[0]["created_at"]),
                updated_at=at,
            )

        return await run(self._h, op)

    async def get(self, name: str) -> TemplateRecord | None:
        rows = await run(self._h, lambda tx: tx.fetch(f"SELECT {_T_COLUMNS} FROM templates WHERE name = ?", (name,)),  # noqa: S608
                         write=False)
        return next((self._record(r) for r in rows), None)

    async def list(self) -> list[TemplateRecord]:
        rows = await run(self._h, lambda tx: tx.fetch(f"SELECT {_T_COLUMNS} FROM templates ORDER BY name"),  # noqa: S608
                         write=False)
        return [self._record(r) for r in rows]

    async def delete(self, name: str) -> bool:
        return await run(self._h, lambda tx: tx.execute("DELETE FROM templates WHERE name = ?", (name,))) > 0


_P_COLUMNS = "id, component, name, content, description, tags, is_default, created_at, updated_at"
_P_PUT = f"""
INSERT INTO prompts ({_P_COLUMNS}) VALUES (?, ?, ?, ?, ?, {{json}}, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET component = excluded.component, name = excluded.name, content = excluded.content,
    description = excluded.description, tags = excluded.tags, is_default = excluded.is_default,
    updated_at = excluded.updated_at
RETURNING created_at
"""  # noqa: S608 (constant columns)
_P_CLEAR = ("UPDATE prompts SET is_default = FALSE, updated_at = ? "
            "WHERE component = ? AND is_default = TRUE AND id <> ?")
_P_SELECT = f"SELECT {_P_COLUMNS} FROM prompts"  # noqa: S608 (constant columns)
_P_ORDER = " ORDER BY component, name, id"


class SqlPrompts(PromptRepository):
    def __init__(self, host: ContentHost) -> None:
        self._h = host
        self._put = host.dialect.sql(_P_PUT)

    def _record(self, r: Mapping[str, Any]) -> PromptRecord:
        parse = self._h.dialect.parse_ts
        return PromptRecord(
            id=r["id"], component=r["component"], name=r["name"], content=r["content"],
            description=r["description"], tags=json.loads(r["tags"]), is_default=bool(r["is_default"]),
            created_at=parse(r["created_at"]), updated_at=parse(r["updated_at"]),
        )

    async def put(self, prompt: PromptRecord, *, now: datetime | None = None) -> PromptRecord:
        at, ts = now_or(now), self._h.dialect.ts
        pid, default = prompt.id or uuid.uuid4().hex, bool(prompt.is_default)
        params = (pid, prompt.component, prompt.name, prompt.content, prompt.description,
                  dumps(list(prompt.tags)), default, ts(at), ts(at))

        async def op(tx: ContentTx) -> PromptRecord:
            if default:
                # One default-setting transaction per component at a time; clear the others before the
                # upsert so the unique index (one default per component) holds after every statement.
                await tx.lock(f"rhetor.prompts.default:{prompt.component}")
                await tx.execute(_P_CLEAR, (ts(at), prompt.component, pid))
            rows = await tx.fetch(self._put, params)
            return PromptRecord(
                id=pid, component=prompt.component, name=prompt.name, content=prompt.content,
                description=prompt.description, tags=json.loads(params[5]), is_default=default,
                created_at=self._h.dialect.parse_ts(rows[0]["created_at"]), updated_at=at,
            )

        return await run(self._h, op)

    async def _select(self, where: str, params: Sequence[object]) -> list[PromptRecord]:
        rows = await run(self._h, lambda tx: tx.fetch(_P_SELECT + where + _P_ORDER, params), write=False)
        return [self._record(r) for r in rows]

    async def get(self, prompt_id: str) -> PromptRecord | None:
        return next(iter(await self._select(" WHERE id = ?", (prompt_id,))), None)

    async def list(self, component: str | None = None) -> list[PromptRecord]:
        if component is None:
            return await self._select("", ())
        return await self._select(" WHERE component = ?", (component,))

    async def default_for(self, component: str) -> PromptRecord | None:
        found = await self._select(" WHERE component = ? AND is_default = TRUE", (component,))
        return next(iter(found), None)

    async def delete(self, prompt_id: str) -> bool:
        return await run(self._h, lambda tx: tx.execute("DELETE FROM prompts WHERE id = ?", (prompt_id,))) > 0
