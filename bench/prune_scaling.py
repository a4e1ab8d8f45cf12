"""Pruning scales linearly with the length of a conversation (issue: 10,000-message contexts).

Times the prune stage's window fitting over contexts of 1k, 10k and 100k messages, in process, and
prints the time per message, which stays flat when the work is linear. A benchmark, not a test:
    .venv/bin/python bench/prune_scaling.py
"""

from __future__ import annotations

import time

from rhetor.stages.prune import fit
from rhetor.types import Conversation, Turn


def measure(n: int, repeat: int = 20) -> float:
    history = tuple(Turn("user" if i % 2 == 0 else "assistant", f"message {i}", 30, i + 1) for i in range(n))
    conversation = Conversation("bench:1", (), history, (Turn("user", "now?", 5),))
    budget = 30 * n  # everything fits: the whole history is walked and rebuilt
    started = time.perf_counter()
    for _ in range(repeat):
        start = fit(conversation.history, budget)
        conversation.messages(conversation.history[start:])
    return (time.perf_counter() - started) / repeat


def main() -> None:
    print(f"{'messages':>9} {'ms per prune':>13} {'µs per message':>15}")
    for n in (1_000, 10_000, 100_000):
        seconds = measure(n)
        print(f"{n:>9} {seconds * 1000:>13.2f} {seconds / n * 1e6:>15.3f}")


if __name__ == "__main__":
    main()
