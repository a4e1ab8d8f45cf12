"""``prune``: fit the conversation to each target's context window, after routing.

Each model of the chain gets its own payload (``Payloads``), so every fallback target is sent what fits
*its* window minus the output it must leave room for. System messages and the request's new messages
are always kept; older history goes first. Strategies (``strategy:``):

- ``token_window``: keep the most recent history that fits.
- ``keep_last``: at most ``keep_last_turns`` recent turns (user + assistant), then fit the window.
- ``summarize``: when history must be dropped, the dropped turns (with any earlier summary) are
  summarised by an LLM (``summarizer`` models, in order) and the summary is stored with the context,
  so later requests reuse it instead of summarising again. Without an available summarizer it falls
  back to ``token_window`` and says so.

One pass from the newest message backwards: linear in the length of the conversation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from rhetor.errors import ProviderError
from rhetor.providers.base import ProviderRequest
from rhetor.stages.base import BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.tokens import estimate_tokens
from rhetor.types import Conversation, Message, Messages, ModelChain, Payloads, RequestOptions, Turn

__all__ = ["PruneStage", "fit"]


class PruneConfig(StageConfig):
    strategy: Literal["token_window", "keep_last", "summarize"] = "token_window"
    keep_last_turns: int = Field(20, ge=1)
    """With ``keep_last``: the most recent turns kept (a turn is a user message and its answer)."""
    summarizer: list[str] = []
    """With ``summarize``: models asked (in order) to summarise the dropped turns."""
    summary_max_tokens: int = Field(400, gt=0)
    summary_headroom: float = Field(0.5, gt=0, le=1)
    """When a summary is (re)made, recent history keeps only this fraction of the room, so the next
    requests fit without summarising again: the summary is reused until history outgrows the room."""


def fit(history: tuple[Turn, ...], budget: int, total: int | None = None) -> int:
    """Index of the oldest history message kept so that the kept suffix fits ``budget`` tokens. ``total``, the sum of
    ``history``'s token counts when known (``Conversation.history_tokens``), spares the walk when it all fits."""
    if total is not None and total <= budget:
        return 0
    used = 0
    start = len(history)
    for i in range(len(history) - 1, -1, -1):
        used += history[i].tokens
        if used > budget:
            break
        start = i
    return start


def _shared(built: dict[int, Messages], conv: Conversation, start: int) -> Messages:
    """``conv``'s messages from stored message ``start`` on, built once per request however many targets keep them
    (``Messages`` is immutable: the targets' payloads may share it)."""
    messages = built.get(start)
    if messages is None:
        messages = built[start] = conv.messages(conv.history[start:])
    return messages


def _last_turns(history: tuple[Turn, ...], turns: int) -> int:
    seen = 0
    for i in range(len(history) - 1, -1, -1):
        if history[i].role == "user":
            seen += 1
            if seen == turns:
                return i
    return 0


