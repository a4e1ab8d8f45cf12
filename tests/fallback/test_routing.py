"""The route stage: precedence, routing parameters and drops, each explained. Uses explain(): no calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rhetor.engine.engine import build_engine
from rhetor.errors import ProviderUnavailableError, RequestError
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

REPO = Path(__file__).resolve().parents[2]
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-test", "OPENAI_API_KEY": "sk-test"}


def route(env: dict[str, str] | None = None, text: str = "hello", **options: Any) -> dict[str, Any]:
    engine = build_engine(REPO, env=KEYS if env is None else env)
    stages = engine.explain(Request.from_text(text, RequestOptions(**options))).stages
    return stages[0].to_dict(timings=False)


def test_task_chain_when_all_are_available() -> None:
    r = route(task_type="code")
    assert r["decision"] == "chain [claude-opus, gpt-4-turbo, simulated]"
    assert r["why"] == "task=code from tasks.yaml"


def test_low_complexity_puts_cheaper_tiers_first() -> None:
    r = route(task_type="code", routing_parameters={"complexity": "low"})
    assert r["decision"] == "chain [simulated, claude-opus, gpt-4-turbo]"


def test_high_complexity_puts_premium_first() -> None:
    r = route(task_type="chat", routing_parameters={"complexity": "high"})
    assert r["decision"] == "chain [claude-haiku, gpt-3.5-turbo, simulated]"  # both economy: stable order


def test_declared_complexity_chain_wins(tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n  default:\n    chain: [gpt-4o, simulated]\n"
        "    by_complexity:\n      high: [claude-opus, simulated]\n")
    engine = build_engine(tmp_path, env=KEYS)
    stages = engine.explain(Request.from_text("x", RequestOptions(routing_parameters={"complexity": "high"}))).stages
    assert stages[0].decision == "chain [claude-opus, simulated]"
    assert stages[0].why == "task=default complexity=high"


def test_required_capabilities_drop_models_lacking_one() -> None:
    r = route(task_type="chat", routing_parameters={"required_capabilities": ["vision"]})
    assert r["decision"] == "chain [claude-haiku]"
    assert "dropped gpt-3.5-turbo (missing-capability), simulated (missing-capability)" in r["why"]


def test_max_cost_drops_models_estimated_above_it() -> None:
    # A 4,000-character prompt ≈ 1,004 tokens; claude-opus: 1,004 × $15 + 4,096 × $75 per million ≈ $0.32.
    r = route(text="x" * 4000, task_type="code", routing_parameters={"max_cost": 0.2})
    assert r["decision"] == "chain [gpt-4-turbo, simulated]"  # gpt-4-turbo ≈ $0.133
    assert "dropped claude-opus (over-max-cost)" in r["why"]


def test_explicit_model_wins_and_provider_filters() -> None:
    assert route(task_type="code", model="gpt-4o")["decision"] == "chain [gpt-4o]"
    assert route(task_type="code", model="claude-3-haiku-20240307")["decision"] == "chain [claude-haiku]"
    assert route(task_type="code", provider="openai")["decision"] == "chain [gpt-4-turbo]"


def test_unknown_task_type_uses_default_and_says_so() -> None:
    r = route(task_type="poetry")
    assert r["decision"] == "chain [claude-sonnet, gpt-4o, simulated]"
    assert r["why"].startswith("unknown task type 'poetry', used 'default'")


def test_unavailable_providers_are_dropped_with_the_reason() -> None:
    r = route(env={}, task_type="code")
    assert r["decision"] == "chain [simulated]"
    assert "dropped claude-opus (provider-unavailable), gpt-4-turbo (provider-unavailable)" in r["why"]


@pytest.mark.parametrize(("params", "field"), [
    ({"complexity": "extreme"}, "routing_parameters.complexity"),
    ({"max_cost": -1}, "routing_parameters.max_cost"),
    ({"max_costs": 1}, "routing_parameters.max_costs"),
    ({"required_capabilities": "vision"}, "routing_parameters.required_capabilities"),
])
def test_bad_routing_parameters_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as info:
        route(routing_parameters=params)
    assert info.value.details["field"] == field and info.value.status == 400


def test_nothing_fits_the_parameters_is_a_400_with_reasons() -> None:
    with pytest.raises(RequestError) as info:
        route(task_type="chat", routing_parameters={"required_capabilities": ["teleportation"]})
    assert [r["model"] for r in info.value.details["reasons"]] == ["claude-haiku", "gpt-3.5-turbo", "simulated"]


def test_nothing_available_is_a_503_with_reasons() -> None:
    with pytest.raises(ProviderUnavailableError) as info:
        route(env={}, model="claude-opus")
    assert info.value.status == 503
    assert info.value.details["reasons"][0]["detail"] == "no API key: set ANTHROPIC_API_KEY"
