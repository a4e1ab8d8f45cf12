"""A conversation's token total travels with its history, so the prune stage can skip walking a history that fits
whole, and the budget stage counts a payload shared by several targets once per tokenizer. Both are shortcuts: each
must give what the long way gives."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhetor.engine.engine import build_engine
from rhetor.stages.budget import BudgetStage
from rhetor.stages.prune import fit
from rhetor.tokens import Tokenizers
from rhetor.types import Message, Messages, ModelChain, Payloads, RequestOptions, Turn
from tests.content.test_context_stages import ask, make, seed, stage

BUDGET = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "budget"


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(0, 1_200))
def test_fit_with_the_total_gives_what_the_walk_gives(tokens: list[int], budget: int) -> None:
    history = tuple(Turn.of("user", "x", n, i + 1) for i, n in enumerate(tokens))
    assert fit(history, budget, sum(tokens)) == fit(history, budget)


async def test_the_stored_token_total_follows_a_cached_history_from_request_to_request(tmp_path: Path) -> None:
    """A history long enough to be kept between requests (SQLite) reports its token total on the first read and on
    the reads that only add what is new; prune keeps it all (the `big` target's window) either way."""
    engine, _ = make(tmp_path, prune="{strategy: token_window}")
    await seed(engine, "ergon:s1", 20)  # 40 messages × 30 tokens
    contexts = engine.resources.storage.contexts
    for _ in range(3):
        stored = await contexts.load("ergon:s1")
        assert stored is not None
        result = await ask(engine, "and now?")
        details = stage(result, "context")["details"]
        assert details == {"messages": len(stored.messages), "summary_upto": 0,
                           "tokens": sum(m.tokens for m in stored.messages)}
        assert stage(result, "prune")["details"]["models"]["big"]["kept"] == len(stored.messages)
    await engine.aclose()


# bpe_openai reads its bundled encoding with importlib.resources' legacy API (its warning, not ours)
@pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")
def test_targets_sharing_a_payload_are_counted_once_per_tokenizer(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    shutil.copytree(BUDGET, config)
    with (config / "providers.yaml").open("a") as f:  # a third model that counts with the real BPE, input priced
        f.write("  bpe: {provider: up, id: bpe, context_window: 10000, max_output_tokens: 100, "
                "tokenizer: cl100k_base, price: {input: 10000, output: 0}}\n")
    engine = build_engine(config, env={})
    budget: Any = engine.pipelines["default"].stages["budget"].stage
    assert isinstance(budget, BudgetStage)
    shared = Messages((Message("user", "x" * 299), Message("assistant", "y" * 30)))
    alone = Messages((Message("user", "z" * 3),))
    calls: list[tuple[int, str]] = []

    class Counting(Tokenizers):
        def count(self, messages: Any, tokenizer: str = "approx") -> int:
            calls.append((len(messages), tokenizer))
            return super().count(messages, tokenizer)

    budget._tokenizers = Counting()
    options = RequestOptions(max_tokens=10)
    chain = ModelChain(("m", "free", "bpe"))
    estimates = budget.estimates(chain, alone, options, Payloads({"m": shared, "free": shared, "bpe": shared}))
    bpe_tokens = Tokenizers().count(shared, "cl100k_base")
    assert bpe_tokens != Tokenizers().count(shared)  # the two tokenizers disagree on this payload
    # m: 10 output tokens at $10,000 per million (input free); bpe: its own count of the input at $10,000 per million
    assert estimates == {"m": 0.1, "free": 0.0, "bpe": bpe_tokens * 10_000 / 1e6}
    assert calls == [(2, "approx"), (2, "cl100k_base")]  # once per tokenizer, not once per target
    calls.clear()
    assert budget.estimates(chain, alone, options) == {"m": 0.1, "free": 0.0,
                                                       "bpe": Tokenizers().count(alone, "cl100k_base") * 0.01}
    assert calls == [(1, "approx"), (1, "cl100k_base")]  # no payloads: the request's messages, counted once each