class PruneStage(Stage):
    type_name = "prune"
    Config = PruneConfig
    inputs = {"conversation": Conversation, "chain": ModelChain, "options": RequestOptions}
    outputs = {"payloads": Payloads}

    def __init__(self, stage_id: str, config: PruneConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: PruneConfig = config
        self._models = build.config.providers.models
        self._providers = build.providers
        self._resources = build.resources

    def _room(self, model: str, conversation: Conversation, options: RequestOptions, summary_tokens: int) -> int:
        spec = self._models[model]
        output = min(options.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        fixed = sum(t.tokens for t in (*conversation.system, *conversation.new)) + summary_tokens
        return max(0, spec.context_window - output - fixed)

    async def _summarize(self, conversation: Conversation, dropped: tuple[Turn, ...]) -> tuple[str, int, str] | None:
        text = "\n".join(f"{t.role}: {t.content}" for t in dropped)
        if conversation.summary:
            text = f"(earlier summary) {conversation.summary}\n{text}"
        ask = ("Summarise this conversation so far in a short paragraph that keeps every fact, decision and "
               f"open question a continuation needs:\n\n{text}")
        for name in self.config.summarizer:
            spec = self._models[name]
            provider = self._providers[spec.provider]
            if not provider.availability().available:
                continue
            request = ProviderRequest(spec.id, (Message("user", ask),), self.config.summary_max_tokens)
            try:
                result = await provider.complete(request)
            except ProviderError:
                continue
            return result.text, estimate_tokens(result.text) + 4, name
        return None

    async def _payload(self, model: str, conv: Conversation, options: RequestOptions,
                       made: dict[int, tuple[str, int, str]], built: dict[int, Messages]
                       ) -> tuple[Messages, dict[str, Any], Conversation]:
        """This target's messages from the loaded conversation (never from another target's result);
        summaries made in this request are shared through ``made`` (by how many messages they cover), and
        targets that keep the same stored messages share one ``Messages`` through ``built`` (by where they start)."""
        history = conv.history
        start = 0
        if self.config.strategy == "keep_last":
            start = _last_turns(history, self.config.keep_last_turns)
        room = self._room(model, conv, options, conv.summary_tokens)
        start = max(start, fit(history, room, conv.history_tokens))
        if start == 0 or self.config.strategy != "summarize":
            note = {"kept": len(history) - start, "dropped": start, "strategy": self.config.strategy}
            return _shared(built, conv, start), note, conv
        start = max(start, fit(history, int(room * self.config.summary_headroom), conv.history_tokens))
        summary = made.get(start) or await self._summarize(conv, history[:start])
        if summary is None:
            note = {"kept": len(history) - start, "dropped": start, "strategy": "token_window",
                    "why": "no summarizer was available"}
            return _shared(built, conv, start), note, conv
        made[start] = summary
        text, tokens, by = summary
        upto = history[start - 1].seq or 0
        summarized = Conversation(conv.context_id, conv.system, history[start:], conv.new, text, upto, tokens)
        kept = history[start:][fit(history[start:], self._room(model, summarized, options, tokens)):]
        note = {"kept": len(kept), "dropped": start, "strategy": "summarize", "summarized_upto": upto,
                "summarizer": by}
        return summarized.messages(kept), note, summarized

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        """Each target's payload by window fitting alone (no summary is written in an explain)."""
        conv: Conversation = inputs["conversation"]
        by_model = {}
        for model in inputs["chain"].models:
            start = fit(conv.history, self._room(model, conv, inputs["options"], conv.summary_tokens),
                        conv.history_tokens)
            by_model[model] = conv.messages(conv.history[start:])
        return StageResult({"payloads": Payloads(by_model)}, decision="would fit each target's window",
                           why=f"strategy {self.config.strategy}")

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        conversation: Conversation = inputs["conversation"]
        by_model: dict[str, Messages] = {}
        notes: dict[str, dict[str, Any]] = {}
        made: dict[int, tuple[str, int, str]] = {}
        built: dict[int, Messages] = {}
        stored: Conversation | None = None
        for model in inputs["chain"].models:
            by_model[model], notes[model], result = await self._payload(model, conversation, inputs["options"], made,
                                                                        built)
            if result.summary_upto > conversation.summary_upto and (stored is None
                                                                  or result.summary_upto > stored.summary_upto):
                stored = result
        if stored is not None and stored.context_id and self._resources is not None:
            # The widest new summary is kept with the context: later requests reuse it.
            await self._resources.storage.contexts.put_summary(stored.context_id, upto_seq=stored.summary_upto,
                                                               text=stored.summary or "", tokens=stored.summary_tokens)
        dropped = {m: n["dropped"] for m, n in notes.items() if n["dropped"]}
        decision = "nothing to prune" if not dropped else "pruned " + ", ".join(
            f"{m}: dropped {d}" for m, d in dropped.items())
        why = f"strategy {self.config.strategy}; {len(conversation.history)} history messages"
        if stored is not None:
            why += f"; stored a summary of messages 1–{stored.summary_upto}"
        elif conversation.summary:
            why += f"; reused the stored summary of messages 1–{conversation.summary_upto}"
        return StageResult({"payloads": Payloads(by_model, notes)}, decision=decision, why=why,
                           details={"models": notes})
