"""A separate OS process using the content repositories, for the multi-process tests.

    python -m tests.storage.content_worker append URL DATA_DIR GO_FILE TAG N
        starts the storage (racing the other worker to migrate a new database), prints "ready", waits for
        GO_FILE, appends N user+assistant pairs to the context ``proc:shared`` (5 at a time, 0-10 ms apart;
        contents "TAG-i user" / "TAG-i assistant"), prints {"seqs": {"TAG-i": [seq, seq]}}.
    python -m tests.storage.content_worker defaults URL DATA_DIR GO_FILE TAG N
        likewise, saves N default prompts of the component ``race``; prints {"ids": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from rhetor.storage import PromptRecord, Storage, StoredMessageIn, open_storage

NOW = datetime(2031, 3, 3, 10, 0, tzinfo=UTC)
CONTEXT = "proc:shared"


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _race(url: str, data_dir: str, go: str, n: int, one: Callable[[Storage, int], Awaitable[object]]) -> list:
    async with open_storage(url, data_dir) as storage:  # racing the other worker to migrate the new database
        say("ready")
        while not Path(go).exists():
            await asyncio.sleep(0.002)
        gate = asyncio.Semaphore(5)

        async def gated(i: int) -> object:
            async with gate:
                await asyncio.sleep(random.random() / 100)
                return await one(storage, i)

        return await asyncio.gather(*(gated(i) for i in range(n)))


async def append(url: str, data_dir: str, go: str, tag: str, n: int) -> None:
    async def one(storage: Storage, i: int) -> tuple[str, list[int]]:
        msgs = [StoredMessageIn("user", f"{tag}-{i} user", 2), StoredMessageIn("assistant", f"{tag}-{i} assistant", 3)]
        stored = await storage.contexts.append(CONTEXT, msgs, now=NOW)
        return f"{tag}-{i}", [m.seq for m in stored]

    say({"seqs": dict(await _race(url, data_dir, go, n, one))})


async def defaults(url: str, data_dir: str, go: str, tag: str, n: int) -> None:
    async def one(storage: Storage, i: int) -> str:
        rec = PromptRecord(id="", component="race", name=f"{tag}-{i}", content="c", is_default=True)
        return (await storage.prompts.put(rec, now=NOW)).id

    say({"ids": await _race(url, data_dir, go, n, one)})


def main(argv: list[str]) -> None:
    mode, url, data_dir, go, tag, n = argv
    modes = {"append": append, "defaults": defaults}
    if mode not in modes:
        raise SystemExit(f"unknown mode {mode!r}")
    asyncio.run(modes[mode](url, data_dir, go, tag, int(n)))


if __name__ == "__main__":
    main(sys.argv[1:])
