"""Judging an answer: ``{"overall_score": 0–10, "scores": {criterion: 0–10}, "feedback": text}``.

Two judges. An LLM judge (a model declared in the pipeline, asked with a rubric to answer in JSON;
``judge_prompt`` and ``parse_judgement`` here). And a deterministic heuristic judge used when only the
offline provider is available: it measures what text alone can show — overlap with the prompt's
content words (relevance), sentence length and structure (clarity), length against the request
(completeness) — and says plainly in its feedback that it is a heuristic. Criteria it cannot measure
(accuracy) get a neutral 5 and are named in the feedback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rhetor.errors import PipelineRunError

__all__ = ["DEFAULT_CRITERIA", "Evaluation", "heuristic_evaluation", "judge_prompt", "parse_judgement"]

DEFAULT_CRITERIA = ("accuracy", "clarity", "relevance")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]+")
_STOP = frozenset("""a an and are as at be by for from has have how i in is it its of on or that the this to
was what when where which who why will with you your me my we our can do does please write give tell""".split())


@dataclass(frozen=True)
class Evaluation:
    overall_score: float
    scores: dict[str, float]
    feedback: str
    judge: str

    def to_dict(self) -> dict[str, Any]:
        return {"overall_score": self.overall_score, "scores": dict(self.scores), "feedback": self.feedback,
                "judge": self.judge}


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _clamp(x: float) -> float:
    return round(max(0.0, min(10.0, x)), 1)


def _relevance(prompt: str, response: str) -> float:
    wanted = {w for w in _words(prompt) if w not in _STOP}
    if not wanted:
        return 5.0
    got = set(_words(response))
    return _clamp(10 * len(wanted & got) / len(wanted))


def _clarity(response: str) -> float:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", response.strip()) if s.strip()]
    if not sentences:
        return 0.0
    mean = sum(len(_words(s)) for s in sentences) / len(sentences)
    score = 10 - max(0.0, mean - 20) * 0.3  # long sentences read worse
    return _clamp(score)


def _completeness(prompt: str, response: str) -> float:
    n = len(_words(response))
    expected = max(20, min(400, len(_words(prompt)) * 3))
    return _clamp(10 * min(1.0, n / expected))


def heuristic_evaluation(prompt: str, response: str, criteria: Sequence[str] = DEFAULT_CRITERIA) -> Evaluation:
    measures = {"relevance": lambda: _relevance(prompt, response), "clarity": lambda: _clarity(response),
                "completeness": lambda: _completeness(prompt, response),
                "conciseness": lambda: _clamp(10 - max(0, len(_words(response)) - 300) / 30)}
    scores: dict[str, float] = {}
    unmeasured = []
    for criterion in criteria:
        measure = measures.get(criterion.lower())
        if measure is None:
            unmeasured.append(criterion)
            scores[criterion] = 5.0
        else:
            scores[criterion] = measure()
    overall = _clamp(sum(scores.values()) / len(scores)) if scores else 0.0
    weakest = min(scores, key=scores.__getitem__) if scores else None
    parts = ["Heuristic judgement (no LLM judge was available): scores measure wording, not truth."]
    if weakest is not None and scores[weakest] < 7:
        advice = {"relevance": "address the words and subject of the prompt more directly",
                  "clarity": "use shorter sentences", "completeness": "answer more fully",
                  "conciseness": "be more concise"}.get(weakest.lower(), f"improve {weakest}")
        parts.append(f"Weakest: {weakest} ({scores[weakest]}/10); {advice}.")
    if unmeasured:
        parts.append(f"Not measurable by text alone, scored 5: {', '.join(unmeasured)}.")
    return Evaluation(overall, scores, " ".join(parts), "heuristic")


def judge_prompt(prompt: str, response: str, criteria: Sequence[str], rubric: str) -> str:
    """What an LLM judge is asked; it must answer with one JSON object."""
    return (
        f"{rubric}\n\nScore the RESPONSE to the PROMPT from 0 to 10 on each criterion: {', '.join(criteria)}.\n"
        'Answer with only a JSON object: {"scores": {"<criterion>": <0-10>, ...}, "overall_score": <0-10>, '
        '"feedback": "<one paragraph: what to improve>"}\n\n'
        f"PROMPT:\n{prompt}\n\nRESPONSE:\n{response}\n"
    )


def parse_judgement(text: str, criteria: Sequence[str], judge: str) -> Evaluation:
    """The judge's JSON (possibly inside a code fence or prose); scores clamped to 0–10."""
    match = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
        raise PipelineRunError(f"the judge {judge!r} did not answer with the JSON asked for",
                               details={"reply": text[:500]})
    scores = {}
    for criterion in criteria:
        value = data["scores"].get(criterion)
        scores[criterion] = _clamp(float(value)) if isinstance(value, int | float) else 5.0
    overall = data.get("overall_score")
    overall = _clamp(float(overall)) if isinstance(overall, int | float) else _clamp(sum(scores.values()) / len(scores))
    return Evaluation(overall, scores, str(data.get("feedback", "")), judge)
