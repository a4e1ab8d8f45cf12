"""Pruning scales linearly with the length of a conversation (issue 8: 10,000-message contexts).

Two measurements, in process, for conversations of 1k, 10k and 100k stored messages:

- **prune alone**: the prune stage's window fitting and payload building (``fit`` + ``Conversation.messages``)
  over a history that fits whole, so every message is walked and rebuilt;
- **whole request**: ``Engine.run`` of the shipped default pipeline on SQLite (answered offline by ``simulated``,
  whose 200k-token window keeps 10k messages whole and prunes 100k), with the context stored beforehand:
  context load, prune, budget, answer and the append of the new pair. The **first** request of a fresh process
  reads the whole history from SQLite; the **next** ones (the median is reported) find it in the storage's history
  cache, when it fits there (10k messages do, 100k do not: ``rhetor/storage/history_cache.py``), and read only the
  messages stored since. Linearity is judged on prune alone and on the first request, which do the same work at
  every size.

Linear means a constant cost per extra message: the report compares the slope from 1k to 10k messages with the
slope from 10k to 100k and calls it linear within ×2. A quadratic step would make the second slope about ten
times the first; memory effects alone (100k messages no longer fit the CPU's caches) make it about ×1.3 here, and
an n log n step (×1.25) could not be told from them. A benchmark, not a test.

Run: ``.venv/bin/python bench/prune_scaling.py [--json] [--repeat N]``; ``bench/run.sh`` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rhetor.engine.engine import build_engine
from rhetor.engine.resources import Resources
from rhetor.stages.base import Request
from rhetor.stages.prune import fit
from rhetor.storage import StoredMessageIn
from rhetor.types import Conversation, RequestOptions, Turn

REPO = Path(__file__).resolve().parents[1]
SIZES = (1_000, 10_000, 100_000)
TOKENS = 13  # per stored message: what context_save would store for "message <i> of a long conversation"
SLOPE_LIMIT = 2.0  # linear: the 10k→100k cost per extra message stays within this factor of the 1k→10k one


def prune_alone(n: int, repeat: int) -> float:
    """Median seconds to fit and rebuild an n-message history that fits whole."""
    history = tuple(Turn.of("user" if i % 2 == 0 else "assistant", f"message {i}", 30, i + 1) for i in range(n))
    conversation = Conversation("bench:1", (), history, (Turn.of("user", "now?", 5),))
    budget = 30 * n
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        start = fit(conversation.history, budget)
        conversation.messages(conversation.history[start:])
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def whole_request(n: int, repeat: int, root: Path = REPO) -> tuple[float, float]:
    """Seconds of the first default-pipeline request on a context holding n stored messages (SQLite), which reads its
    whole history, and the median of the requests after it (which read only what is new since)."""
    with tempfile.TemporaryDirectory() as data:
        resources = Resources.from_env({"RHETOR_DATA_DIR": data})
        engine = build_engine(root, env={}, resources=resources)
        try:
            await resources.ensure_started()
            contexts = resources.storage.contexts
            context_id = f"bench:{n}"
            for first in range(0, n, 2_000):
                await contexts.append(context_id, [
                    StoredMessageIn("user" if i % 2 == 0 else "assistant", f"message {i} of a long conversation",
                                    TOKENS) for i in range(first, min(n, first + 2_000))])
            warm = RequestOptions(task_type="chat", context_id="bench:warm-up")
            for _ in range(3):  # the engine's first requests pay one-time costs that are not the history's
                await engine.run(Request.from_text("and now?", warm))
            options = RequestOptions(task_type="chat", context_id=context_id)
            started = time.perf_counter()
            await engine.run(Request.from_text("and now?", options))  # reads the whole history (and its pages)
            first = time.perf_counter() - started
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await engine.run(Request.from_text("and now?", options))
                times.append(time.perf_counter() - started)
            return first, statistics.median(times)
        finally:
            await engine.aclose()
            await resources.close()


def slopes(points: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Seconds per extra message between consecutive sizes, and the last slope over the first."""
    (n0, t0), (n1, t1), (n2, t2) = ((p["messages"], p[key]) for p in points)
    first, second = (t1 - t0) / (n1 - n0), (t2 - t1) / (n2 - n1)
    return {"first_us": first * 1e6, "second_us": second * 1e6, "ratio": second / first if first > 0 else float("inf")}


def measure(repeat: int, root: Path = REPO) -> dict[str, Any]:
    points = []
    for n in SIZES:
        reps = max(3, repeat if n < 100_000 else repeat // 3)
        first, request = asyncio.run(whole_request(n, reps, root))
        points.append({"messages": n, "prune_s": prune_alone(n, reps), "request_s": request, "first_request_s": first})
    out = {"points": points, "prune": slopes(points, "prune_s"), "request": slopes(points, "request_s"),
           "first_request": slopes(points, "first_request_s"), "slope_limit": SLOPE_LIMIT}
    # Like with like: the first request reads the whole history at every size, while a later one finds it in the
    # history cache only when it fits (10k messages do, 100k do not), so its slopes mix the two.
    out["linear"] = all(out[k]["ratio"] <= SLOPE_LIMIT for k in ("prune", "first_request"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--repeat", type=int, default=9, help="timed runs per size (a third of it at 100k)")
    p.add_argument("--root", type=Path, default=REPO, help="the configuration's root (default: this checkout)")
    args = p.parse_args()
    res = measure(args.repeat, args.root)
    if args.json:
        print(json.dumps(res))
        return
    print(f"{'messages':>9} {'prune ms':>9} {'µs/msg':>7} {'request ms':>11} {'µs/msg':>7} {'first ms':>9}")
    for pt in res["points"]:
        n = pt["messages"]
        print(f"{n:>9,} {pt['prune_s'] * 1e3:>9.2f} {pt['prune_s'] / n * 1e6:>7.3f} {pt['request_s'] * 1e3:>11.2f} "
              f"{pt['request_s'] / n * 1e6:>7.3f} {pt['first_request_s'] * 1e3:>9.2f}")
    for key in ("prune", "request", "first_request"):
        s = res[key]
        print(f"{key:>7}: {s['first_us']:.3f} µs per extra message from 1k to 10k, {s['second_us']:.3f} from 10k to "
              f"100k (×{s['ratio']:.2f})")
    print("linear" if res["linear"] else f"NOT linear (a slope grew more than ×{SLOPE_LIMIT})")


if __name__ == "__main__":
    main()
