"""The budget end to end, against `rhetor serve` subprocesses on real storage:

- two servers sharing ONE ledger (an SQLite file; a PostgreSQL database) admit exactly what the daily
  limit affords when more requests race for it than it allows, split across both;
- ``kill -9`` of a server with requests in flight loses no settled spend, and the killed requests'
  reservations stop blocking the budget once their TTL has passed and the restarted server reconciled;
- a stream the client abandons after its first chunk is charged for what was produced, not for nothing
  and not for the whole answer, and its reservation is closed.

Config tests/fixtures/configs/budget_http: offline simulated models priced $0.01 per output token (input
free), max_output_tokens 100, so each request reserves exactly $1.00 and an answer costs less (~$0.22).
Model ``slow`` (task ``slow``) waits 3 s before answering: every racing request reserves before any settles.

PostgreSQL: a fresh database per test (tests/storage/conftest.py); unreachable PostgreSQL skips those tests,
except when CI is true, where they fail.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rhetor.tokens import estimate_tokens
from tests.e2e.serving import Served, serve
from tests.fakes import FakeOpenAI, Fault
from tests.storage.conftest import pg_available, pg_url  # noqa: F401  (fixtures)

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "budget_http"
RESERVATION = 1.0
SLOW_S = 3.0
TIMEOUT = httpx.Timeout(30.0)
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

pytestmark = pytest.mark.e2e


def make_config(tmp_path: Path, budgets: str, *, ttl_s: float | None = None, extra_models: str = "",
                extra_tasks: str = "") -> Path:
    """A copy of the budget_http config with these budgets (and the budget stage's reservation TTL)."""
    config = tmp_path / "cfg"
    shutil.copytree(CONFIG, config)
    (config / "budgets.yaml").write_text(budgets)
    if ttl_s is not None:
        pipeline = config / "pipelines" / "default.yaml"
        text = pipeline.read_text()
        budget_stage = "  - id: budget\n    type: budget\n"
        assert text.count(budget_stage) == 1
        pipeline.write_text(text.replace(budget_stage, f"{budget_stage}    with: {{reservation_ttl_s: {ttl_s}}}\n"))
    if extra_models:
        with (config / "providers.yaml").open("a") as f:
            f.write(extra_models)
    if extra_tasks:
        with (config / "tasks.yaml").open("a") as f:
            f.write(extra_tasks)
    return config


@pytest.fixture(params=BACKENDS)
def storage_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment that points servers at one shared ledger: an SQLite file or a fresh PostgreSQL DB."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {"RHETOR_DATA_DIR": str(data_dir)}  # always: nothing may land in the working directory
    if request.param == "postgres":
        env["RHETOR_DATABASE_URL"] = str(request.getfixturevalue("pg_url"))
    return env


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    """Servers a test starts; each is stopped (SIGTERM, then SIGKILL) at the end whatever happens."""
    started: list[Served] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=20)


def start(servers: list[Served], config: Path, log: Path, env: dict[str, str]) -> Served:
    served = serve(config, log, env)
    servers.append(served)
    return served


