"""The budget over HTTP, in-process: ``GET /budget`` (and ``/api/rhetor/budget/usage``), ``POST /estimate``,
and the budget policies as every generation surface shows them (``/message``, ``/stream``,
``/v1/chat/completions``, ``/ws``).

Config tests/fixtures/configs/budget_http (ledger in memory): model ``m`` is the offline simulated provider
priced at $0.01 per output token (input free), so an answer costs exactly $0.01 x its output tokens (one
per four characters of the answer) and the reservation is max_output_tokens (100) x $0.01 = $1.00; model
``free`` costs $0 (task ``chat``). Policy enforce, global daily limit $3, component ``ergon`` daily $2.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from rhetor.engine.engine import build_engine
from rhetor.server.app import create_app
from rhetor.tokens import estimate_messages_tokens, estimate_tokens
from rhetor.types import Message
from tests.server.conftest import sse_events

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "budget_http"
PRICE_PER_OUTPUT_TOKEN = 0.01
RESERVATION = 1.0  # 100 max output tokens x $0.01; input is free
TIMEOUT = 5
MAX_REQUESTS = 40  # every "spend until refused" loop stops here at the latest

Client = AsyncTestClient[Any]
MakeClient = Callable[..., Any]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[MakeClient]:
    """``await make_client(budgets_yaml=None)``: a client over a fresh copy of the config (ledger in memory)."""
    clients: list[Client] = []

    async def make(budgets: str | None = None) -> Client:
        config = tmp_path / f"cfg{len(clients)}"
        shutil.copytree(CONFIG, config)
        if budgets is not None:
            (config / "budgets.yaml").write_text(budgets)
        client: Client = AsyncTestClient(app=create_app(build_engine(config, env={})))
        await client.__aenter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


def expected_cost(answer: str) -> float:
    """What the simulated provider's answer costs at $0.01 per output token (input free)."""
    return round(estimate_tokens(answer) * PRICE_PER_OUTPUT_TOKEN, 9)


