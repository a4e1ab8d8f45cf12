"""Token estimates used before a call (routing by cost, worst cases, budget reservations).

Without a provider's own tokenizer, Rhetor counts one token per four characters of text, rounded up,
plus four tokens of framing per message: a documented approximation that errs on the high side for
English prose. The providers' own usage numbers replace it as soon as a call returns.
"""

from __future__ import annotations

from collections.abc import Iterable

from rhetor.types import Message

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "estimate_messages_tokens", "estimate_tokens"]

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_messages_tokens(messages: Iterable[Message]) -> int:
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)
