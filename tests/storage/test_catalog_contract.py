"""The ``TemplateRepository`` and ``PromptRepository`` contracts, run against every backend."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from rhetor.storage import PromptRecord, Storage, TemplateRecord
from rhetor.storage.sql_ledger import SqlStorage
from rhetor.templates import TemplateDef

T0 = datetime(2026, 5, 4, 10, 30, 15, 123456, tzinfo=UTC)
T1 = T0 + timedelta(hours=1, microseconds=1)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)

METADATA = {"owner": "team-ü", "nested": {"list": [1, 2.5, None, True], "empty": {}}, "n": 3}


def template(name: str, content: str = "Hello {who}{suffix}", **kw: object) -> TemplateRecord:
    fields: dict = {"required": ["who"], "optional": {"suffix": "!"}, "description": f"about {name}",
                    "metadata": METADATA} | kw
    return TemplateRecord(name=name, content=content, **fields)


async def test_template_put_get_and_json_round_trip(storage: Storage) -> None:
    stored = await storage.templates.put(template("greet", created_at=LONG_AGO, updated_at=LONG_AGO), now=T0)
    assert (stored.created_at, stored.updated_at) == (T0, T0)  # timestamps given by the caller are ignored
    got = await storage.templates.get("greet")
    assert got == stored
    assert got is not None and got.metadata == METADATA and got.optional == {"suffix": "!"}
    assert got.required == ["who"]
    data = json.loads(json.dumps(got.to_dict()))
    assert data["created_at"] == T0.isoformat() and data["metadata"] == METADATA
    assert await storage.templates.get("missing") is None


async def test_template_put_replaces_by_name_and_keeps_created_at(storage: Storage) -> None:
    await storage.templates.put(template("greet"), now=T0)
    new = await storage.templates.put(
        template("greet", "Bye {who}", required=["who"], optional={}, description="", metadata={}), now=T1
    )
    assert (new.created_at, new.updated_at) == (T0, T1)
    got = await storage.templates.get("greet")
    assert got == TemplateRecord("greet", "Bye {who}", ["who"], {}, "", {}, T0, T1)
    assert len(await storage.templates.list()) == 1


async def test_templates_list_by_name_and_delete(storage: Storage) -> None:
    for name in ("b", "c", "a", "B"):
        await storage.templates.put(template(name), now=T0)
    assert [t.name for t in await storage.templates.list()] == ["B", "a", "b", "c"]  # byte order
    assert await storage.templates.delete("b") is True
    assert await storage.templates.delete("b") is False
    assert [t.name for t in await storage.templates.list()] == ["B", "a", "c"]


async def test_a_template_def_fits_a_record(storage: Storage) -> None:
    d = TemplateDef.create("t", "{a} and {b}", optional={"b": "x"}, description="d", metadata={"k": [1]})
    rec = TemplateRecord(d.name, d.content, list(d.required), dict(d.optional), d.description, dict(d.metadata))
    got = await storage.templates.put(rec, now=T0)
    back = TemplateDef(got.name, got.content, tuple(got.required), got.optional, got.description, got.metadata)
    assert back == d


def prompt(component: str, name: str, *, default: bool = False, pid: str = "", **kw: object) -> PromptRecord:
    return PromptRecord(id=pid, component=component, name=name, content=f"You are {name}.", is_default=default,
                        **kw)  # type: ignore[arg-type]


async def test_prompt_put_assigns_an_id_and_upserts_by_id(storage: Storage) -> None:
    made = await storage.prompts.put(prompt("search", "terse", tags=["a", "ü", "b"], description="d",
                                            created_at=LONG_AGO), now=T0)
    assert made.id and (made.created_at, made.updated_at) == (T0, T0) and made.tags == ["a", "ü", "b"]
    other = await storage.prompts.put(prompt("search", "terse"), now=T0)
    assert other.id != made.id  # every empty id gets a fresh one
    assert await storage.prompts.get(made.id) == made
    edited = await storage.prompts.put(prompt("search", "verbose", pid=made.id, tags=[]), now=T1)
    assert (edited.id, edited.created_at, edited.updated_at, edited.name, edited.tags) == (made.id, T0, T1,
                                                                                           "verbose", [])
    assert await storage.prompts.get(made.id) == edited
    chosen = await storage.prompts.put(prompt("chat", "mine", pid="my-id"), now=T0)
    assert chosen.id == "my-id" and await storage.prompts.get("my-id") == chosen
    assert await storage.prompts.get("missing") is None
    assert json.loads(json.dumps(edited.to_dict()))["updated_at"] == T1.isoformat()


async def test_prompts_list_by_component_then_name(storage: Storage) -> None:
    for comp, name, pid in [("b", "x", "1"), ("a", "z", "2"), ("a", "y", "4"), ("a", "y", "3")]:
        await storage.prompts.put(prompt(comp, name, pid=pid), now=T0)
    assert [p.id for p in await storage.prompts.list()] == ["3", "4", "2", "1"]
    assert [p.id for p in await storage.prompts.list("a")] == ["3", "4", "2"]
    assert await storage.prompts.list("none") == []
    assert await storage.prompts.delete("4") is True and await storage.prompts.delete("4") is False
    assert [p.id for p in await storage.prompts.list("a")] == ["3", "2"]


async def test_one_default_per_component(storage: Storage) -> None:
    repo = storage.prompts
    assert await repo.default_for("search") is None
    first = await repo.put(prompt("search", "first", default=True), now=T0)
    plain = await repo.put(prompt("search", "plain"), now=T0)
    other = await repo.put(prompt("chat", "other", default=True), now=T0)
    assert await repo.default_for("search") == first
    second = await repo.put(prompt("search", "second", default=True), now=T1)
    assert await repo.default_for("search") == second
    old = await repo.get(first.id)
    assert old is not None and old.is_default is False and old.updated_at == T1  # cleared in the same step
    assert await repo.default_for("chat") == other  # other components are untouched
    assert (await repo.get(plain.id)) == plain
    again = await repo.put(prompt("search", "second v2", default=True, pid=second.id), now=T1)
    assert await repo.default_for("search") == again  # re-saving the default keeps it the default
    assert [p.id for p in await repo.list("search") if p.is_default] == [second.id]
    await repo.put(prompt("search", "not any more", pid=second.id), now=T1)
    assert await repo.default_for("search") is None
    await repo.put(prompt("search", "first", default=True, pid=first.id), now=T1)
    assert await repo.delete(first.id) is True
    assert await repo.default_for("search") is None


async def test_concurrent_defaults_leave_exactly_one(storage: Storage) -> None:
    made = await asyncio.gather(*(storage.prompts.put(prompt("race", f"p{i}", default=True), now=T0)
                                  for i in range(20)))
    defaults = [p for p in await storage.prompts.list("race") if p.is_default]
    assert len(defaults) == 1 and defaults[0].id in {p.id for p in made}
    assert len(await storage.prompts.list("race")) == 20


async def test_the_database_itself_refuses_a_second_default(make_durable_storage: Callable[[], Storage]) -> None:
    async with make_durable_storage() as storage:
        assert isinstance(storage, SqlStorage)
        await _refuses_a_second_default(storage)


async def _refuses_a_second_default(storage: SqlStorage) -> None:
    """The partial unique index holds even for a writer bypassing the repository."""
    await storage.prompts.put(prompt("search", "first", default=True), now=T0)
    sql = ("INSERT INTO prompts (id, component, name, content, is_default, created_at, updated_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
    ts = storage.dialect.ts(T0)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        async with storage.content_tx() as tx:
            await tx.execute(sql, ("sneaky", "search", "n", "c", True, ts, ts))
    async with storage.content_tx() as tx:  # a second non-default is fine
        await tx.execute(sql, ("fine", "search", "n", "c", False, ts, ts))
    assert len(await storage.prompts.list("search")) == 2
