"""Instructions per served request: ``rhetor serve`` (uvicorn, Litestar, the access log's thread, SQLite's) under
callgrind, counting only while wrk sends 1,000 requests at concurrency 16; the fake upstream and wrk run outside
valgrind on the other core. Repeatable to ~0.1% on a busy machine, where served req/s drift 10-30% (see
``instructions.sh`` for the in-process figure, without uvicorn).

Run:  .venv/bin/python -m bench.instructions_served [--rev REV] [--scenario message|v1]
      (REV: a git revision, default the working tree; about 70 s each, most of it valgrind's start-up)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.runner import BODIES

PATHS = {"message": "/message", "v1": "/v1/chat/completions"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rev", default=None)
    p.add_argument("--scenario", choices=sorted(PATHS), default="message")
    p.add_argument("--requests", type=int, default=1000)
    args = p.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is missing (apt-get install valgrind)")
    procs.ensure_wrk()
    py, _ = procs.bench_python()
    work = Path(tempfile.mkdtemp(prefix="served-ir-"))
    body = work / "body.json"
    body.write_text(json.dumps(BODIES[args.scenario]), encoding="utf-8")
    up_port = procs.free_port(procs.UPSTREAM_DEFAULT_PORT)
    upstream = procs.upstream(py, up_port, work).start()
    src = procs.source(args.rev)
    src = procs.Source(src.root, src.commit, src.dirty_files, snapshot=True)  # started as bench/ab.py starts it
    config = procs.prepare_config(work / "config", up_port, src)
    port = procs.free_port()
    (work / "data").mkdir()
    out = work / "callgrind.out"
    env = {**procs._clean_env(), **src.env(), "RHETOR_REGISTER": "0", "RHETOR_DATA_DIR": str(work / "data"),  # noqa: SLF001
           "BENCH_OPENAI_API_KEY": "bench-not-a-key", "BENCH_ANTHROPIC_API_KEY": "bench-not-a-key"}
    cmd = ["taskset", "-c", str(procs.GATEWAY_CORE), "valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={out}",
           *src.rhetor("serve", "--config", str(config), "--port", str(port), "--host", "127.0.0.1")]
    gateway = procs.Service("gateway under callgrind", cmd, env, work / "gateway.log",
                            f"http://127.0.0.1:{port}/health")
    gateway.cwd = src.root
    url = f"http://127.0.0.1:{port}{PATHS[args.scenario]}"
    try:
        gateway.start(timeout=600)
        procs.run_wrk(url, body, 16, 60, max_requests=300, done_file=work / "warm")  # warm-up, not counted
        control = [shutil.which("callgrind_control") or "callgrind_control"]
        subprocess.run([*control, "--instr=on", str(gateway.pid)], check=True, capture_output=True)  # noqa: S603
        run = procs.run_wrk(url, body, 16, 600, max_requests=args.requests, done_file=work / "done")
        subprocess.run([*control, "--instr=off", str(gateway.pid)], check=True, capture_output=True)  # noqa: S603
    finally:
        gateway.stop()
        upstream.stop()
    time.sleep(0.5)
    annotate = subprocess.run([shutil.which("callgrind_annotate") or "callgrind_annotate",  # noqa: S603
                               *map(str, sorted(work.glob("callgrind.out*")))], capture_output=True, text=True,
                              check=True).stdout
    total = next(int(line.split()[0].replace(",", "")) for line in annotate.splitlines() if "PROGRAM TOTALS" in line)
    print(f"{src.commit}{' +' + str(src.dirty_files) + ' files' if src.dirty_files else ''} {args.scenario}: "
          f"{total / run['requests'] / 1e6:.3f} M instructions per served request "
          f"({run['requests']} requests, {run['errors']} errors)")


if __name__ == "__main__":
    main()
