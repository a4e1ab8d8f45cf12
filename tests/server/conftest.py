from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from rhetor.engine.engine import build_engine
from rhetor.server.app import create_app

SIM_DIR = Path(__file__).parent.parent / "fixtures" / "configs" / "sim"


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient]:
    app = create_app(build_engine(SIM_DIR, env={}))
    async with AsyncTestClient(app=app) as c:
        yield c


def sse_events(body: str) -> list[dict[str, Any]]:
    """Parse an SSE body the way the seeds' clients do: `data: {...}` lines."""
    events = []
    for block in body.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events
