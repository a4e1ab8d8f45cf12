"""The HTTP layer's own cost per request, in process: the Litestar app called as an ASGI app (no uvicorn, no
sockets) for ``POST /message`` against ``engine.run`` alone, on the same engine (shipped config, offline provider,
memory storage, one request at a time). The difference is what Litestar, the middleware (request id, metrics),
the body's validation and the response's encoding cost around the pipeline.

Run: .venv/bin/python bench/app_cost.py [requests]   (pin it, e.g. ``taskset -c 0``, for steady figures)
The access log is off (``rhetor serve`` hands its lines to a listener thread; here they would go to stderr).

Measured on 2026-11-22 (the machine of the `cadadb3` run in RESULTS.md), pinned, uvloop, 5,000 requests, three
rounds: app 286–302 µs against engine 139–145 µs CPU per request: 140–163 µs per request around the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rhetor.engine.engine import build_engine
from rhetor.engine.resources import Resources
from rhetor.server.app import create_app
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

REPO = Path(__file__).resolve().parents[1]
TEXT = "Write one sentence about benchmarks."


async def measure(n: int, rounds: int = 3) -> list[tuple[float, float]]:
    resources = Resources.from_env({"RHETOR_DATABASE_URL": "memory://"})
    engine = build_engine(REPO, env={}, resources=resources)
    app = create_app(engine)
    body = json.dumps({"message": TEXT, "streaming": False, "task_type": "chat", "component": "bench"}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/message", "raw_path": b"/message", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8300)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def via_app() -> None:
        await app(dict(scope), receive, send)

    options = RequestOptions(task_type="chat", component="bench")

    async def via_engine() -> None:
        await engine.run(Request.from_text(TEXT, options))

    lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})

    async def ignore(_: Any) -> None:
        return None

    life = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan.get, ignore))
    await asyncio.sleep(0.2)
    logging.getLogger("rhetor.access").disabled = True
    out = []
    try:
        for _ in range(rounds):
            cpu = []
            for call in (via_app, via_engine):
                for _ in range(300):
                    await call()
                sent.clear()
                start = time.process_time()
                for _ in range(n):
                    await call()
                cpu.append((time.process_time() - start) / n * 1e6)
                if call is via_app and sent[0]["status"] != 200:
                    raise SystemExit(f"POST /message answered {sent[0]['status']}: {sent[1:2]}")
            out.append((cpu[0], cpu[1]))
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.CancelledError):
            await life
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    try:
        import uvloop  # noqa: PLC0415 - the loop `rhetor serve` runs on, when installed

        rounds = uvloop.run(measure(n))
    except ImportError:
        rounds = asyncio.run(measure(n))
    for app_us, engine_us in rounds:
        print(f"app {app_us:6.1f} µs, engine alone {engine_us:6.1f} µs CPU per request: "
              f"{app_us - engine_us:6.1f} µs around the pipeline")


if __name__ == "__main__":
    main()
