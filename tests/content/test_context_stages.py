"""Conversation stages through the engine: contexts stored and reloaded, pruned per target window (each
strategy), summaries stored and reused, system prompts, TTL, and evaluation with regeneration."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from rhetor.engine.engine import Engine, build_engine
from rhetor.stages.base import Request
from rhetor.storage import PromptRecord, StoredMessageIn
from rhetor.types import RequestOptions
from tests.fakes.scripted import ScriptedProvider, scripted_factory

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "content"

PIPELINE = """
name: default
stages:
  - {{id: route, type: route, inputs: {{options: request.options, messages: request.messages}}}}
  - {{id: system_prompt, type: system_prompt, inputs: {{messages: request.messages, options: request.options}},
     with: {system_with}}}
  - {{id: context, type: context_load, inputs: {{messages: system_prompt.messages, options: request.options}},
     with: {context_with}}}
  - {{id: prune, type: prune, inputs: {{conversation: context.conversation, chain: route.chain,
     options: request.options}}, with: {prune_with}}}
  - {{id: generate, type: generate, inputs: {{messages: system_prompt.messages, chain: route.chain,
     options: request.options, payloads: prune.payloads}}}}
  - {{id: evaluate, type: evaluate, inputs: {{completion: generate.completion, messages: system_prompt.messages,
     chain: route.chain, options: request.options}}, with: {evaluate_with}}}
  - {{id: save, type: context_save, inputs: {{conversation: context.conversation, completion: evaluate.completion,
     options: request.options}}}}
