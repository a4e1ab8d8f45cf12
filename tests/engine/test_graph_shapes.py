"""Behaviour of the compiler and runner over a table of graph shapes (built from YAML text)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from rhetor.config.loader import load_config_files, parse_pipeline_text
from rhetor.engine.compile import compile_pipeline
from rhetor.engine.run import execute
from rhetor.errors import PipelineRunError
from rhetor.stages.base import BuildContext, Request, RunContext
from tests.engine.toy_stages import TOY_REGISTRY

SIM_DIR = Path(__file__).parent.parent / "fixtures" / "configs" / "sim"


@pytest.fixture(scope="module")
def build() -> BuildContext:
    config, diags = load_config_files(SIM_DIR, env={})
    assert config is not None, diags
    return BuildContext(config=config, providers={}, pipeline="toy")


def compile_text(text: str, build: BuildContext):
    spec, doc, diags = parse_pipeline_text(textwrap.dedent(text), "toy.yaml")
    assert spec is not None and doc is not None, [d.one_line() for d in diags]
    return compile_pipeline(spec, doc, build, TOY_REGISTRY)


async def run(compiled, text: str = "hi"):
    ctx = RunContext(Request.from_text(text))
    result = await execute(compiled, ctx)
    return result, ctx.notes.get("log", [])


LINEAR = """
    name: toy
    stages:
      - {id: a, type: source, inputs: {messages: request.messages}, with: {suffix: "-a"}}
      - {id: b, type: step, inputs: {text: a.text}, with: {suffix: "-b"}}
      - {id: c, type: step, inputs: {text: b.text}, with: {suffix: "-c"}}
      - {id: out, type: finish, inputs: {text: c.text}}
    output: out.completion
"""

DIAMOND = """
    name: toy
    stages:
      - {id: a, type: source, inputs: {messages: request.messages}}
      - {id: left, type: step, inputs: {text: a.text}, with: {seconds: 0.05, suffix: "-L"}}
      - {id: right, type: step, inputs: {text: a.text}, with: {seconds: 0.05, suffix: "-R"}}
      - {id: join, type: join, inputs: {left: left.text, right: right.text}}
    output: join.completion
"""

FAN_OUT = """
    name: toy
    stages:
      - {id: a, type: source, inputs: {messages: request.messages}}
      - {id: x, type: step, inputs: {text: a.text}, with: {suffix: "-x"}}
      - {id: y, type: step, inputs: {text: a.text}, with: {suffix: "-y"}}
      - {id: z, type: count, inputs: {text: a.text}}
      - {id: out, type: finish, inputs: {text: x.text}}
    output: out.completion
"""


async def test_linear_runs_in_order_and_passes_values(build: BuildContext) -> None:
    compiled, diags = compile_text(LINEAR, build)
    assert diags == []
    assert compiled.levels == (("a",), ("b",), ("c",), ("out",))
    result, _ = await run(compiled, "hi")
    assert result.completion.text == "hi-a-b-c"
    assert [t.id for t in result.trace] == ["a", "b", "c", "out"]
    assert all(t.status == "ok" for t in result.trace)


async def test_diamond_branches_overlap_in_time(build: BuildContext) -> None:
    compiled, diags = compile_text(DIAMOND, build)
    assert diags == []
    assert compiled.levels == (("a",), ("left", "right"), ("join",))
    result, log = await run(compiled, "go")
    assert result.completion.text == "go-L|go-R"
    times = {(sid, edge): t for sid, edge, t in log}
    # The two branches really ran at the same time: each started before the other ended.
    assert times["left", "start"] < times["right", "end"]
    assert times["right", "start"] < times["left", "end"]
    assert [t.id for t in result.trace] == ["a", "left", "right", "join"]


QUICK_BESIDE_SLOW = """
    name: toy
    stages:
      - {id: a, type: source, inputs: {messages: request.messages}}
      - {id: slow, type: step, inputs: {text: a.text}, with: {seconds: 0.01, suffix: "-S"}}
      - {id: quick, type: quick, inputs: {text: a.text}, with: {suffix: "-Q"}}
      - {id: join, type: join, inputs: {left: slow.text, right: quick.text}}
    output: join.completion
