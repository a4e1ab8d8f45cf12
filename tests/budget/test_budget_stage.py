"""Budgets in the pipeline: reserve before any provider call, settle to real usage after — under
concurrency, streaming, failures and clients that hang up. Ledger in memory (the ledger's own
contract suite covers SQLite and PostgreSQL).

Config tests/fixtures/configs/budget: model `m` costs exactly $1.00 per answer (100 output tokens at
$10,000 per million, input free) and that is also what is reserved; `free` costs $0; daily limit $50.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from rhetor.budget import BudgetLedger
from rhetor.engine.engine import Engine, build_engine
from rhetor.errors import AllTargetsFailedError, BudgetExceededError, MidStreamError, OverloadedError
from rhetor.providers.base import ProviderRequest, ProviderResult
from rhetor.stages.base import Request
from rhetor.types import BudgetDecision, RequestOptions, Usage
from tests.fakes.scripted import ScriptedProvider, scripted_factory

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "budget"
ONE_DOLLAR = Usage(input_tokens=40, output_tokens=100)  # 100 output tokens of `m` = $1.00


def make(tmp_path: Path, budgets: str | None = None, script: dict[str, list[Any]] | None = None,
         usage: Usage = ONE_DOLLAR) -> tuple[Engine, dict[str, ScriptedProvider]]:
    config = tmp_path / "cfg"
    shutil.copytree(CONFIG, config)
    if budgets is not None:
        (config / "budgets.yaml").write_text(budgets)
    providers: dict[str, ScriptedProvider] = {}
    engine = build_engine(config, env={}, provider_factory=scripted_factory(script or {}, providers, usage))
    return engine, providers


async def totals(engine: Engine) -> dict[str, float]:
    ledger = BudgetLedger.from_config(engine.resources.storage.ledger, engine.config.budgets)
    daily = (await ledger.report(None, {"global": engine.config.budgets.limits})).to_dict()["scopes"]["global"]
    return {k: daily["windows"]["daily"][k] for k in ("spent_usd", "reserved_usd")}


def decision(result: Any) -> BudgetDecision:
    return next(v for s in result.outputs.values() for v in s.values() if isinstance(v, BudgetDecision))


async def test_200_concurrent_requests_against_a_limit_for_50(tmp_path: Path) -> None:
    engine, providers = make(tmp_path)
    outcomes = await asyncio.gather(*(engine.run(Request.from_text(f"q{i}")) for i in range(200)),
                                    return_exceptions=True)
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert (len(ok), len(refused)) == (50, 150)
    assert len(providers["up"].calls) == 50  # refused requests never reached a provider
    assert await totals(engine) == {"spent_usd": 50.0, "reserved_usd": 0.0}
    assert refused[0].status == 402 and refused[0].details["window"] == "daily"
    await engine.aclose()


async def test_warn_policy_proceeds_and_warns(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, "policy: warn\nlimits: {daily: 1.5}\nwarn_thresholds: [0.5]\n")
    first = await engine.run(Request.from_text("one"))
    assert decision(first).warnings == ("global daily budget is 50% used",)
    second = await engine.run(Request.from_text("two"))
    assert decision(second).warnings == (
        "global daily budget of $1.5 exceeded: spent $1, reserved $0, this request up to $1",)
    third = await engine.run(Request.from_text("three"))  # the 50% threshold does not fire again
    assert all("%" not in w for w in decision(third).warnings)
    assert (await totals(engine))["spent_usd"] == 3.0
    await engine.aclose()


async def test_downgrade_policy_routes_to_what_fits(tmp_path: Path) -> None:
    engine, providers = make(tmp_path, "policy: downgrade\nlimits: {daily: 1.5}\n")
    first = await engine.run(Request.from_text("one", RequestOptions(task_type="fallback")))
    assert first.completion.model == "m"
    second = await engine.run(Request.from_text("two", RequestOptions(task_type="fallback")))
    assert second.completion.model == "free"
    assert decision(second).downgraded_from == ("m", "free")
    budget_trace = next(t for t in second.trace if t.id == "budget")
    assert budget_trace.decision == "chain [free]" and "downgraded from [m, free]" in budget_trace.why
    assert [m for m, _ in providers["up"].calls] == ["m", "free"]
    await engine.aclose()


async def test_ignore_policy_records_spend_but_never_refuses(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, "policy: ignore\nlimits: {daily: 0.5}\nwarn_thresholds: [0.5]\n")
    for i in range(3):
        result = await engine.run(Request.from_text(f"q{i}"))
        assert decision(result).warnings == ()
    assert (await totals(engine))["spent_usd"] == 3.0
    await engine.aclose()


async def test_component_limits_apply_with_the_global_one(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, "policy: enforce\nlimits: {daily: 50}\ncomponents:\n  ergon: {limits: {daily: 2}}\n")
    ergon = RequestOptions(component="ergon")
    await engine.run(Request.from_text("a", ergon))
    await engine.run(Request.from_text("b", ergon))
    with pytest.raises(BudgetExceededError) as info:
        await engine.run(Request.from_text("c", ergon))
    assert info.value.details["scope"] == "component:ergon"
    await engine.run(Request.from_text("d", RequestOptions(component="apollo")))  # other components unaffected
    await engine.aclose()


async def test_streamed_calls_are_charged_the_providers_usage(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, usage=Usage(input_tokens=40, output_tokens=37))
    items = [i async for i in engine.stream(Request.from_text("stream", RequestOptions(stream=True)))]
    assert items[-1].completion.cost_usd == pytest.approx(0.37)
    assert await totals(engine) == {"spent_usd": 0.37, "reserved_usd": 0.0}
    await engine.aclose()


async def test_a_stream_the_client_abandons_is_charged_for_what_was_produced(tmp_path: Path) -> None:
    engine, providers = make(tmp_path, script={"m": [("slow", 5.0)]})  # 5 s between chunks
    stream = engine.stream(Request.from_text("go", RequestOptions(stream=True)))
    first = await anext(stream)
    assert first == "answer"
    await stream.aclose()  # the client hangs up after one chunk
    await asyncio.sleep(0.05)
    spent = await totals(engine)
    # Charged for the chunk produced ("answer" ≈ 2 tokens at $0.01), not $0, not the whole reservation.
    assert spent == {"spent_usd": 0.02, "reserved_usd": 0.0}
    await engine.aclose()


async def test_a_mid_stream_failure_is_charged_and_the_reservation_closed(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, script={"m": [("cut", 2)]})
    with pytest.raises(MidStreamError) as info:
        async for _ in engine.stream(Request.from_text("go", RequestOptions(stream=True))):
            pass
    assert info.value.details["cost_usd"] == pytest.approx(0.02)  # the cut reported 2 output tokens
    assert await totals(engine) == {"spent_usd": 0.02, "reserved_usd": 0.0}
    await engine.aclose()


async def test_a_failed_request_releases_its_reservation(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, script={"m": [OverloadedError("down", provider="up", model="m")]})
    with pytest.raises(AllTargetsFailedError):
        await engine.run(Request.from_text("x"))
    assert await totals(engine) == {"spent_usd": 0.0, "reserved_usd": 0.0}
    await engine.aclose()


async def test_the_trace_says_what_was_reserved_and_why(tmp_path: Path) -> None:
    engine, _ = make(tmp_path)
    result = await engine.run(Request.from_text("x", RequestOptions(component="ergon")))
    trace = next(t for t in result.trace if t.id == "budget")
    assert trace.why == "policy enforce; reserved $1 on global, component:ergon"
    assert trace.details["estimates_usd"] == {"m": 1.0}
    await engine.aclose()


async def test_a_stream_that_completes_before_the_client_leaves_is_charged_in_full(tmp_path: Path) -> None:
    engine, _ = make(tmp_path)  # the scripted provider produces the whole answer at once
    stream = engine.stream(Request.from_text("go", RequestOptions(stream=True)))
    await anext(stream)
    await asyncio.sleep(0.05)  # meanwhile the provider finished: it was paid for the whole answer
    await stream.aclose()
    assert await totals(engine) == {"spent_usd": 1.0, "reserved_usd": 0.0}
    await engine.aclose()


@pytest.mark.parametrize("spends", [True, False], ids=["settle", "release"])
async def test_a_run_cancelled_while_its_budget_settles_still_settles(tmp_path: Path, spends: bool) -> None:
    """The settlement (or release) runs as a run finalizer, which the engine runs where nothing cancels it: the
    caller cancelled twice while the ledger is busy changes nothing (the stage relies on that: ``in_shield``)."""
    engine, providers = make(tmp_path)
    await engine.run(Request.from_text("warm up"))  # builds the ledger; $1 spent
    provider, called, gate = providers["up"], asyncio.Event(), asyncio.Event()
    answer = provider.complete

    async def gated(request: ProviderRequest) -> ProviderResult:
        called.set()
        await gate.wait()
        if not spends:
            raise OverloadedError("down", provider="up", model="m")
        return await answer(request)

    provider.complete = gated  # type: ignore[method-assign]
    run = asyncio.ensure_future(engine.run(Request.from_text("x")))
    await asyncio.wait_for(called.wait(), 5)  # reserved; the call is under way
    async with engine.resources.storage.ledger._lock:  # noqa: SLF001 - the memory ledger's: the settlement waits
        gate.set()
        for _ in range(50):  # the call ends and the run's finalizer waits for the ledger
            await asyncio.sleep(0)
        assert not run.done()
        for _ in range(2):
            run.cancel()
            await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await run
    for _ in range(20):
        await asyncio.sleep(0)
    assert await totals(engine) == {"spent_usd": 2.0 if spends else 1.0, "reserved_usd": 0.0}
    await engine.aclose()