async def global_daily(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    r = await client.get(f"{base}/budget")
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    window: dict[str, Any] = report["scopes"]["global"]["windows"]["daily"]
    return {**window, "requests": report["usage"]["daily"]["total"]["requests"]}


async def wait_for(client: httpx.AsyncClient, base: str, what: str, check: Any, deadline_s: float) -> dict[str, Any]:
    """Poll GET /budget until ``check(daily)`` holds (bounded by ``deadline_s``)."""
    deadline = time.monotonic() + deadline_s
    while True:
        d = await global_daily(client, base)
        if check(d):
            return d
        assert time.monotonic() < deadline, f"{what} not reached within {deadline_s} s: {d}"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------- two servers, one ledger, one limit


@pytest.mark.parametrize(("allowed", "fired"), [(4, 10)])
async def test_two_servers_sharing_a_ledger_admit_exactly_what_the_limit_affords(
        storage_env: dict[str, str], tmp_path: Path, servers: list[Served], allowed: int, fired: int) -> None:
    config = make_config(tmp_path, f"policy: enforce\nlimits: {{daily: {allowed * RESERVATION}}}\n")
    a = start(servers, config, tmp_path / "a.log", storage_env)
    b = start(servers, config, tmp_path / "b.log", storage_env)
    bases = [a.base, b.base]
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post(f"{bases[i % 2]}/message", json={"message": f"race {i}", "task_type": "slow"})

        started = time.monotonic()
        racing = [asyncio.create_task(one(i)) for i in range(fired)]
        # While every admitted request waits on its slow model: the limit is fully reserved, never exceeded,
        # and both servers read the same ledger.
        during = [await wait_for(client, base, "all reservations", lambda d: d["reserved_usd"] == allowed,
                                 SLOW_S) for base in bases]
        responses = await asyncio.gather(*racing)
        elapsed = time.monotonic() - started
        after = [await global_daily(client, base) for base in bases]

    for d in during:
        assert (d["spent_usd"], d["reserved_usd"]) == (0.0, allowed * RESERVATION)
        assert d["spent_usd"] + d["reserved_usd"] <= d["limit_usd"]
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [200] * allowed + [402] * (fired - allowed), codes
    # Each server got more requests than the limit allows (5 > 4): had they not shared one ledger, each
    # would have admitted 4 on its own. Which server wins the race is up to the storage's locking.
    assert fired // 2 > allowed
    for r in responses:
        if r.status_code == 402:
            error = r.json()["error"]
            assert error["code"] == "budget-exceeded"
            assert (error["details"]["scope"], error["details"]["window"]) == ("global", "daily")
            assert error["details"]["spent_usd"] + error["details"]["reserved_usd"] + RESERVATION > allowed
    ok = [r.json() for r in responses if r.status_code == 200]
    spent = round(sum(body["cost"]["usd"] for body in ok), 9)
    assert all(0 < body["cost"]["usd"] < RESERVATION for body in ok)
    assert elapsed >= SLOW_S  # the admitted ones really waited on the slow model
    for d in after:  # both servers agree: the settled answers' cost, nothing reserved, within the limit
        assert d["spent_usd"] == pytest.approx(spent, abs=1e-9)
        assert (d["reserved_usd"], d["requests"]) == (0.0, allowed)
        assert d["spent_usd"] + d["reserved_usd"] <= d["limit_usd"]


# ----------------------------------------------------------------------------- kill -9, then restart


async def test_kill_9_keeps_completed_spend_and_expired_reservations_do_not_leak(
        storage_env: dict[str, str], tmp_path: Path, servers: list[Served]) -> None:
    ttl_s = 2.0
    config = make_config(tmp_path, "policy: enforce\nlimits: {daily: 50}\n", ttl_s=ttl_s)
    first = start(servers, config, tmp_path / "first.log", storage_env)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        completed = []
        for i in range(3):
            r = await client.post(f"{first.base}/message", json={"message": f"completed {i}", "component": "ergon"})
            assert r.status_code == 200, r.text
            completed.append(r.json()["cost"]["usd"])
        spent = round(sum(completed), 9)
        assert spent > 0

        in_flight = [asyncio.create_task(client.post(f"{first.base}/message",
                                                     json={"message": f"in flight {i}", "task_type": "slow"}))
                     for i in range(3)]
        held = await wait_for(client, first.base, "the in-flight reservations", lambda d: d["reserved_usd"] == 3.0,
                              SLOW_S)
        reserved_at = time.monotonic()
        assert held["spent_usd"] == pytest.approx(spent, abs=1e-9)
        first.proc.kill()  # SIGKILL: no finalizer, no settlement, no release
        assert first.proc.wait(timeout=20) == -9
        for outcome in await asyncio.gather(*in_flight, return_exceptions=True):
            assert isinstance(outcome, httpx.TransportError), outcome  # the killed requests never answered

        # Restart once the reservations' TTL has passed: the start-up reconcile expires them.
        await asyncio.sleep(max(0.0, reserved_at + ttl_s + 0.5 - time.monotonic()))
        second = start(servers, config, tmp_path / "second.log", storage_env)
        after = await wait_for(client, second.base, "reconciled reservations", lambda d: d["reserved_usd"] == 0.0,
                               10.0)  # well before the next periodic reconcile (60 s)
        assert after["spent_usd"] == pytest.approx(spent, abs=1e-9)  # exactly the completed requests' cost
        assert after["requests"] == 3  # the killed ones were never settled, so never counted
        assert after["remaining_usd"] == pytest.approx(50 - spent, abs=1e-9)
        report = (await client.get(f"{second.base}/budget", params={"component": "ergon"})).json()
        assert report["scopes"]["component:ergon"]["windows"]["daily"]["spent_usd"] == pytest.approx(spent, abs=1e-9)
        assert report["usage"]["all_time"]["total"]["spend_usd"] == pytest.approx(spent, abs=1e-9)
        # The budget is usable again: a new request is admitted and settles on top of the surviving spend.
        r = await client.post(f"{second.base}/message", json={"message": "after the crash"})
        assert r.status_code == 200
        final = await global_daily(client, second.base)
        assert final["spent_usd"] == pytest.approx(spent + r.json()["cost"]["usd"], abs=1e-9)
        assert final["reserved_usd"] == 0.0
    assert "expired reservations reconciled" in second.log()
    second.stop()


async def test_before_its_ttl_a_killed_requests_reservation_still_blocks_the_budget(
        tmp_path: Path, servers: list[Served]) -> None:
    """The other side of the TTL (SQLite): a restart before the TTL keeps the reservation, and enforces it."""
    env = {"RHETOR_DATA_DIR": str(tmp_path / "data")}
    config = make_config(tmp_path, "policy: enforce\nlimits: {daily: 1.5}\n", ttl_s=30)
    first = start(servers, config, tmp_path / "first.log", env)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        pending = asyncio.create_task(client.post(f"{first.base}/message", json={"message": "x", "task_type": "slow"}))
        await wait_for(client, first.base, "the reservation", lambda d: d["reserved_usd"] == 1.0, SLOW_S)
        first.proc.kill()
        first.proc.wait(timeout=20)
        assert isinstance((await asyncio.gather(pending, return_exceptions=True))[0], httpx.TransportError)
        second = start(servers, config, tmp_path / "second.log", env)
        d = await global_daily(client, second.base)
        assert (d["spent_usd"], d["reserved_usd"]) == (0.0, 1.0)
        r = await client.post(f"{second.base}/message", json={"message": "does not fit beside it"})
        assert r.status_code == 402 and r.json()["error"]["details"]["reserved_usd"] == 1.0
        second.stop()


# ----------------------------------------------------------------------- a stream the client abandons


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible upstream on loopback whose streams can be slowed between chunks: the simulated
    provider only waits before its first chunk, so it cannot show a stream still running when abandoned."""
    fake = FakeOpenAI()
    fake.chunks = [f"word{i:02d} " for i in range(20)]  # 140 characters: 35 tokens by Rhetor's estimate
    fake.prompt_tokens = 9
    fake.completion_tokens = estimate_tokens(fake.text)  # the provider's own count agrees with the estimate
    fake.cached_tokens = 0
    fake.start()
    yield fake
    fake.stop()


async def test_an_abandoned_stream_is_charged_for_what_was_produced(tmp_path: Path, servers: list[Served],
                                                                   upstream: FakeOpenAI) -> None:
    config = make_config(
        tmp_path, "policy: enforce\nlimits: {daily: 10}\n",
        extra_models=("  streamy: {provider: vendor, id: gpt-fake, context_window: 10000, max_output_tokens: 100,"
                      " price: {input: 0, output: 10000}}\n"),
        extra_tasks="  abandon: {chain: [streamy]}\n")
    with (config / "providers.yaml").open() as f:
        text = f.read()
    (config / "providers.yaml").write_text(text.replace(
        "providers:\n", f"providers:\n  vendor: {{kind: openai, base_url: \"{upstream.url}/v1\"}}\n", 1))
    served = start(servers, config, tmp_path / "serve.log", {"RHETOR_DATA_DIR": str(tmp_path / "data")})
    body = {"message": "tell me twenty words", "task_type": "abandon"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        # The whole answer, read to the end: what it costs.
        async with client.stream("POST", f"{served.base}/stream", json=body) as r:
            events = [json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: ")]
        final = events[-1]
        assert (final["done"], final["finished"], final["model"]) == (True, True, "streamy"), final
        assert final["message"] == upstream.text
        full_cost = final["cost"]["usd"]
        assert full_cost == pytest.approx(upstream.completion_tokens * 0.01)
        before = await global_daily(client, served.base)
        assert before["spent_usd"] == pytest.approx(full_cost, abs=1e-9)

        # The same answer, 0.5 s between chunks (10 s in all); the client hangs up after the first chunk.
        upstream.fail_next(Fault(chunk_delay=0.5))
        hung_up = time.monotonic()
        async with client.stream("POST", f"{served.base}/stream", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    first = json.loads(line[6:])
                    break
        assert first == {"chunk": "word00 ", "done": False, "context": None}
        after = await wait_for(client, served.base, "the abandoned stream's settlement",
                               lambda d: d["requests"] == 2 and d["reserved_usd"] == 0.0, 5.0)
        settled_in = time.monotonic() - hung_up
    charged = round(after["spent_usd"] - before["spent_usd"], 9)
    assert 0 < charged < full_cost, (charged, full_cost)
    # Roughly what had been produced when the client left (a chunk or two at 0.5 s apart), far from all 20.
    assert charged <= estimate_tokens("".join(upstream.chunks[:4])) * 0.01, charged
    assert settled_in < 5.0  # settled when the client left, not when the upstream would have finished (10 s)
    assert len(upstream.requests) == 2  # one call each: the abandoned one was not retried elsewhere