async def ask(client: Client, message: str, **fields: Any) -> dict[str, Any]:
    r = await client.post("/message", json={"message": message, **fields})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def spend_until_refused(client: Client, **fields: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """POST /message until the budget refuses; the answers, then the refusal's body (bounded)."""
    answers = []
    for i in range(MAX_REQUESTS):
        r = await client.post("/message", json={"message": f"q{i}", **fields})
        if r.status_code == 402:
            return answers, r.json()
        assert r.status_code == 200, r.text
        answers.append(r.json())
    raise AssertionError(f"the budget never refused a request in {MAX_REQUESTS} tries")


def daily(report: dict[str, Any], scope: str = "global") -> dict[str, Any]:
    window: dict[str, Any] = report["scopes"][scope]["windows"]["daily"]
    return window


def assert_refusal(body: dict[str, Any], scope: str = "global", window: str = "daily") -> None:
    error = body["error"]
    assert error["code"] == "budget-exceeded", body
    assert error["type"] == "insufficient_quota"
    assert (error["details"]["scope"], error["details"]["window"]) == (scope, window)
    assert error["details"]["requested_usd"] == RESERVATION
    assert f"{scope} {window} limit" in error["message"]


# ------------------------------------------------------------------------------------ GET /budget


async def test_budget_reports_limits_balances_and_usage_by_every_dimension(client: Client) -> None:
    answers = [
        await ask(client, "first question", component="ergon", task_type="code"),
        await ask(client, "a second, longer question", component="ergon", task_type="code"),
        await ask(client, "no component here"),  # task type default, no component
        await ask(client, "offline and free", component="apollo", task_type="chat"),  # model `free`: $0
    ]
    for a in answers:  # each answer's cost is its usage x the model's price
        price = 0.0 if a["model"] == "free" else PRICE_PER_OUTPUT_TOKEN
        assert a["usage"]["output_tokens"] == estimate_tokens(a["message"])
        assert a["cost"]["usd"] == pytest.approx(a["usage"]["output_tokens"] * price)
        assert a["budget"]["policy"] == "enforce"
    assert [a["model"] for a in answers] == ["m", "m", "m", "free"]
    assert answers[3]["cost"]["usd"] == 0.0 and answers[0]["cost"]["usd"] == expected_cost(answers[0]["message"])
    spent = round(sum(a["cost"]["usd"] for a in answers), 9)
    ergon_spent = round(answers[0]["cost"]["usd"] + answers[1]["cost"]["usd"], 9)

    r = await client.get("/budget")
    assert r.status_code == 200
    report = r.json()
    assert set(report["scopes"]) == {"global", "component:ergon"}  # configured scopes only, without ?component=
    assert report["policies"] == {"global": "enforce", "component:ergon": "enforce"}
    assert report["warn_thresholds"] == [0.8]
    g = daily(report)
    assert (g["limit_usd"], g["reserved_usd"]) == (3.0, 0.0)
    assert g["spent_usd"] == pytest.approx(spent, abs=1e-9)
    assert g["remaining_usd"] == pytest.approx(3.0 - spent, abs=1e-9)
    for window in ("weekly", "monthly"):  # no limit there: remaining is None, spend still counted
        w = report["scopes"]["global"]["windows"][window]
        assert (w["limit_usd"], w["remaining_usd"]) == (0.0, None)
        assert w["spent_usd"] == pytest.approx(spent, abs=1e-9)
    e = daily(report, "component:ergon")
    assert (e["limit_usd"], e["reserved_usd"]) == (2.0, 0.0)
    assert e["spent_usd"] == pytest.approx(ergon_spent, abs=1e-9)
    assert e["remaining_usd"] == pytest.approx(2.0 - ergon_spent, abs=1e-9)

    usage = report["usage"]
    assert set(usage) == {"daily", "weekly", "monthly", "all_time"}
    day = usage["daily"]

    def stats(group: list[dict[str, Any]]) -> dict[str, Any]:
        return {"spend_usd": pytest.approx(sum(a["cost"]["usd"] for a in group), abs=1e-9), "requests": len(group),
                "input_tokens": sum(a["usage"]["input_tokens"] for a in group),
                "output_tokens": sum(a["usage"]["output_tokens"] for a in group)}

    assert day["total"] == stats(answers)
    assert day["by_model"] == {"free": stats(answers[3:]), "m": stats(answers[:3])}
    assert day["by_provider"] == {"up": stats(answers)}
    assert day["by_component"] == {"apollo": stats(answers[3:]), "ergon": stats(answers[:2]),
                                   "unknown": stats(answers[2:3])}
    assert day["by_task_type"] == {"chat": stats(answers[3:]), "code": stats(answers[:2]),
                                   "default": stats(answers[2:3])}
    # The free, offline call costs $0 and is still counted, with its tokens.
    assert day["by_model"]["free"]["requests"] == 1 and day["by_model"]["free"]["output_tokens"] > 0
    assert usage["all_time"]["total"] == day["total"] == usage["weekly"]["total"] == usage["monthly"]["total"]
    assert answers[2]["usage"]["input_tokens"] == estimate_messages_tokens([Message("user", "no component here")])


async def test_component_query_adds_that_scope_and_the_usage_endpoint_says_the_same(client: Client) -> None:
    a = await ask(client, "from apollo", component="apollo")
    await ask(client, "from nobody")
    r = await client.get("/budget", params={"component": "apollo"})
    report = r.json()
    assert set(report["scopes"]) == {"global", "component:ergon", "component:apollo"}
    assert report["policies"]["component:apollo"] == "enforce"
    apollo = daily(report, "component:apollo")
    # apollo has no limit of its own: only its own spend, and no remaining.
    assert (apollo["limit_usd"], apollo["remaining_usd"], apollo["reserved_usd"]) == (0.0, None, 0.0)
    assert apollo["spent_usd"] == pytest.approx(a["cost"]["usd"], abs=1e-9)
    assert daily(report, "component:ergon")["spent_usd"] == 0.0

    usage = (await client.get("/api/rhetor/budget/usage", params={"component": "apollo"})).json()
    assert usage.pop("generated_at") and report.pop("generated_at")
    assert usage == report
    plain = (await client.get("/api/rhetor/budget/usage")).json()
    assert "component:apollo" not in plain["scopes"]


# ---------------------------------------------------------------------------------- POST /estimate


async def test_estimate_states_cost_tokens_and_whether_it_fits_until_the_budget_is_spent(client: Client) -> None:
    message = "How much would this cost?"
    prompt = (len(message) + 2) // 3 + 4  # the conservative estimate: one token per three characters + framing
    r = await client.post("/estimate", json={"message": message})
    assert r.status_code == 200
    e = r.json()
    assert (e["model"], e["chain"], e["policy"], e["tokenizer"]) == ("m", ["m"], "enforce", "approx")
    assert (e["prompt_tokens"], e["completion_tokens"], e["total_tokens"]) == (prompt, 100, prompt + 100)
    assert e["estimated_cost"] == e["worst_case_cost"] == RESERVATION
    assert e["estimates_usd"] == {"m": RESERVATION}
    assert e["under_budget"] is True
    small = (await client.post("/estimate", json={"message": message, "max_tokens": 10})).json()
    assert (small["completion_tokens"], small["worst_case_cost"]) == (10, pytest.approx(0.1))
    before = (await client.get("/budget")).json()
    assert daily(before)["spent_usd"] == 0.0 and daily(before)["reserved_usd"] == 0.0  # estimating spends nothing

    answers, refusal = await spend_until_refused(client)
    spent = round(sum(a["cost"]["usd"] for a in answers), 9)
    # Admitted while spent + $1 fitted in $3: exactly as many as the answers' own costs allow.
    assert spent + RESERVATION > 3.0 >= spent - answers[-1]["cost"]["usd"] + RESERVATION
    assert_refusal(refusal)
    after = (await client.post("/estimate", json={"message": message})).json()
    assert after["under_budget"] is False
    assert (await client.post("/estimate", json={"message": message, "task_type": "chat"})).json()[
        "under_budget"] is True  # the free model still fits
    assert (await client.post("/estimate", json={"message": message, "max_tokens": 10})).json()[
        "under_budget"] is (spent + 0.1 <= 3.0)
    assert daily((await client.get("/budget")).json())["spent_usd"] == pytest.approx(spent, abs=1e-9)


async def test_estimate_counts_only_the_limits_the_request_counts_against(client: Client) -> None:
    answers, _ = await spend_until_refused(client, component="ergon")  # ergon's $2 runs out before the global $3
    assert 3.0 - sum(a["cost"]["usd"] for a in answers) >= RESERVATION  # the global $3 still has room for $1
    assert (await client.post("/estimate", json={"message": "x", "component": "ergon"})).json()["under_budget"] is False
    without = (await client.post("/estimate", json={"message": "x"})).json()
    other = (await client.post("/estimate", json={"message": "x", "component": "apollo"})).json()
    # The proof that they fit: the budget admits both requests right after.
    await ask(client, "x")
    await ask(client, "x", component="apollo")
    # A request without a component (or of another component) counts against the global limit only, which
    # it fits; ergon's spent limit must not make /estimate say otherwise (see the report if this fails).
    assert (without["under_budget"], other["under_budget"]) == (True, True), (
        "POST /estimate says under_budget false for a request the budget then admits: it compares the worst "
        "case with every configured scope's remaining (component:ergon), not only the request's own scopes")


# --------------------------------------------------------------------------- enforce: refused with 402


async def test_enforce_refuses_message_chat_and_openai_with_402_and_charges_nothing(client: Client) -> None:
    answers, refusal = await spend_until_refused(client)
    assert_refusal(refusal)
    spent = round(sum(a["cost"]["usd"] for a in answers), 9)
    assert refusal["error"]["details"]["spent_usd"] == pytest.approx(spent, abs=1e-9)
    assert refusal["error"]["details"]["limit_usd"] == 3.0

    r = await client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 402
    assert_refusal(r.json())
    for stream in (False, True):  # OpenAI's surface: a plain 402 before any stream
        r = await client.post("/v1/chat/completions", json={"model": "rhetor", "stream": stream,
                                                             "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 402, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert_refusal(r.json())
    g = daily((await client.get("/budget")).json())
    assert g["spent_usd"] == pytest.approx(spent, abs=1e-9) and g["reserved_usd"] == 0.0
    # Refused requests reached no provider, and are not counted as requests.
    assert (await client.get("/budget")).json()["usage"]["daily"]["total"]["requests"] == len(answers)


async def test_enforce_names_the_component_scope_when_that_limit_is_the_one_exceeded(client: Client) -> None:
    answers, refusal = await spend_until_refused(client, component="ergon")
    assert_refusal(refusal, scope="component:ergon")
    ergon = round(sum(a["cost"]["usd"] for a in answers), 9)
    assert ergon + RESERVATION > 2.0
    await ask(client, "another component still fits", component="apollo")


async def test_enforce_refuses_a_stream_with_a_plain_402_before_any_stream(client: Client) -> None:
    await spend_until_refused(client)
    for path, body in (("/stream", {"message": "stream me"}),
                       ("/message", {"message": "stream me", "streaming": True})):
        r = await client.post(path, json=body)
        # The budget refuses before any provider call, hence before any output: a plain 402, not an SSE
        # stream (OpenAI's /v1/chat/completions already does this; see the report if this fails).
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (402, "application/json"), (
            f"{path}: a refused stream should be a plain HTTP 402, got {r.status_code} "
            f"{r.headers['content-type']}: {r.text[:300]}")
        assert_refusal(r.json())


async def test_enforce_refuses_over_the_websocket_with_an_error_message(client: Client) -> None:
    await spend_until_refused(client)
    ws = await client.websocket_connect("/ws")
    with ws:
        for i, streaming in enumerate((False, True)):
            ws.send_json({"type": "LLM_REQUEST", "id": f"r{i}", "source": "test",
                          "payload": {"message": "over budget", "context": "ctx", "streaming": streaming}})
            got = []
            while not got or got[-1]["type"] != "ERROR":  # typing on, then the error (bounded by TIMEOUT)
                got.append(await asyncio.to_thread(ws.receive_json, timeout=TIMEOUT))
                assert len(got) <= 3, got
            assert [m["type"] for m in got] == ["UPDATE", "ERROR"]
            error = got[-1]
            assert (error["id"], error["source"]) == (f"r{i}", "rhetor")
            assert_refusal({"error": error["payload"]})
            assert error["payload"]["context"] == "ctx"
            off = await asyncio.to_thread(ws.receive_json, timeout=TIMEOUT)
            assert off["payload"] == {"status": "typing", "isTyping": False, "context": "ctx"}


async def test_the_free_model_is_served_when_the_budget_is_spent(client: Client) -> None:
    await spend_until_refused(client)
    free = await ask(client, "still answered", task_type="chat")
    assert (free["model"], free["cost"]["usd"], free["budget"]["reserved_usd"]) == ("free", 0.0, 0.0)


# --------------------------------------------------------------------------------- warn: a warning


async def test_warn_answers_and_carries_a_budget_warning(make_client: MakeClient) -> None:
    client = await make_client("policy: warn\nlimits: {daily: 0.5}\nwarn_thresholds: [0.8]\n")
    first = await ask(client, "over the limit already")  # reserving $1 against $0.50
    assert "budget_warning" in first, first
    assert "global daily budget of $0.5 exceeded: spent $0, reserved $0, this request up to $1" in (
        first["budget_warning"])
    assert first["budget"]["policy"] == "warn"
    second = await ask(client, "and again")
    assert f"spent ${first['cost']['usd']:g}" in second["budget_warning"]
    r = await client.post("/stream", json={"message": "streamed over the limit"})
    final = sse_events(r.text)[-1]
    assert (r.status_code, final["done"], final["finished"]) == (200, True, True)
    assert "exceeded" in final["budget_warning"]
    report = (await client.get("/budget")).json()
    answers_cost = first["cost"]["usd"] + second["cost"]["usd"] + final["cost"]["usd"]
    g = daily(report)
    assert g["spent_usd"] == pytest.approx(answers_cost, abs=1e-9) and g["spent_usd"] > g["limit_usd"]
    assert (g["remaining_usd"], g["reserved_usd"]) == (0.0, 0.0)
    assert report["policies"]["global"] == "warn"
    assert (await client.post("/estimate", json={"message": "x"})).json()["under_budget"] is False


async def test_an_answer_within_budget_has_no_warning(client: Client) -> None:
    body = await ask(client, "cheap")
    assert "budget_warning" not in body
    assert body["budget"] == {"policy": "enforce", "reserved_usd": RESERVATION, "scopes": ["global"]}
