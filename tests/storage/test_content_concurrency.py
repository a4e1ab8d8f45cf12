"""Concurrent appends never interleave or lose a request's pair of messages: in one process (every backend)
and across OS processes sharing one SQLite file or one PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rhetor.storage import Storage, StoredMessage, StoredMessageIn, migrations, open_storage
from tests.storage import content_worker

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def request_pair(key: str) -> list[StoredMessageIn]:
    return [StoredMessageIn("user", f"{key} user", 2), StoredMessageIn("assistant", f"{key} assistant", 3)]


def pair_keys(messages: Sequence[StoredMessage]) -> list[str]:
    """The request key of each pair, checking that seqs run 1..n without gaps and every pair is adjacent."""
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    assert len(messages) % 2 == 0
    keys = []
    for user, assistant in zip(messages[0::2], messages[1::2], strict=True):
        key, word = user.content.rsplit(" ", 1)
        assert (user.role, word) == ("user", "user"), user
        assert (assistant.role, assistant.content) == ("assistant", f"{key} assistant"), (user, assistant)
        keys.append(key)
    return keys


async def test_fifty_concurrent_pairs_on_one_context_stay_whole(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.contexts.append("chat:busy", request_pair(f"req-{n}"), now=NOW) for n in range(50))
    )
    ctx = await storage.contexts.load("chat:busy")
    assert ctx is not None and len(ctx.messages) == 100
    keys = pair_keys(ctx.messages)
    assert sorted(keys) == sorted(f"req-{n}" for n in range(50))
    for n, stored in enumerate(results):  # what each append returned is what was stored
        first = stored[0].seq
        assert [m.seq for m in stored] == [first, first + 1] and first % 2 == 1
        assert ctx.messages[first - 1 : first + 1] == stored and keys[first // 2] == f"req-{n}"
    (info,) = await storage.contexts.list()
    assert (info.message_count, info.tokens) == (100, 250)


async def test_loads_during_appends_see_whole_pairs_only(storage: Storage) -> None:
    snapshots: list[int] = []

    async def reader() -> None:
        for _ in range(15):
            ctx = await storage.contexts.load("chat:live")
            if ctx is not None:
                pair_keys(ctx.messages)  # never half a pair, never a gap
                snapshots.append(len(ctx.messages))
            await asyncio.sleep(0)

    appends = [storage.contexts.append("chat:live", request_pair(f"r{n}"), now=NOW) for n in range(40)]
    await asyncio.gather(*appends, reader(), reader())
    ctx = await storage.contexts.load("chat:live")
    assert ctx is not None and len(pair_keys(ctx.messages)) == 40 and snapshots


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.storage.content_worker", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def read_json(proc: asyncio.subprocess.Process) -> Any:
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)
    if not line:
        await proc.wait()
        raise AssertionError(f"worker exited {proc.returncode}: {(await proc.stderr.read()).decode()}")
    return json.loads(line)


async def race(mode: str, url: str, tmp_path: Path, n: int) -> list[Any]:
    """Two workers started together (racing to migrate the new database), then released together."""
    go = tmp_path / f"go-{mode}"
    procs = [await spawn(mode, url, str(tmp_path), str(go), tag, str(n)) for tag in ("A", "B")]
    for p in procs:
        assert await read_json(p) == "ready"
    go.touch()
    results = [await read_json(p) for p in procs]
    for p in procs:
        assert await asyncio.wait_for(p.wait(), TIMEOUT_S) == 0
    return results


async def test_two_processes_append_whole_pairs_to_one_context(durable_url: str, tmp_path: Path) -> None:
    results = await race("append", durable_url, tmp_path, 60)
    async with open_storage(durable_url, tmp_path) as storage:
        ctx = await storage.contexts.load(content_worker.CONTEXT)
        assert ctx is not None and len(ctx.messages) == 240
        keys = pair_keys(ctx.messages)
        reported = {k: v for r in results for k, v in r["seqs"].items()}
        assert sorted(keys) == sorted(reported) and len(reported) == 120
        for key, (first, second) in reported.items():  # each process got exactly what it stored
            assert second == first + 1 and keys[(first - 1) // 2] == key
        tags = [k.split("-")[0] for k in keys]
        assert sum(a != b for a, b in zip(tags, tags[1:], strict=False)) >= 2  # the processes really interleaved
        assert await storage.schema_version() == len(migrations.load(storage.kind))  # every migration, once


async def test_two_processes_saving_defaults_leave_exactly_one(durable_url: str, tmp_path: Path) -> None:
    results = await race("defaults", durable_url, tmp_path, 40)
    async with open_storage(durable_url, tmp_path) as storage:
        prompts = await storage.prompts.list("race")
        assert len(prompts) == 80 and {p.id for p in prompts} == {i for r in results for i in r["ids"]}
        assert len([p for p in prompts if p.is_default]) == 1
        default = await storage.prompts.default_for("race")
        assert default is not None and default.is_default
