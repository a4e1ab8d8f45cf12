"""Token counts before a call (routing by cost, worst cases, budget reservations).

- ``estimate_tokens``: one token per four characters, rounded up — the typical English ratio, used
  for display and by the offline provider.
- ``Tokenizers.count``: what reservations use. With a model's ``tokenizer: cl100k_base | o200k_base``
  the real OpenAI BPE (bundled, offline; loaded on first use, about 90 MB each), else a conservative
  approximation of one token per three characters, so a reservation errs on the high side (money paths
  fail closed). Each message adds four tokens of framing.

The providers' own usage numbers replace these as soon as a call returns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from rhetor.types import Message

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "Tokenizers", "estimate_messages_tokens", "estimate_tokens"]

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_messages_tokens(messages: Iterable[Message]) -> int:
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


class Tokenizers:
    """Per-engine tokenizer cache: encodings are loaded once, on first use, and shared by requests."""

    def __init__(self) -> None:
        self._encodings: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _encoding(self, name: str) -> Any:
        encoding = self._encodings.get(name)
        if encoding is None:
            with self._lock:
                encoding = self._encodings.get(name)
                if encoding is None:
                    import bpe_openai  # loaded only when a model asks for it: ~90 MB per encoding

                    encoding = self._encodings[name] = bpe_openai.get_encoding(name)
        return encoding

    def count(self, messages: Iterable[Message], tokenizer: str = "approx") -> int:
        """Prompt tokens for a reservation: exact with a BPE encoding, else rounded up generously."""
        if tokenizer == "approx":
            return sum((len(m.content) + 2) // 3 + MESSAGE_OVERHEAD_TOKENS for m in messages)
        encoding = self._encoding(tokenizer)
        return sum(len(encoding.encode_ordinary(m.content)) + MESSAGE_OVERHEAD_TOKENS for m in messages)