"""


async def test_a_stage_that_never_waits_runs_inline_beside_one_that_waits(build: BuildContext) -> None:
    compiled, diags = compile_text(QUICK_BESIDE_SLOW, build)
    assert diags == []
    assert compiled.levels == (("a",), ("slow", "quick"), ("join",))
    # the level runs as two inline steps, the stage that never waits first: no task group for one waiting stage
    assert compiled.steps == (("a",), ("quick",), ("slow",), ("join",))
    ctx = RunContext(Request.from_text("go"))
    result = await execute(compiled, ctx)
    assert result.completion.text == "go-S|go-Q"
    assert ctx.notes["tasks"]["quick"] is asyncio.current_task()  # ran in the request's own task
    assert [t.id for t in result.trace] == ["a", "slow", "quick", "join"]  # the trace keeps the declared order


async def test_stages_that_wait_still_run_as_concurrent_tasks(build: BuildContext) -> None:
    compiled, diags = compile_text(DIAMOND, build)
    assert diags == []
    assert compiled.steps == (("a",), ("left", "right"), ("join",))


async def test_the_default_pipeline_routes_inline() -> None:
    from rhetor.engine.engine import build_engine

    engine = build_engine(Path(__file__).resolve().parents[2], env={})
    try:
        steps = engine.pipelines["default"].steps
    finally:
        await engine.aclose()
    assert steps[:2] == (("route",), ("system_prompt",))
    assert all(len(step) == 1 for step in steps)


async def test_fan_out_feeds_every_consumer(build: BuildContext) -> None:
    compiled, diags = compile_text(FAN_OUT, build)
    assert diags == []
    result, _ = await run(compiled, "abc")
    assert result.outputs["x"]["text"] == "abc-x"
    assert result.outputs["y"]["text"] == "abc-y"
    assert result.outputs["z"]["number"] == 3
    assert result.completion.text == "abc-x"


def codes(diags) -> list[str]:
    return [d.code for d in diags]


def test_cycle_is_rejected_with_the_loop_named(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: b, type: step, inputs: {text: c.text}}
          - {id: c, type: step, inputs: {text: b.text}}
          - {id: out, type: finish, inputs: {text: a.text}}
        output: out.completion
    """, build)
    assert compiled is None
    assert codes(diags) == ["cycle"]
    assert "b → c → b" in diags[0].message
    assert (diags[0].line, diags[0].path) == (5, "stages[1].inputs")


def test_self_loop_is_a_cycle(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: b, type: step, inputs: {text: b.text}}
          - {id: out, type: finish, inputs: {text: a.text}}
        output: out.completion
    """, build)
    assert compiled is None
    assert codes(diags) == ["cycle"]


def test_unreachable_stage_is_rejected(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: lonely, type: join}
          - {id: out, type: finish, inputs: {text: a.text}}
        output: out.completion
    """, build)
    assert compiled is None
    # `join` without inputs is both unfed (missing-input twice) and unreachable from the request.
    assert sorted(codes(diags)) == ["missing-input", "missing-input", "unreachable-stage"]
    unreachable = next(d for d in diags if d.code == "unreachable-stage")
    assert "'lonely'" in unreachable.message and unreachable.line == 5


def test_missing_input_is_rejected_with_a_fix(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: j, type: join, inputs: {left: a.text}}
        output: j.completion
    """, build)
    assert compiled is None
    assert codes(diags) == ["missing-input"]
    assert "needs input 'right' of type Text" in diags[0].message
    assert diags[0].hint == "connect it, e.g. `right: a.text`"


def test_type_mismatch_names_both_types(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: n, type: count, inputs: {text: a.text}}
          - {id: out, type: finish, inputs: {text: n.number}}
        output: out.completion
    """, build)
    assert compiled is None
    assert codes(diags) == ["type-mismatch"]
    assert diags[0].message == "input out.text expects Text but n.number is Number"
    assert diags[0].hint == "outputs of type Text: a.text"


def test_output_must_be_a_completion(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
        output: a.text
    """, build)
    assert compiled is None
    assert codes(diags) == ["type-mismatch"]


def test_every_problem_is_reported_in_one_pass(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: sourse, inputs: {messages: request.messages}}
          - {id: a, type: step, inputs: {text: nowhere.text}}
          - {id: out, type: finish, inputs: {text: a.txt}, with: {colour: red}}
        output: out.completion
    """, build)
    assert compiled is None
    found = sorted((d.line, d.code) for d in diags)
    assert (4, "unknown-stage-type") in found
    assert (5, "duplicate-id") in found
    assert (5, "unknown-ref") in found
    assert (6, "unknown-ref") in found  # a.txt: did you mean text?
    assert (6, "unknown-key") in found
    assert next(d for d in diags if d.code == "unknown-stage-type").hint == "did you mean 'source'?"


async def test_a_stage_breaking_its_contract_fails_loudly(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: b, type: broken, inputs: {text: a.text}}
          - {id: out, type: finish, inputs: {text: b.text}}
        output: out.completion
    """, build)
    assert diags == []
    with pytest.raises(PipelineRunError, match="returned outputs"):
        await run(compiled)


def test_compiled_pipeline_is_shared_and_immutable(build: BuildContext) -> None:
    compiled, _ = compile_text(LINEAR, build)
    with pytest.raises(AttributeError):
        compiled.name = "other"  # type: ignore[misc]
    import networkx as nx

    with pytest.raises(nx.NetworkXError):
        compiled.graph.add_node("x")


def test_an_unknown_stage_type_is_reported_once_not_cascaded(build: BuildContext) -> None:
    compiled, diags = compile_text("""
        name: toy
        stages:
          - {id: a, type: source, inputs: {messages: request.messages}}
          - {id: out, type: finnish, inputs: {text: a.text}}
        output: out.completion
    """, build)
    assert compiled is None
    assert [(d.code, d.hint) for d in diags] == [("unknown-stage-type", "did you mean 'finish'?")]
