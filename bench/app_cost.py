"""The HTTP layer's own cost per request, in process: the Litestar app called as an ASGI app (no uvicorn, no
sockets) for ``POST /message`` against ``engine.run`` alone, on the same engine (shipped config, offline provider,
memory storage, one request at a time). The difference is what Litestar, the middleware (request id, metrics),
the body's validation and the response's encoding cost around the pipeline.

Run: .venv/bin/python bench/app_cost.py [requests]   (pin it, e.g. ``taskset -c 0``, for steady figures)
The access log is off (``rhetor serve`` hands its lines to a listener thread; here they would go to stderr).

``--full [concurrency]``: the served request path but uvicorn: bench/config (budgets enforced), SQLite storage in a
temporary directory, the OpenAI provider against ``bench/fake_upstream.py`` (started on the other core), that many
requests in flight. Prints the process's CPU (every thread: the loop, SQLite's) per ``POST /message``, for ten
windows of 1,000 requests: the minimum is the steadiest figure on a shared machine. Compare two revisions with it
run alternately (``git stash`` between), or with ``bench/ab.py`` for the served figure.

Measured on 2026-11-22 (the machine of the `cadadb3` run in RESULTS.md), pinned, uvloop, 5,000 requests, three
rounds: app 286–302 µs against engine 139–145 µs CPU per request: 140–163 µs per request around the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rhetor.engine.engine import build_engine
from rhetor.engine.resources import Resources
from rhetor.server.app import create_app
from rhetor.server.run import _tune_for_serving
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

REPO = Path(__file__).resolve().parents[1]
TEXT = "Write one sentence about benchmarks."


def _scope(body: bytes) -> dict[str, Any]:
    """The ASGI scope uvicorn would hand the app for ``POST /message`` with ``body``."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/message", "raw_path": b"/message", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8300)}


@contextlib.asynccontextmanager
async def _started(app: Any) -> AsyncIterator[None]:
    """The app between its lifespan's startup and shutdown, its access log off (``rhetor serve`` hands its lines
    to a listener thread; here they would go to stderr)."""
    lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})

    async def ignore(_: Any) -> None:
        return None

    life = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan.get, ignore))
    await asyncio.sleep(0.2)
    logging.getLogger("rhetor.access").disabled = True
    try:
        yield
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.CancelledError):
            await life


async def measure(n: int, rounds: int = 3) -> list[tuple[float, float]]:
    resources = Resources.from_env({"RHETOR_DATABASE_URL": "memory://"})
    engine = build_engine(REPO, env={}, resources=resources)
    app = create_app(engine)
    body = json.dumps({"message": TEXT, "streaming": False, "task_type": "chat", "component": "bench"}).encode()
    scope = _scope(body)
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

    out = []
    async with _started(app):
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
    return out


async def measure_full(concurrency: int, windows: int = 10, per_window: int = 1000) -> list[tuple[float, float]]:
    """CPU per request (all threads, user + system) and its system part, in µs, per window."""
    import tempfile  # noqa: PLC0415

    from bench import procs  # noqa: PLC0415

    os.sched_setaffinity(0, {procs.GATEWAY_CORE})
    work = Path(tempfile.mkdtemp(prefix="app-cost-"))
    py, _ = procs.bench_python()
    port = procs.free_port(procs.UPSTREAM_DEFAULT_PORT)
    upstream = procs.upstream(py, port, work).start()
    try:
        config = procs.prepare_config(work / "config", port, procs.source(None))
        env = {"BENCH_OPENAI_API_KEY": "bench-not-a-key", "BENCH_ANTHROPIC_API_KEY": "bench-not-a-key"}
        resources = Resources.from_env({"RHETOR_DATA_DIR": str(work / "data"),
                                        "RHETOR_DATABASE_URL": os.environ.get("APP_COST_DATABASE_URL", "")})
        engine = build_engine(config, env=env, resources=resources)
        app = create_app(engine)
        task = {"task_type": os.environ["APP_COST_TASK"]} if os.environ.get("APP_COST_TASK") else {}
        body = json.dumps({"message": TEXT, "streaming": False, **task}).encode()
        scope = _scope(body)
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def loop(count: int) -> None:
            for _ in range(count):
                await app(dict(scope), receive, send)

        out = []
        try:
            async with _started(app):
                logging.getLogger("httpx2").setLevel(logging.WARNING)  # as `rhetor serve` sets it
                _tune_for_serving()  # the collector's settings of `rhetor serve`
                await asyncio.gather(*(loop(per_window // concurrency) for _ in range(concurrency)))  # warm-up
                if os.environ.get("APP_COST_CALLGRIND"):  # run under valgrind --tool=callgrind --instr-atstart=no
                    return await _count_instructions(loop, concurrency, per_window, statuses)
                if os.environ.get("APP_COST_PROFILE"):  # cProfile of 2,000 requests, sorted by that column
                    here = str(Path(__file__).resolve().parent)  # bench/profile.py would hide the stdlib's `profile`
                    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
                    import cProfile  # noqa: PLC0415
                    import pstats  # noqa: PLC0415

                    profile = cProfile.Profile()
                    profile.runcall(lambda: None)
                    profile.enable()
                    await asyncio.gather(*(loop(2000 // concurrency) for _ in range(concurrency)))
                    profile.disable()
                    pstats.Stats(profile).sort_stats(os.environ["APP_COST_PROFILE"]).print_stats(80)
                    return [(0.0, 0.0)]
                for _ in range(windows):
                    statuses.clear()
                    start = os.times()
                    await asyncio.gather(*(loop(per_window // concurrency) for _ in range(concurrency)))
                    end = os.times()
                    user, system = ((b - a) / len(statuses) * 1e6 for a, b in zip(start[:2], end[:2], strict=True))
                    out.append((user + system, system))
                    if set(statuses) != {200}:
                        raise SystemExit(f"POST /message answered {sorted(set(statuses))}")
        finally:
            await resources.storage.close()
        return out
    finally:
        upstream.stop()


async def _count_instructions(
    loop: Any, concurrency: int, n: int, statuses: list[int]
) -> list[tuple[float, float]]:
    """Instructions per request, counted by callgrind over ``n`` requests only (instrumentation switched on and
    off around them with ``callgrind_control``): repeatable to a fraction of a percent, whatever the machine does."""
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    statuses.clear()
    control = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run([control, "--instr=on", str(os.getpid())], check=True, capture_output=True)  # noqa: S603
    await asyncio.gather(*(loop(n // concurrency) for _ in range(concurrency)))
    subprocess.run([control, "--instr=off", str(os.getpid())], check=True, capture_output=True)  # noqa: S603
    print(f"callgrind: {len(statuses)} requests counted; Ir / requests is the figure", flush=True)
    return [(float(len(statuses)), 0.0)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--full":
        import statistics  # noqa: PLC0415

        import uvloop  # noqa: PLC0415

        sys.path.insert(0, str(REPO))
        c = int(sys.argv[2]) if len(sys.argv) > 2 else 16
        windows = uvloop.run(measure_full(c))
        cpu = [total for total, _ in windows]
        print(f"POST /message, c={c}, {os.environ.get('APP_COST_DATABASE_URL') or 'SQLite'}, "
              f"{os.environ.get('APP_COST_TASK') or 'OpenAI provider'}: min {min(cpu):.1f} µs, median "
              f"{statistics.median(cpu):.1f} µs CPU per request, {statistics.median(s for _, s in windows):.1f} µs "
              f"of it system time (all threads; windows: {' '.join(f'{x:.0f}' for x in cpu)})")
        return
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
