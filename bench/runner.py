"""``python -m bench``: start the fake upstream and ``rhetor serve``, run every scenario, write RESULTS.md.

See bench/README.md for what each scenario measures. Results: bench/RESULTS.md (the Markdown report) and
bench/out/run-<time>/results.json (every raw figure), logs next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.procs import log

PROMPT = "Say hello to the benchmark."
BODIES = {
    "v1": {"model": "rhetor", "messages": [{"role": "user", "content": PROMPT}]},
    "v1_stream": {"model": "rhetor", "messages": [{"role": "user", "content": PROMPT}], "stream": True,
                  "stream_options": {"include_usage": True}},
    "message": {"message": PROMPT, "streaming": False},
    "message_ctx": {"message": PROMPT, "streaming": False, "context_id": "@CTX@"},  # wrk fills in the id
    "stream": {"message": PROMPT},
    # no context id here (nor in the other bodies): one shared conversation would grow with every request
    "ws": {"message": PROMPT, "task_type": "default", "streaming": True},
    # what the gateway itself sends upstream (openai provider: model id, messages, max_tokens)
    "direct": {"model": "gpt-bench", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4096},
    "direct_stream": {"model": "gpt-bench", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4096,
                      "stream": True, "stream_options": {"include_usage": True}},
    "direct_anthropic": {"model": "claude-bench", "messages": [{"role": "user", "content": PROMPT}],
                         "max_tokens": 4096},
    "direct_anthropic_stream": {"model": "claude-bench", "messages": [{"role": "user", "content": PROMPT}],
                                "max_tokens": 4096, "stream": True},
}
PACED_GAP_MS = 10.0  # fake-gpt-paced: gpt-bench;delay_ms=10


@dataclass
class Plan:
    duration: float
    warmup: float
    concurrency: tuple[int, ...]
    memory_requests: tuple[int, int]
    rows: int
    paced_streams: int
    groups: frozenset[str]


ALL_GROUPS = frozenset({"memory", "json", "sse", "ws", "anthropic", "offline", "paced", "rows", "prune"})


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        plan = Plan(3.0, 1.0, (1, 16, 64), (2_000, 20_000), 100_000, 5, ALL_GROUPS)
    else:
        plan = Plan(10.0, 2.0, (1, 16, 64), (10_000, 100_000), 1_000_000, 10, ALL_GROUPS)
    if args.duration:
        plan.duration = args.duration
    if args.warmup is not None:
        plan.warmup = args.warmup
    if args.memory_requests:
        a, b = (int(x) for x in args.memory_requests.split(","))
        plan.memory_requests = (a, b)
    if args.rows:
        plan.rows = args.rows
    if args.only:
        plan.groups = frozenset(args.only.split(","))
    if args.skip:
        plan.groups = plan.groups - frozenset(args.skip.split(","))
    return plan


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = make_plan(args)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = procs.OUT / f"run-{stamp}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "plan": self.plan.__dict__ | {
            "groups": sorted(self.plan.groups)}, "scenarios": [], "notes": []}
        self.upstream: procs.Service | None = None
        self.gw: procs.Service | None = None
        self.py = ""
        self.bodies: dict[str, Path] = {}

    # ------------------------------------------------------------------------------------------ plumbing

    def setup(self) -> None:
        procs.ensure_wrk()
        self.py, has_uvloop = procs.bench_python()
        self.results["load_tools_loop"] = "uvloop" if has_uvloop else "asyncio"
        self.src = procs.source(self.args.rev)
        self.results["machine"] = machine(self.src)
        self.results["rev"] = self.args.rev
        self.results["gateway_stack"] = procs.gateway_stack()
        for name, body in BODIES.items():
            path = self.run_dir / f"body-{name}.json"
            path.write_text(json.dumps(body), encoding="utf-8")
            self.bodies[name] = path
        up_port = procs.free_port(procs.UPSTREAM_DEFAULT_PORT)
        self.config = procs.prepare_config(self.run_dir / "config", up_port, self.src)
        self.results["pipelines"] = sorted(p.name for p in (self.config / "pipelines").glob("*.yaml"))
        self.upstream = procs.upstream(self.py, up_port, self.run_dir).start()
        self.up = f"http://127.0.0.1:{up_port}"
        log(f"fake upstream on {self.up} (pid {self.upstream.pid}, core {procs.CLIENT_CORE})")

    def start_gateway(self, data_dir: Path, tag: str) -> procs.Service:
        port = procs.free_port()
        gw = procs.gateway(self.src, self.config, port, data_dir, self.run_dir / f"gateway-{tag}.log")
        gw.start(timeout=120)
        self.gw_url = f"http://127.0.0.1:{port}"
        log(f"gateway {tag} on {self.gw_url} (pid {gw.pid}, core {procs.GATEWAY_CORE}), ready in {gw.ready_s:.1f} s")
        return gw

    def pids(self) -> dict[str, int]:
        assert self.gw is not None and self.upstream is not None
        return {"gateway": self.gw.pid, "upstream": self.upstream.pid}

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the gateway is idle: requests a load tool gave up on are still being served."""
        if self.gw is None or self.gw.proc is None or self.gw.proc.poll() is not None:
            return
        t_end = time.perf_counter() + timeout
        while time.perf_counter() < t_end:
            c0 = procs.cpu_seconds(self.gw.pid)
            time.sleep(0.3)
            if procs.cpu_seconds(self.gw.pid) - c0 <= 0.015:
                return
        log("warning: the gateway did not become idle")

    def upstream_stats(self) -> dict[str, int]:
        return procs.http_json("GET", f"{self.up}/stats")[1]

    def close(self) -> None:
        for svc in (self.gw, self.upstream):
            if svc is not None:
                svc.stop()

    # ------------------------------------------------------------------------------------------ checks

    def preflight(self) -> None:
        """One request per surface; refuse to measure anything the fake upstream did not answer."""
        g = self.gw_url
        status, body = procs.http_json("POST", f"{g}/v1/chat/completions", BODIES["v1"])
        self.results["v1_mounted"] = status != 404
        if status == 404:
            self.results["notes"].append("POST /v1/chat/completions answered 404: not mounted; skipped")
        else:
            provider = body.get("rhetor", {}).get("provider") if isinstance(body, dict) else None
            if status != 200 or provider != "fake-openai":
                raise SystemExit(f"bench: /v1/chat/completions did not reach the fake upstream: {status} "
                                 f"{str(body)[:500]}")
        status, body = procs.http_json("POST", f"{g}/message", BODIES["message"])
        if status != 200 or body.get("provider") != "fake-openai":
            raise SystemExit(f"bench: /message did not reach the fake upstream: {status} {str(body)[:500]}")
        status, body = procs.http_json("POST", f"{g}/message", {**BODIES["message"], "task_type": "bench-anthropic"})
        self.results["anthropic_ok"] = status == 200 and body.get("provider") == "fake-anthropic"
        if not self.results["anthropic_ok"]:
            self.results["notes"].append(f"the Anthropic path did not reach the fake upstream: {status} "
                                         f"{str(body)[:200]}")
        probe = procs.run_loadgen(self.py, "ws", f"ws://{g.removeprefix('http://')}/ws", BODIES["ws"], duration=0.5,
                                  warmup=0, count=1)
        self.results["ws_available"] = bool(probe.get("available"))
        if not probe.get("available"):
            self.results["notes"].append(f"WebSocket /ws not available: {probe.get('reason')}")
            log(f"WS /ws: not available ({probe.get('reason')}); WebSocket scenarios skipped")
        elif probe.get("errors"):
            raise SystemExit(f"bench: /ws answered with errors: {probe.get('error_examples')}")

    # ------------------------------------------------------------------------------------------ scenarios

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.results["scenarios"].append(row)
        def ms(v: float | None) -> str:
            return "–" if v is None else f"{v:.2f} ms"

        rate = row.get("rate")
        cpu = row.get("gw_cpu_ms")
        log(f"{row['group']:<9} {row['name']:<42} c={row['concurrency']:<3} "
            f"{'–' if rate is None else f'{rate:,.0f}/s':>10}  p50 {ms(row.get('p50_ms'))}  p99 {ms(row.get('p99_ms'))}"
            f"  errors {row.get('errors', 0)}" + (f"  gateway CPU/req {cpu:.3f} ms" if cpu else ""))
        return row

    def json_run(self, group: str, name: str, url: str, body: str, c: int, *, gateway: bool = True,
                 counter: str = "openai_json", contexts: tuple[str, int] | None = None) -> dict[str, Any]:
        d, w = self.plan.duration, self.plan.warmup
        self.settle()
        if w > 0:
            warm = (contexts[0] + "warm-", contexts[1]) if contexts else None
            procs.run_wrk(url, self.bodies[body], c, w, contexts=warm)
            self.settle()
        before = self.upstream_stats()
        r = procs.run_wrk(url, self.bodies[body], c, d, pids=self.pids(), contexts=contexts)
        after = self.upstream_stats()
        self.settle()
        row = {"group": group, "name": name, "kind": "json", "target": "gateway" if gateway else "direct", "url": url,
               "concurrency": c, "rate": r["rate"], "requests": r["requests"], "errors": r["errors"],
               "p50_ms": r["lat_p50_us"] / 1000, "p90_ms": r["lat_p90_us"] / 1000, "p99_ms": r["lat_p99_us"] / 1000,
               "mean_ms": r["lat_mean_us"] / 1000, "window_s": r["duration_us"] / 1e6}
        self._cpu(row, r["cpu"], r["cores"], r["loadgen_cpu_s"], r["wall_s"], r["requests"], gateway)
        row["upstream_calls_per_request"] = (after[counter] - before[counter]) / max(1, r["requests"])
        row["upstream_connections"] = after["connections"] - before["connections"]
        return self.add(row)

    def stream_run(self, group: str, name: str, mode: str, url: str, body: Any, kind: str, c: int, *,
                   gateway: bool = True, counter: str = "openai_stream") -> dict[str, Any] | None:
        self.settle()
        before = self.upstream_stats()
        r = procs.run_loadgen(self.py, mode, url, body, kind=kind, concurrency=c, duration=self.plan.duration,
                              warmup=self.plan.warmup, pids=self.pids())
        after = self.upstream_stats()
        if not r.get("available"):
            return None
        row = {"group": group, "name": name, "kind": mode, "target": "gateway" if gateway else "direct", "url": url,
               "concurrency": c, "rate": r["rate"], "requests": r["streams"], "errors": r["errors"],
               "error_examples": r["error_examples"], "p50_ms": r["ttft_ms"]["p50"], "p90_ms": r["ttft_ms"]["p90"],
               "p99_ms": r["ttft_ms"]["p99"], "total_p50_ms": r["total_ms"]["p50"],
               "total_p99_ms": r["total_ms"]["p99"],
               "chunks_per_stream": r["chunks_per_stream"], "window_s": r["window_s"]}
        self._cpu(row, r["cpu"], {int(k): v for k, v in r["cores"].items()}, r["loadgen_cpu_s"], r["window_s"],
                  r["streams"], gateway)
        total_streams = sum(after[k] - before[k] for k in after if k.endswith("_stream"))
        row["upstream_calls_per_request"] = (after[counter] - before[counter]) / max(1, total_streams) \
            if gateway else 1.0
        row["upstream_connections"] = after["connections"] - before["connections"]
        return self.add(row)

    @staticmethod
    def _cpu(row: dict[str, Any], cpu: dict[str, float], cores: dict[int, float], loadgen_s: float, wall: float,
             n: int, gateway: bool) -> None:
        gw = cpu.get("gateway", 0.0)
        row["gw_cpu_util"] = gw / wall if gateway else None
        row["gw_cpu_ms"] = gw * 1000 / n if gateway and n else None
        row["client_core_util"] = (cpu.get("upstream", 0.0) + loadgen_s) / wall
        row["core_busy"] = {str(k): v for k, v in cores.items()}
        # CPU used on each core by anything else than the gateway / the upstream and load tool: other work on
        # the machine, i.e. noise in the figures (a direct run's gateway CPU counts as noise too)
        row["foreign_gw_core"] = max(0.0, cores.get(procs.GATEWAY_CORE, 0.0) - (gw / wall if gateway else 0.0))
        row["foreign_client_core"] = max(0.0, cores.get(procs.CLIENT_CORE, 0.0) - row["client_core_util"])

    def run_memory(self) -> None:
        n1, n2 = self.plan.memory_requests
        mem = self.results["memory"]
        done = self.run_dir / "wrk-done"
        served = 0
        for target in (n1, n2):
            todo = target - served
            # /v1 without a context; /message with one of 10,000 conversations (each grows a turn per visit)
            for path, body, ctx in (("/v1/chat/completions", "v1", None),
                                    ("/message", "message_ctx", ("bench-mem-", 10_000))):
                if path.startswith("/v1") and not self.results["v1_mounted"]:
                    continue
                share = todo // 2 if self.results["v1_mounted"] else todo
                r = procs.run_wrk(self.gw_url + path, self.bodies[body], 16, 3600, max_requests=share, done_file=done,
                                  contexts=ctx)
                served += r["requests"]
                self.settle()
                if r["errors"]:
                    self.results["notes"].append(f"memory phase: {r['errors']} errors on {path}")
            mem[f"after_{target}"] = {"requests": served, "rss_mb": procs.rss_mb(self.gw.pid)}  # type: ignore[union-attr]
            log(f"memory   RSS after {served:,} requests: {mem[f'after_{target}']['rss_mb']:.1f} MB")

    def run_json(self) -> None:
        for c in self.plan.concurrency:
            self.json_run("json", "direct upstream", f"{self.up}/v1/chat/completions", "direct", c, gateway=False)
            if self.results["v1_mounted"]:
                self.json_run("json", "POST /v1/chat/completions", f"{self.gw_url}/v1/chat/completions", "v1", c)
            self.json_run("json", "POST /message", f"{self.gw_url}/message", "message", c)
            if c == 16:  # the conversation stages at work: 16 stored conversations, growing in turn
                self.json_run("json", "POST /message + context_id (16 conversations)", f"{self.gw_url}/message",
                              "message_ctx", c, contexts=("bench-json-", 16))

    def run_sse(self) -> None:
        for c in self.plan.concurrency:
            self.stream_run("sse", "direct upstream (OpenAI SSE)", "sse", f"{self.up}/v1/chat/completions",
                            BODIES["direct_stream"], "openai", c, gateway=False)
            self.stream_run("sse", "POST /stream", "sse", f"{self.gw_url}/stream", BODIES["stream"], "rhetor", c)
            if self.results["v1_mounted"]:
                self.stream_run("sse", "POST /v1/chat/completions (stream)", "sse",
                                f"{self.gw_url}/v1/chat/completions", BODIES["v1_stream"], "openai", c)

    def run_ws(self) -> None:
        if not self.results["ws_available"]:
            return
        ws = f"ws://{self.gw_url.removeprefix('http://')}/ws"
        for c in self.plan.concurrency:
            self.stream_run("ws", "WS /ws LLM_REQUEST (streaming)", "ws", ws, BODIES["ws"], "rhetor", c)

    def run_anthropic(self) -> None:
        if not self.results["anthropic_ok"]:
            return
        c = 16
        self.json_run("anthropic", "direct upstream /v1/messages", f"{self.up}/v1/messages", "direct_anthropic", c,
                      gateway=False, counter="anthropic_json")
        path = self.run_dir / "body-message-anthropic.json"
        path.write_text(json.dumps({**BODIES["message"], "task_type": "bench-anthropic"}), encoding="utf-8")
        self.bodies["message_anthropic"] = path
        self.json_run("anthropic", "POST /message via Anthropic", f"{self.gw_url}/message", "message_anthropic", c,
                      counter="anthropic_json")
        self.stream_run("anthropic", "direct upstream /v1/messages (SSE)", "sse", f"{self.up}/v1/messages",
                        BODIES["direct_anthropic_stream"], "anthropic", c, gateway=False, counter="anthropic_stream")
        self.stream_run("anthropic", "POST /stream via Anthropic", "sse", f"{self.gw_url}/stream",
                        {**BODIES["stream"], "task_type": "bench-anthropic"}, "rhetor", c, counter="anthropic_stream")

    def run_offline(self) -> None:
        """Rhetor alone: the same default pipeline (routing, budget reserve/settle, contexts, trace) answered by
        the offline ``simulated`` provider: no vendor SDK, no upstream. The difference to the rows above is
        what the SDK path costs."""
        c = 16
        path = self.run_dir / "body-message-offline.json"
        path.write_text(json.dumps({**BODIES["message"], "task_type": "bench-offline"}), encoding="utf-8")
        self.bodies["message_offline"] = path
        self.json_run("offline", "POST /message, offline provider", f"{self.gw_url}/message", "message_offline", c)
        self.stream_run("offline", "POST /stream, offline provider", "sse", f"{self.gw_url}/stream",
                        {**BODIES["stream"], "task_type": "bench-offline"}, "rhetor", c)

    def run_paced(self) -> None:
        n = self.plan.paced_streams
        cases = [("direct upstream (OpenAI SSE)", "sse", f"{self.up}/v1/chat/completions",
                  {**BODIES["direct_stream"], "model": "gpt-bench;delay_ms=10"}, "openai"),
                 ("POST /stream", "sse", f"{self.gw_url}/stream", {**BODIES["stream"], "task_type": "bench-paced"},
                  "rhetor")]
        if self.results["v1_mounted"]:
            cases.append(("POST /v1/chat/completions (stream)", "sse", f"{self.gw_url}/v1/chat/completions",
                          {**BODIES["v1_stream"], "model": "bench-paced"}, "openai"))
        if self.results["ws_available"]:
            cases.append(("WS /ws LLM_REQUEST (streaming)", "ws", f"ws://{self.gw_url.removeprefix('http://')}/ws",
                          {**BODIES["ws"], "task_type": "bench-paced"}, "rhetor"))
        for name, mode, url, body, kind in cases:
            r = procs.run_loadgen(self.py, mode, url, body, kind=kind, concurrency=1, duration=60, warmup=0,
                                  count=n, gaps_ms=PACED_GAP_MS)
            g = r.get("gaps") or {}
            row = {"group": "paced", "name": name, "kind": mode, "concurrency": 1, "streams": r.get("streams"),
                   "errors": r.get("errors"), "ttft_p50_ms": r["ttft_ms"]["p50"], **g}
            self.results["scenarios"].append(row)
            log(f"paced     {name:<42} spread {g.get('spread_ms_p50', float('nan')):.1f} ms, separate arrivals "
                f"min {g.get('separate_arrivals_min')}/{g.get('expected_separate')}, max lag p50 "
                f"{g.get('max_lag_ms_p50', float('nan')):.1f} ms")

    def run_prune(self) -> None:
        """bench/prune_scaling.py on the gateway's core (no gateway running): prune alone and whole requests over
        stored contexts of 1k, 10k and 100k messages, in process, on the code under test."""
        cmd = ["taskset", "-c", str(procs.GATEWAY_CORE), str(procs.ROOT / ".venv" / "bin" / "python"),
               str(procs.BENCH / "prune_scaling.py"), "--json", "--repeat", "3" if self.args.quick else "9",
               "--root", str(self.src.root)]
        env = {**os.environ, **self.src.env()}
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=self.src.root)  # noqa: S603
        if out.returncode != 0:
            self.results["prune"] = {"error": out.stderr.strip()[-500:]}
            log(f"prune     failed: {out.stderr.strip()[-300:]}")
            return
        res = self.results["prune"] = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"prune     10k-message context: request {res['points'][1]['request_s'] * 1e3:.1f} ms; slope 10k→100k "
            f"vs 1k→10k ×{res['first_request']['ratio']:.2f} (first request), ×{res['prune']['ratio']:.2f} "
            "(prune alone)")

    def run_rows(self) -> None:
        """The same load on two gateways side by side: one on a database holding a warm-up's rows, one on a copy of
        it grown to ``rows`` rows per table. Their windows alternate (fresh, seeded, seeded, fresh, twice), so a
        drift of the machine, or the disk still writing back the seeding, weighs on both alike. Each pair of
        neighbouring windows gives a ratio (seeded ÷ fresh), and the check reads the median of the four: a drift
        between pairs cancels out, and one disturbed window moves one ratio, not the result."""
        res = self.results["rows"] = {"rows": self.plan.rows}
        fresh, seeded = self.run_dir / "data-rows-fresh", self.run_dir / "data-rows-seeded"
        self.gw = self.start_gateway(fresh, "rows-warm-up")
        try:  # /message with 16 conversations: every table the request path writes gets rows
            procs.run_wrk(f"{self.gw_url}/message", self.bodies["message_ctx"], 16, max(1.0, self.plan.warmup),
                          contexts=("bench-rows-warm-", 16))
            self.settle()
        finally:
            self.gw.stop()
        dbs = [p for p in fresh.rglob("*") if p.suffix in (".sqlite3", ".sqlite", ".db")]
        if not dbs:
            res["status"] = "n/a"
            res["reason"] = "the gateway wrote no database under RHETOR_DATA_DIR: storage is not wired yet"
            log(f"rows      {res['reason']}; skipped")
            return
        shutil.copytree(fresh, seeded)
        log(f"rows      seeding {self.plan.rows:,} rows per table into a copy of {', '.join(p.name for p in dbs)}")
        cmd = [str(procs.ROOT / ".venv" / "bin" / "python"), str(procs.BENCH / "seed_rows.py"),
               "--data-dir", str(seeded), "--rows", str(self.plan.rows)]
        seed = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        res["seed"] = json.loads(seed.stdout) if seed.returncode == 0 else {"error": seed.stderr[-500:]}
        os.sync()  # the seeding's writes reach the disk before anything is measured
        gateways: dict[str, tuple[procs.Service, str]] = {}
        runs: dict[str, list[dict[str, Any]]] = {"fresh": [], "seeded": []}
        try:
            for phase, data in (("fresh", fresh), ("seeded", seeded)):
                gateways[phase] = (self.start_gateway(data, f"rows-{phase}"), self.gw_url)
            for phase in ("fresh", "seeded", "seeded", "fresh") * 2:
                self.gw, self.gw_url = gateways[phase]
                n = len(runs[phase]) + 1
                row = self.json_run("rows", f"POST /message + context_id ({phase} database, run {n})",
                                    f"{self.gw_url}/message", "message_ctx", 16, contexts=(f"bench-{phase}{n}-", 16))
                row["phase"] = phase
                runs[phase].append(row)
        finally:
            for gw, _ in gateways.values():
                gw.stop()
        for phase, data in (("fresh", fresh), ("seeded", seeded)):
            rs = runs[phase]
            res[phase] = {"rate": statistics.median(r["rate"] for r in rs),
                          "gw_cpu_ms": statistics.median(r["gw_cpu_ms"] for r in rs),
                          "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                          "noisy": [r["foreign_client_core"] > 0.25 or r["foreign_gw_core"] > 0.25 for r in rs],
                          "db_files": sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())}
        res["status"] = "measured"
        pairs = list(zip(runs["fresh"], runs["seeded"], strict=True))  # the i-th of each ran next to each other
        res["cpu_ratios"] = [b["gw_cpu_ms"] / a["gw_cpu_ms"] for a, b in pairs if a["gw_cpu_ms"]]
        res["rate_ratios"] = [b["rate"] / a["rate"] for a, b in pairs if a["rate"]]
        res["cpu_ratio"] = statistics.median(res["cpu_ratios"]) if res["cpu_ratios"] else None
        res["rate_ratio"] = statistics.median(res["rate_ratios"]) if res["rate_ratios"] else None

    # ------------------------------------------------------------------------------------------ main

    def run(self) -> Path:
        t0 = time.perf_counter()
        os.sched_setaffinity(0, {procs.CLIENT_CORE})
        self.results["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
        try:
            self.setup()
            data = self.run_dir / "data"
            self.gw = self.start_gateway(data, "main")
            time.sleep(1.0)
            mem = self.results["memory"] = {"start_rss_mb": procs.rss_mb(self.gw.pid), "ready_s": self.gw.ready_s}
            self.preflight()
            time.sleep(1.0)
            mem["idle_rss_mb"] = procs.rss_mb(self.gw.pid)
            log(f"memory   RSS at start {mem['start_rss_mb']:.1f} MB, idle after the first requests "
                f"{mem['idle_rss_mb']:.1f} MB")
            groups = self.plan.groups
            for group, fn in (("memory", self.run_memory), ("json", self.run_json), ("sse", self.run_sse),
                              ("ws", self.run_ws), ("anthropic", self.run_anthropic), ("offline", self.run_offline),
                              ("paced", self.run_paced)):
                if group in groups:
                    fn()
            mem["end_rss_mb"] = procs.rss_mb(self.gw.pid)
            self.results["upstream_stats"] = self.upstream_stats()
            self.gw.stop()
            if "prune" in groups:
                self.run_prune()
            if "rows" in groups:
                if any(p.is_file() for p in data.rglob("*")):
                    self.run_rows()
                else:
                    self.results["rows"] = {"rows": self.plan.rows, "status": "n/a", "reason": (
                        "the gateway wrote no database under RHETOR_DATA_DIR during the run: storage is not wired "
                        "into the server yet")}
                    log(f"rows      not measured: {self.results['rows']['reason']}")
        finally:
            self.close()
        self.results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        self.results["wall_s"] = time.perf_counter() - t0
        (self.run_dir / "results.json").write_text(json.dumps(self.results, indent=2), encoding="utf-8")
        out = Path(self.args.report) if self.args.report else procs.BENCH / "RESULTS.md"
        out.write_text(report.render(self.results), encoding="utf-8")
        log(f"done in {self.results['wall_s']:.0f} s: {out} and {self.run_dir / 'results.json'}")
        return out


def machine(src: procs.Source) -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"commit": src.commit, "dirty_files": src.dirty_files, "snapshot": src.snapshot,
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "cpu": model, "kernel": platform.release(),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short smoke run: 3 s windows, 2k/20k memory, 100k rows")
    p.add_argument("--duration", type=float, help="measured seconds per scenario (10; quick 3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each scenario (2; quick 1)")
    p.add_argument("--memory-requests", help="A,B: RSS after A and after B requests (10000,100000)")
    p.add_argument("--rows", type=int, help="stored rows per table for the rows check (1000000)")
    p.add_argument("--only", help=f"comma-separated groups: {','.join(sorted(ALL_GROUPS))}")
    p.add_argument("--skip", help="comma-separated groups to leave out")
    p.add_argument("--report", help="where to write the Markdown report (bench/RESULTS.md)")
    p.add_argument("--rev", help="benchmark this git revision (a clean snapshot via git archive, e.g. HEAD) "
                   "instead of the working tree")
