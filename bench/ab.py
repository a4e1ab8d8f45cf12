"""Interleaved A/B of two Rhetor revisions on one JSON scenario: which is cheaper per request, on this machine, now.

A full ``bench/run.sh`` on a shared machine drifts by 10-30% between runs; alternating short windows of the two
revisions against one fake upstream cancels most of that drift. Both gateways run side by side (each pinned to the
gateway core, only one loaded at a time) with their own data directory; each pair measures A then B, or B then A,
in turn.

Run:  .venv/bin/python -m bench.ab A B [--pairs 4] [--seconds 5] [--c 64] [--scenario message|v1|offline|context]
A and B are git revisions (``HEAD~1``, a hash) or ``WT`` for the working tree.
Prints each pair and the medians: requests/s and gateway CPU ms per request (all its threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.runner import BODIES

SCENARIOS = {  # name: (path, body)
    "message": ("/message", BODIES["message"]),
    "v1": ("/v1/chat/completions", BODIES["v1"]),
    "offline": ("/message", {**BODIES["message"], "task_type": "bench-offline"}),  # no SDK, no upstream
    "context": ("/message", BODIES["message_ctx"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--c", type=int, default=64)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="message")
    args = p.parse_args()
    procs.ensure_wrk()
    py, _ = procs.bench_python()
    work = Path(tempfile.mkdtemp(prefix="ab-", dir=procs.OUT if procs.OUT.exists() else None))
    path, body = SCENARIOS[args.scenario]
    body_file = work / "body.json"
    body_file.write_text(json.dumps(body), encoding="utf-8")
    contexts = ("ab-", 16) if args.scenario == "context" else None  # 16 conversations that grow in turn
    up_port = procs.free_port(procs.UPSTREAM_DEFAULT_PORT)
    upstream = procs.upstream(py, up_port, work).start()
    gateways: dict[str, procs.Service] = {}
    urls: dict[str, str] = {}
    try:
        for tag, rev in (("A", args.a), ("B", args.b)):
            src = procs.source(None if rev == "WT" else rev)
            # started as a snapshot is (python -m rhetor, PYTHONPATH), not by the console script: the two ways
            # read 10-15% apart here in a few windows, so both sides of the comparison start the same way
            src = procs.Source(src.root, src.commit, src.dirty_files, snapshot=True)
            config = procs.prepare_config(work / f"config-{tag}", up_port, src)
            port = procs.free_port()
            (work / f"data-{tag}").mkdir()
            gw = procs.gateway(src, config, port, work / f"data-{tag}", work / f"gateway-{tag}.log")
            gateways[tag] = gw.start(timeout=120)
            urls[tag] = f"http://127.0.0.1:{port}{path}"
            procs.log(f"{tag} = {rev} ({src.commit}{' +' + str(src.dirty_files) + ' files' if src.dirty_files else ''})"
                      f" on port {port}")
        for tag in urls:  # warm up both
            procs.run_wrk(urls[tag], body_file, args.c, 2, contexts=contexts)
        results: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
        for i in range(args.pairs):
            for tag in ("A", "B") if i % 2 == 0 else ("B", "A"):
                time.sleep(0.5)
                r = procs.run_wrk(urls[tag], body_file, args.c, args.seconds, pids={"gw": gateways[tag].pid},
                                  contexts=contexts)
                if r["errors"]:
                    raise SystemExit(f"{tag}: {r['errors']} errors")
                results[tag].append((r["rate"], r["cpu"]["gw"] / r["requests"] * 1e3))
            a, b = results["A"][-1], results["B"][-1]
            print(f"pair {i + 1}: A {a[0]:7.0f} req/s {a[1]:.3f} ms   B {b[0]:7.0f} req/s {b[1]:.3f} ms", flush=True)
        for tag in ("A", "B"):
            rates = [r for r, _ in results[tag]]
            cpus = [c for _, c in results[tag]]
            print(f"{tag} median: {statistics.median(rates):7.0f} req/s, {statistics.median(cpus):.3f} ms CPU/request")
        wins = sum(b[1] < a[1] for a, b in zip(results["A"], results["B"], strict=True))
        print(f"B cheaper per request in {wins} of {args.pairs} pairs")
    finally:
        for gw in gateways.values():
            gw.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
