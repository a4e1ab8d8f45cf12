"""Traces of the default pipeline on the offline provider (no keys), pinned by snapshots.

A trace says why each decision was made; a change in routing or fallback shows up here as a diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rhetor.engine.engine import build_engine
from rhetor.errors import AllTargetsFailedError
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "fixtures" / "configs" / "sim"


def trace_of(result) -> list[dict]:
    return [t.to_dict(timings=False) for t in result.trace]


@pytest.mark.parametrize("task_type", ["code", "planning", "reasoning", "chat", "default", "poetry", None])
async def test_default_pipeline_trace(task_type: str | None, snapshot) -> None:
    engine = build_engine(REPO, env={})
    options = RequestOptions(task_type=task_type, component="tests")
    result = await engine.run(Request.from_text("Write a haiku about gateways", options))
    assert result.completion.provider == "simulated"
    assert trace_of(result) == snapshot
    await engine.aclose()


async def test_default_pipeline_trace_streamed_matches_whole(snapshot) -> None:
    engine = build_engine(REPO, env={})
    request = Request.from_text("Stream a haiku", RequestOptions(task_type="chat", stream=True))
    items = [item async for item in engine.stream(request)]
    *chunks, result = items
    assert "".join(chunks) == result.completion.text
    assert trace_of(result) == snapshot
    await engine.aclose()


async def test_component_override_and_explicit_model(tmp_path: Path, snapshot) -> None:
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n  code: {chain: [claude-opus, simulated]}\n  default: {chain: [gpt-4o, simulated]}\n"
        "components:\n  ergon:\n    tasks:\n      code: [gpt-4o, simulated]\n"
    )
    engine = build_engine(tmp_path, env={})
    by_component = await engine.run(Request.from_text("x", RequestOptions(task_type="code", component="ergon")))
    explicit = await engine.run(Request.from_text("x", RequestOptions(task_type="code", model="simulated")))
    assert by_component.explanation is not None and by_component.explanation.chain == ("simulated",)
    assert by_component.explanation.reasons[0] == {"reason": "chosen", "chain": ["simulated"], "task_type": "code"}
    assert "component=ergon override for task=code; dropped gpt-4o (provider-unavailable)" in \
        by_component.explanation.summary
    assert explicit.explanation is not None and explicit.explanation.chain == ("simulated",)
    assert {"component": trace_of(by_component), "explicit": trace_of(explicit)} == snapshot
    await engine.aclose()


async def test_failed_run_carries_a_trace(snapshot) -> None:
    engine = build_engine(SIM, env={})
    with pytest.raises(AllTargetsFailedError) as info:
        await engine.run(Request.from_text("x", RequestOptions(model="flaky")))
    assert [t.to_dict(timings=False) for t in info.value.trace] == snapshot  # type: ignore[attr-defined]