output: evaluate.completion
"""


def make(tmp_path: Path, *, prune: str = "{}", evaluate: str = "{}", system: str = "{}", context: str = "{}",
         script: dict[str, list[Any]] | None = None) -> tuple[Engine, ScriptedProvider]:
    config = tmp_path / "cfg"
    shutil.copytree(CONFIG, config)
    (config / "pipelines").mkdir()
    (config / "pipelines" / "default.yaml").write_text(PIPELINE.format(
        prune_with=prune, evaluate_with=evaluate, system_with=system, context_with=context))
    providers: dict[str, ScriptedProvider] = {}
    engine = build_engine(config, env={}, provider_factory=scripted_factory(script or {}, providers))
    return engine, providers["up"]


async def seed(engine: Engine, context_id: str, turns: int) -> None:
    await engine.resources.ensure_started()
    messages = []
    for i in range(turns):
        messages += [StoredMessageIn("user", f"question {i} " + "x" * 100, 30),
                     StoredMessageIn("assistant", f"answer {i} " + "y" * 100, 30)]
    await engine.resources.storage.contexts.append(context_id, messages, component="ergon")


def stage(result: Any, sid: str) -> dict[str, Any]:
    return next(t for t in result.trace if t.id == sid).to_dict(timings=False)


async def ask(engine: Engine, text: str = "and now?", **options: Any):
    return await engine.run(Request.from_text(text, RequestOptions(context_id="ergon:s1", component="ergon",
                                                                  **options)))


async def test_context_is_stored_and_reloaded(tmp_path: Path) -> None:
    engine, provider = make(tmp_path)
    await ask(engine, "first")
    second = await ask(engine, "second")
    record = await engine.resources.storage.contexts.load("ergon:s1")
    assert [(m.seq, m.role) for m in record.messages] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    assert [m.content for m in record.messages][::2] == ["first", "second"]
    assert stage(second, "context")["why"] == "2 stored messages"
    assert second.completion.usage.input_tokens == 100  # the scripted provider's figure; history was sent
    await engine.aclose()


async def test_token_window_fits_each_target(tmp_path: Path, snapshot) -> None:
    engine, _ = make(tmp_path, prune="{strategy: token_window}")
    await seed(engine, "ergon:s1", 30)  # 60 messages × 30 tokens: far more than `small`'s 400-token window
    result = await ask(engine)
    notes = stage(result, "prune")["details"]["models"]
    # small: 400 − 50 reserved for output − 13 for the new message leaves 337 → 11 messages of 30 tokens.
    assert notes["small"] == {"kept": 11, "dropped": 49, "strategy": "token_window"}
    assert notes["big"] == {"kept": 60, "dropped": 0, "strategy": "token_window"}
    payloads = result.outputs["prune"]["payloads"].by_model
    # each target gets its own fit: the newest 11 stored messages for small, all 60 for big, then the question
    assert [m.content.split(" ")[:2] for m in payloads["small"]][:2] == [["answer", "24"], ["question", "25"]]
    assert [m.content for m in payloads["small"]][-1] == payloads["big"][-1].content == "and now?"
    assert (len(payloads["small"]), len(payloads["big"])) == (12, 61)
    assert stage(result, "prune") == snapshot
    await engine.aclose()


async def test_keep_last_turns(tmp_path: Path, snapshot) -> None:
    engine, _ = make(tmp_path, prune="{strategy: keep_last, keep_last_turns: 3}")
    await seed(engine, "ergon:s1", 30)
    result = await ask(engine)
    notes = stage(result, "prune")["details"]["models"]
    assert notes["big"]["kept"] == 6 and notes["small"]["kept"] == 6  # 3 turns fit both windows
    payloads = result.outputs["prune"]["payloads"].by_model
    assert payloads["big"] is payloads["small"]  # the same messages: built once, shared (immutable)
    assert [m.content.split(" ")[:2] for m in payloads["big"]][:6:2] == [["question", "27"], ["question", "28"],
                                                                         ["question", "29"]]
    assert stage(result, "prune") == snapshot
    await engine.aclose()


async def test_summary_is_stored_and_reused_not_recomputed(tmp_path: Path, snapshot) -> None:
    engine, provider = make(tmp_path, prune="{strategy: summarize, summarizer: [summ]}")
    await seed(engine, "ergon:s1", 30)
    first = await ask(engine, "q1")
    summaries = [m for m, _ in provider.calls if m == "summ"]
    assert len(summaries) == 1  # `big` needs no pruning; `small` summarised the dropped turns once
    record = await engine.resources.storage.contexts.load("ergon:s1")
    assert record.summary is not None and record.summary.text == "answer from summ"
    upto = record.summary.upto_seq
    assert upto == stage(first, "prune")["details"]["models"]["small"]["summarized_upto"]
    provider.calls.clear()
    second = await ask(engine, "q2")  # the stored summary is loaded; only the messages after it are history
    assert stage(second, "context")["why"].endswith(f"after a summary of messages 1–{upto}")
    assert [m for m, _ in provider.calls if m == "summ"] == []  # reused, not recomputed
    assert {"first": stage(first, "prune"), "second": stage(second, "prune")} == snapshot
    await engine.aclose()


async def test_concurrent_requests_on_one_context_never_interleave(tmp_path: Path) -> None:
    engine, _ = make(tmp_path)
    await asyncio.gather(*(ask(engine, f"request {i}") for i in range(25)))
    record = await engine.resources.storage.contexts.load("ergon:s1")
    assert [m.seq for m in record.messages] == list(range(1, 51))
    for user, answer in zip(record.messages[::2], record.messages[1::2], strict=True):
        assert (user.role, answer.role) == ("user", "assistant")  # every pair adjacent, none lost
    assert sorted(m.content for m in record.messages[::2]) == sorted(f"request {i}" for i in range(25))
    await engine.aclose()


async def test_system_prompt_precedence(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, system="{default: 'You are generic.'}")
    plain = await engine.run(Request.from_text("x", RequestOptions(component="apollo")))
    assert stage(plain, "system_prompt")["decision"] == "pipeline default"
    await engine.resources.storage.prompts.put(PromptRecord(id="", component="ergon", name="ergon-voice",
                                                            content="You are Ergon.", description="", tags=[],
                                                            is_default=True, created_at=None, updated_at=None))
    stored = await engine.run(Request.from_text("x", RequestOptions(component="ergon")))
    assert stage(stored, "system_prompt")["decision"] == "prompt 'ergon-voice'"
    own = await engine.run(Request.from_text("x", RequestOptions(component="ergon", system_prompt="Be terse.")))
    assert stage(own, "system_prompt")["decision"] == "request's own"
    await engine.aclose()


async def test_idle_context_expires_after_its_ttl(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, context="{ttl_by_component: {ergon: 0.2}}")
    await ask(engine, "remember me")
    await asyncio.sleep(0.3)
    result = await ask(engine, "do you?")
    assert stage(result, "context")["decision"] == "expired context started afresh"
    record = await engine.resources.storage.contexts.load("ergon:s1")
    assert [m.content for m in record.messages][::2] == ["do you?"]
    await engine.aclose()


async def test_evaluation_below_min_score_regenerates_once(tmp_path: Path, snapshot) -> None:
    engine, provider = make(tmp_path, evaluate="{min_score: 9.5, criteria: [relevance, clarity]}")
    result = await ask(engine, "Explain gateways")
    trace = stage(result, "evaluate")
    assert trace["decision"].startswith("regenerated: score")
    assert trace["details"]["regenerated"] is True
    assert [m for m, _ in provider.calls] == ["small", "small"]  # one answer, one regeneration
    assert result.outputs["evaluate"]["evaluation"].judge == "heuristic"
    assert trace == snapshot
    await engine.aclose()


async def test_evaluation_above_min_score_keeps_the_answer(tmp_path: Path) -> None:
    engine, provider = make(tmp_path, evaluate="{min_score: 1}")
    result = await ask(engine, "hello")
    assert stage(result, "evaluate")["decision"].startswith("score")
    assert [m for m, _ in provider.calls] == ["small"]
    await engine.aclose()


async def test_the_server_sweep_removes_contexts_past_their_ttl(tmp_path: Path) -> None:
    from rhetor.server.app import _expire_contexts

    engine, _ = make(tmp_path, context="{ttl_s: 100, ttl_by_component: {ergon: 0.2}}")
    await ask(engine, "ergon's")
    await engine.run(Request.from_text("apollo's", RequestOptions(context_id="apollo:s1", component="apollo")))
    await asyncio.sleep(0.3)
    assert await _expire_contexts(engine) == 1  # ergon's 0.2 s passed; apollo's 100 s did not
    assert await engine.resources.storage.contexts.load("ergon:s1") is None
    assert await engine.resources.storage.contexts.load("apollo:s1") is not None
    await engine.aclose()
