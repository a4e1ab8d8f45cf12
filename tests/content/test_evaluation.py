"""Judging answers: the deterministic heuristic judge and parsing an LLM judge's reply."""

from __future__ import annotations

import pytest

from rhetor.errors import PipelineRunError
from rhetor.evaluation import heuristic_evaluation, judge_prompt, parse_judgement


def test_heuristic_is_deterministic_and_shaped_like_the_seed() -> None:
    a = heuristic_evaluation("Explain photosynthesis in plants", "Photosynthesis lets plants turn light into "
                             "sugar. Chlorophyll in leaves captures the light.")
    b = heuristic_evaluation("Explain photosynthesis in plants", "Photosynthesis lets plants turn light into "
                             "sugar. Chlorophyll in leaves captures the light.")
    assert a == b
    assert set(a.scores) == {"accuracy", "clarity", "relevance"}
    assert a.scores["accuracy"] == 5.0 and "accuracy" in a.feedback
    assert a.scores["relevance"] == 6.7  # 2 of the prompt's 3 content words (explain, photosynthesis, plants)
    assert 0 <= a.overall_score <= 10 and a.judge == "heuristic"


def test_an_off_topic_answer_scores_low_on_relevance() -> None:
    on = heuristic_evaluation("Describe the Eiffel Tower in Paris", "The Eiffel Tower in Paris is iron.")
    off = heuristic_evaluation("Describe the Eiffel Tower in Paris", "Bananas are yellow and tasty fruit.")
    assert on.scores["relevance"] > off.scores["relevance"] == 0.0
    assert "Weakest: relevance" in off.feedback


def test_run_on_sentences_score_lower_clarity() -> None:
    short = heuristic_evaluation("x", "It works. It is fast. It is simple.", ["clarity"])
    long = heuristic_evaluation("x", " ".join(["word"] * 80) + ".", ["clarity"])
    assert short.scores["clarity"] == 10.0 and long.scores["clarity"] < short.scores["clarity"]


def test_judge_prompt_asks_for_json_with_every_criterion() -> None:
    text = judge_prompt("P", "R", ["accuracy", "tone"], "Be strict.")
    assert text.startswith("Be strict.") and "accuracy, tone" in text and '"overall_score"' in text


def test_parse_judgement_reads_fenced_json_and_clamps() -> None:
    reply = 'Sure!\n```json\n{"scores": {"accuracy": 12, "tone": 6.5}, "overall_score": 8, "feedback": "ok"}\n```'
    ev = parse_judgement(reply, ["accuracy", "tone", "clarity"], "claude-haiku")
    assert ev.scores == {"accuracy": 10.0, "tone": 6.5, "clarity": 5.0}
    assert (ev.overall_score, ev.feedback, ev.judge) == (8.0, "ok", "claude-haiku")


def test_parse_judgement_refuses_prose() -> None:
    with pytest.raises(PipelineRunError, match="did not answer with the JSON"):
        parse_judgement("It is quite good, 7/10.", ["accuracy"], "judge")
