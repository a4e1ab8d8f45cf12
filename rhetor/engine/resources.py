"""Process-wide resources shared by every engine and kept across config reloads: durable storage.

``RHETOR_DATABASE_URL`` chooses the backend (PostgreSQL for several replicas); without it, SQLite in
``RHETOR_DATA_DIR`` (default ``./data``). Storage starts on first use (or when the server starts) and is
closed by its owner: the server for its process, the engine for engines built without resources.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from rhetor.storage import Storage, open_storage

__all__ = ["Resources"]


class Resources:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._started = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Resources:
        env = os.environ if env is None else env
        return cls(open_storage(env.get("RHETOR_DATABASE_URL") or None, env.get("RHETOR_DATA_DIR") or "data"))

    @classmethod
    def memory(cls) -> Resources:
        return cls(open_storage("memory://", "."))

    async def ensure_started(self) -> None:
        if self._started:
            return
        async with self._lock:
            if not self._started:
                await self.storage.start()
                self._started = True

    async def close(self) -> None:
        async with self._lock:
            if self._started:
                await self.storage.close()
                self._started = False
