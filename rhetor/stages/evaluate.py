"""``evaluate``: judge the answer; below ``min_score``, regenerate once with the judge's feedback.

The judge is declared in YAML: ``judge`` (models tried in order, e.g. ``[claude-haiku, gpt-4o]``),
``rubric`` and ``criteria``. A judge model that is unavailable, fails, or does not answer in the JSON
asked for is skipped; when none answers, the deterministic heuristic judge decides (and says so).
With ``min_score`` set and the first answer scoring below it, the stage asks the chain again once —
original prompt, the first answer and the feedback — and returns the second answer; both answers and
both evaluations are in the trace and the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import Field

from rhetor.errors import PipelineRunError, ProviderError
from rhetor.evaluation import DEFAULT_CRITERIA, Evaluation, heuristic_evaluation, judge_prompt, parse_judgement
from rhetor.providers.base import Provider, ProviderRequest
from rhetor.stages._fallback import GenerateConfig
from rhetor.stages.base import Bounds, BuildContext, Issue, RunContext, Stage, StageConfig, StageResult
from rhetor.stages.generate import GenerateStage
from rhetor.types import Completion, Message, Messages, ModelChain, RequestOptions, Usage, cost_of

__all__ = ["EvaluateStage", "Judge"]

DEFAULT_RUBRIC = "You are a strict, fair reviewer of answers written by an AI assistant."


class EvaluateConfig(StageConfig):
    judge: list[str] = []
    """Judge models tried in order; empty or none available: the heuristic judge."""
    rubric: str = DEFAULT_RUBRIC
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA), min_length=1)
    min_score: float | None = Field(None, ge=0, le=10)
    """Below this overall score the answer is regenerated once with the feedback."""
    regenerate: GenerateConfig = GenerateConfig()
    """How the second answer is fetched (same fallback settings as a generate stage)."""


class Judge:
    """Asks the judge models in order; falls back to the heuristic judge."""

    def __init__(self, models: Sequence[str], rubric: str, build: BuildContext) -> None:
        self.models = list(models)
        self.rubric = rubric
        self._specs = build.config.providers.models
        self._providers: Mapping[str, Provider] = build.providers
        self._circuits = build.runtime.circuits

    async def evaluate(self, prompt: str, response: str, criteria: Sequence[str]) -> tuple[Evaluation, list[str]]:
        """The evaluation and the notes on judges that were skipped or failed."""
        notes: list[str] = []
        question = judge_prompt(prompt, response, criteria, self.rubric)
        for name in self.models:
            spec = self._specs[name]
            provider = self._providers[spec.provider]
            availability = provider.availability()
            if not availability.available or self._circuits.state(name) == "open":
                notes.append(f"{name}: {availability.reason or 'circuit open'}")
                continue
            request = ProviderRequest(model_id=spec.id, messages=(Message("user", question),),
                                      max_tokens=min(800, spec.max_output_tokens), temperature=None)
            try:
                result = await provider.complete(request)
                return parse_judgement(result.text, criteria, name), notes
            except (ProviderError, PipelineRunError) as exc:
                notes.append(f"{name}: {exc.code}")
        return heuristic_evaluation(prompt, response, criteria), notes


def _prompt_of(messages: Messages) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


class EvaluateStage(Stage):
    type_name = "evaluate"
    Config = EvaluateConfig
    inputs = {"completion": Completion, "messages": Messages, "chain": ModelChain, "options": RequestOptions}
    optional_inputs = frozenset({"chain"})
    outputs = {"completion": Completion, "evaluation": Evaluation}

    def __init__(self, stage_id: str, config: EvaluateConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: EvaluateConfig = config
        self.judge = Judge(config.judge, config.rubric, build)
        self._regenerate = GenerateStage(f"{stage_id}.regenerate", config.regenerate, build)

    def bounds(self, build: BuildContext) -> Bounds:
        """Two judgements (each trying every judge model) plus, with ``min_score``, one regeneration."""
        specs = build.config.providers
        judge = [specs.models[m] for m in self.config.judge if m in specs.models]
        judge_latency = sum(specs.providers[m.provider].timeouts.total for m in judge if m.provider in specs.providers)
        judge_cost = sum(cost_of(Usage(m.context_window - 800, 800), m.price) for m in judge if m.price)
        regen = self._regenerate.bounds(build) if self.config.min_score is not None else Bounds()
        rounds = 2 if self.config.min_score is not None else 1
        return Bounds(regen.attempts + rounds * len(judge), round(regen.latency_s + rounds * judge_latency, 6),
                      round(regen.cost_usd + rounds * judge_cost, 6))

    @classmethod
    def check(cls, config: StageConfig, build: BuildContext) -> list[Issue]:
        assert isinstance(config, EvaluateConfig)
        models = build.config.providers.models
        return [Issue(("judge", i), "unknown-ref", f"unknown model {m!r}") for i, m in enumerate(config.judge)
                if m not in models]

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        completion: Completion = inputs["completion"]
        messages: Messages = inputs["messages"]
        prompt = _prompt_of(messages)
        first, notes = await self.judge.evaluate(prompt, completion.text, self.config.criteria)
        details: dict[str, Any] = {"evaluation": first.to_dict(), "judge_notes": notes}
        threshold = self.config.min_score
        if threshold is None or first.overall_score >= threshold or ctx.streaming:
            why = f"overall {first.overall_score}/10 by {first.judge}"
            if threshold is not None and ctx.streaming and first.overall_score < threshold:
                why += f"; below min_score {threshold:g} but the answer was already streamed"
            return StageResult({"completion": completion, "evaluation": first}, decision=f"score {first.overall_score}",
                               why=why, details=details)
        retry = Messages((*messages, Message("assistant", completion.text), Message(
            "user", f"Your previous answer was judged {first.overall_score}/10. Feedback: {first.feedback}\n"
                    "Write an improved answer to the original request.")))
        chain = inputs.get("chain") or ModelChain((completion.model,))
        regenerated = await self._regenerate.run(ctx, {"messages": retry, "chain": chain,
                                                       "options": replace(inputs["options"], stream=False)})
        second_completion: Completion = regenerated.outputs["completion"]
        second, notes2 = await self.judge.evaluate(prompt, second_completion.text, self.config.criteria)
        details.update({"first_answer": completion.text, "regenerated": True, "second_evaluation": second.to_dict(),
                        "judge_notes": notes + notes2})
        return StageResult({"completion": second_completion, "evaluation": second},
                           decision=f"regenerated: score {first.overall_score} → {second.overall_score}",
                           why=f"first answer scored {first.overall_score} < min_score {threshold:g}; "
                               f"regenerated once with the feedback", details=details)
