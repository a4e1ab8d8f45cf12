"""Render a run's results (bench/out/run-*/results.json) as bench/RESULTS.md, with the targets side by side.

``python -m bench.report bench/out/run-<time>/results.json`` re-renders an earlier run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MET, NOT_MET, NA = "met", "**not met**", "n/a"


def _f(v: Any, fmt: str = "{:.2f}", none: str = "–") -> str:
    return none if v is None else fmt.format(v)


def _ratios(ratios: list[float] | None) -> str:
    """``[1.02, 0.97]`` → ``"+2.0%, −3.0%"`` (each ratio of neighbouring windows as a change)."""
    return ", ".join(f"{r - 1:+.1%}" for r in ratios or []) or "–"


def _rows(res: dict[str, Any], group: str, name: str | None = None, target: str | None = None) -> list[dict[str, Any]]:
    return [r for r in res["scenarios"] if r["group"] == group and (name is None or r["name"] == name)
            and (target is None or r.get("target") == target)]


def _at(res: dict[str, Any], group: str, name: str, c: int) -> dict[str, Any] | None:
    return next((r for r in _rows(res, group, name) if r["concurrency"] == c), None)


def _best(res: dict[str, Any], group: str, name: str) -> dict[str, Any] | None:
    rows = [r for r in _rows(res, group, name) if r.get("rate") is not None]
    return max(rows, key=lambda r: r["rate"]) if rows else None


def _status(ok: bool | None) -> str:
    return NA if ok is None else (MET if ok else NOT_MET)


def _direct_name(group: str) -> str:
    return "direct upstream" if group == "json" else "direct upstream (OpenAI SSE)"


def _added(res: dict[str, Any], group: str, name: str, c: int, key: str) -> float | None:
    r, d = _at(res, group, name, c), _at(res, group, _direct_name(group), c)
    if r is None or d is None or r.get(key) is None or d.get(key) is None:
        return None
    return r[key] - d[key]


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    json_eps = ["POST /v1/chat/completions", "POST /message"]
    sse_eps = ["POST /stream", "POST /v1/chat/completions (stream)"]
    for ep in json_eps:
        b = _best(res, "json", ep)
        out.append((f"Non-streaming throughput, `{ep.split()[1]}`", "≥ 1,500 req/s",
                    f"{b['rate']:,.0f} req/s (c={b['concurrency']})" if b else "not run",
                    _status(b["rate"] >= 1500 if b else None)))
    for ep in json_eps:
        p50, p99 = _added(res, "json", ep, 1, "p50_ms"), _added(res, "json", ep, 1, "p99_ms")
        out.append((f"Added latency at c=1, `{ep.split()[1]}` (p50 / p99)", "≤ 1 ms / ≤ 3 ms",
                    f"+{_f(p50)} ms / +{_f(p99)} ms" if p50 is not None else "not run",
                    _status(None if p50 is None or p99 is None else p50 <= 1 and p99 <= 3)))
    for ep in json_eps:
        r = _at(res, "json", ep, 16)
        cpu = r.get("gw_cpu_ms") if r else None
        out.append((f"Gateway CPU per request, `{ep.split()[1]}` (c=16)", "≤ 0.6 ms",
                    f"{cpu:.2f} ms" if cpu is not None else "not run", _status(None if cpu is None else cpu <= 0.6)))
    for ep in sse_eps:
        b = _best(res, "sse", ep)
        label = "`/stream`" if ep == "POST /stream" else "`/v1/chat/completions` stream"
        out.append((f"Streaming throughput (20 chunks), {label}", "≥ 600 streams/s",
                    f"{b['rate']:,.0f} streams/s (c={b['concurrency']})" if b else "not run",
                    _status(b["rate"] >= 600 if b else None)))
    for ep in sse_eps:
        a = _added(res, "sse", ep, 1, "p50_ms")
        label = "`/stream`" if ep == "POST /stream" else "`/v1/chat/completions` stream"
        out.append((f"Added time to first token at c=1 (p50), {label}", "≤ 1 ms",
                    f"+{_f(a)} ms" if a is not None else "not run", _status(None if a is None else a <= 1)))
    paced = {r["name"]: r for r in _rows(res, "paced")}
    direct = paced.get("direct upstream (OpenAI SSE)")
    verdicts, notes = [], []
    for name, r in paced.items():
        if r is direct or not r.get("chunks"):
            continue
        ok = (r["separate_arrivals_min"] >= r["expected_separate"] - 2
              and direct is not None and r["spread_ms_p50"] >= 0.9 * direct["spread_ms_p50"])
        verdicts.append(ok)
        notes.append(f"{name.split(' (')[0].replace('POST ', '').replace(' LLM_REQUEST', '')}: "
                     f"{r['separate_arrivals_min']}/{r['expected_separate']} apart, spread {r['spread_ms_p50']:.0f} ms")
    out.append(("Chunks forwarded as they arrive (20 chunks 10 ms apart)", "no batching",
                "; ".join(notes) + (f" (direct {direct['spread_ms_p50']:.0f} ms)" if direct else "") if notes
                else "not run", _status(all(verdicts) if verdicts else None)))
    ws, sse = _best(res, "ws", "WS /ws LLM_REQUEST (streaming)"), _best(res, "sse", "POST /stream")
    if not res.get("ws_available", True):
        out.append(("WebSocket `/ws` streaming vs SSE `/stream`", "within 20%", "not available (404)", NA))
    else:
        ratio = ws["rate"] / sse["rate"] if ws and sse else None
        out.append(("WebSocket `/ws` streaming vs SSE `/stream`", "within 20%",
                    f"{ws['rate']:,.0f} vs {sse['rate']:,.0f} streams/s ({ratio:.0%})" if ratio else "not run",
                    _status(None if ratio is None else ratio >= 0.8)))
    mem = res.get("memory", {})
    idle = mem.get("idle_rss_mb")
    out.append(("Idle RSS (after the first requests)", "≤ 100 MB",
                f"{idle:.1f} MB (at start {mem.get('start_rss_mb', 0):.1f} MB)" if idle else "not run",
                _status(None if idle is None else idle <= 100)))
    n1, n2 = res["plan"]["memory_requests"]
    a, b = mem.get(f"after_{n1}"), mem.get(f"after_{n2}")
    growth = b["rss_mb"] / a["rss_mb"] - 1 if a and b else None
    out.append((f"RSS after {n2:,} vs after {n1:,} requests", "within 10%",
                f"{a['rss_mb']:.1f} → {b['rss_mb']:.1f} MB ({growth:+.1%})" if growth is not None else "not run",
                _status(None if growth is None else growth <= 0.10)))
    rows = res.get("rows", {})
    if rows.get("status") == "measured" and rows.get("cpu_ratio"):
        ok = abs(rows["cpu_ratio"] - 1) <= 0.10 and abs(rows["rate_ratio"] - 1) <= 0.10
        pairs = "median of neighbouring windows" if rows.get("cpu_ratios") else "better window of each"
        out.append((f"Request cost, 1 vs {rows['rows']:,} stored rows", "within 10%",
                    f"CPU/req {rows['fresh']['gw_cpu_ms']:.2f} → {rows['seeded']['gw_cpu_ms']:.2f} ms; "
                    f"{pairs}: CPU/req {rows['cpu_ratio'] - 1:+.1%}, req/s {rows['rate_ratio'] - 1:+.1%}",
                    _status(ok)))
    else:
        out.append((f"Request cost, 1 vs {rows.get('rows', 1_000_000):,} stored rows", "within 10%",
                    rows.get("reason", "not run"), NA))
    out.append(_prune_target(res.get("prune")))
    return out


def _prune_target(prune: dict[str, Any] | None) -> tuple[str, str, str, str]:
    name, goal = "Pruning a 10,000-message context scales linearly", "linear"
    if not prune or "points" not in prune:
        return name, goal, (prune or {}).get("error", "not run"), NA
    ten = next(p for p in prune["points"] if p["messages"] == 10_000)
    if "first_request" in prune:  # since the history cache: the first request reads the whole history
        measured = (f"request on a 10k-message context {ten['request_s'] * 1e3:.1f} ms, the first of a process "
                    f"{ten['first_request_s'] * 1e3:.1f} ms (prune alone {ten['prune_s'] * 1e3:.2f} ms); cost per "
                    f"extra message 10k→100k vs 1k→10k: ×{prune['first_request']['ratio']:.2f} (first request), "
                    f"×{prune['prune']['ratio']:.2f} (prune alone)")
    else:
        measured = (f"request on a 10k-message context {ten['request_s'] * 1e3:.1f} ms (prune alone "
                    f"{ten['prune_s'] * 1e3:.2f} ms); cost per extra message 10k→100k vs 1k→10k: "
                    f"×{prune['request']['ratio']:.2f} (request), ×{prune['prune']['ratio']:.2f} (prune alone)")
    return name, f"{goal} (slope ×≤{prune['slope_limit']:g})", measured, _status(prune["linear"])


def _prune_section(prune: dict[str, Any]) -> list[str]:
    lines = ["## Long conversations (bench/prune_scaling.py, in process, gateway core)", "",
             "Prune alone = the prune stage's window fitting and payload building over a history that fits whole. "
             "Request = `Engine.run` of the default pipeline on SQLite with the context stored beforehand "
             "(load, prune, budget, offline answer, append); the offline model's 200k-token window keeps 10k "
             "messages whole and prunes 100k. First request = a fresh process's first, which reads the whole "
             "history; the requests after it (median) read only what is new since when the history fits the "
             "history cache (10k messages do, 100k do not). Linear = the cost per extra message from 10k to 100k "
             f"stays within ×{prune['slope_limit']:g} of the one from 1k to 10k, for prune alone and for the first "
             "request (the same work at every size).", "",
             "| stored messages | prune alone ms | µs per message | request ms | µs per message | first request ms |",
             "|--:|--:|--:|--:|--:|--:|"]
    for p in prune["points"]:
        n = p["messages"]
        first = f"{p['first_request_s'] * 1e3:.2f}" if "first_request_s" in p else "n/a"
        lines.append(f"| {n:,} | {p['prune_s'] * 1e3:.2f} | {p['prune_s'] / n * 1e6:.3f} | {p['request_s'] * 1e3:.2f} "
                     f"| {p['request_s'] / n * 1e6:.3f} | {first} |")
    return [*lines, ""]


def _json_table(res: dict[str, Any], group: str) -> list[str]:
    lines = ["| scenario | c | req/s | p50 ms | p99 ms | added p50 / p99 ms | gateway CPU ms/req | gateway core busy "
             "| upstream + client CPU | other load core 0 / 1 | errors |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in _rows(res, group):
        if r.get("kind") != "json":
            continue
        direct = _at(res, group, _direct_name(group), r["concurrency"]) if group == "json" else None
        if r.get("target") == "gateway" and direct:
            added = f"+{r['p50_ms'] - direct['p50_ms']:.2f} / +{r['p99_ms'] - direct['p99_ms']:.2f}"
        else:
            added = "–"
        lines.append(f"| {r['name']} | {r['concurrency']} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {added} | {_f(r.get('gw_cpu_ms'), '{:.3f}')} | {_f(r.get('gw_cpu_util'), '{:.0%}')} "
                     f"| {r['client_core_util']:.0%} | {_noise(r)} | {r['errors']} |")
    return lines


NOISY = 0.25


def _noisy(r: dict[str, Any]) -> bool:
    return r.get("target") == "gateway" and max(r.get("foreign_gw_core", 0), r.get("foreign_client_core", 0)) > NOISY


def _noise(r: dict[str, Any]) -> str:
    return f"{r['foreign_gw_core']:.0%} / {r.get('foreign_client_core', 0):.0%}" + (" ⚠" if _noisy(r) else "")


def _stream_table(res: dict[str, Any], groups: tuple[str, ...]) -> list[str]:
    lines = ["| scenario | c | streams/s | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | stream p50 ms "
             "| gateway CPU ms/stream | gateway core busy | upstream + client CPU | other load core 0 / 1 | errors |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for g in groups:
        for r in _rows(res, g):
            if r.get("kind") not in ("sse", "ws") or "rate" not in r:
                continue
            direct = _at(res, "sse", "direct upstream (OpenAI SSE)", r["concurrency"])
            added = (f"+{r['p50_ms'] - direct['p50_ms']:.2f}" if direct and r.get("target") == "gateway"
                     and g in ("sse", "ws") and r.get("p50_ms") is not None and direct.get("p50_ms") is not None
                     else "–")
            lines.append(f"| {r['name']} | {r['concurrency']} | {r['rate']:,.0f} | {_f(r['p50_ms'])} "
                         f"| {_f(r['p99_ms'])} | {added} | {_f(r['total_p50_ms'])} "
                         f"| {_f(r.get('gw_cpu_ms'), '{:.3f}')} "
                         f"| {_f(r.get('gw_cpu_util'), '{:.0%}')} | {r['client_core_util']:.0%} "
                         f"| {_noise(r)} | {r['errors']} |")
    return lines


def render(res: dict[str, Any]) -> str:
    m, stack, plan = res["machine"], res.get("gateway_stack", {}), res["plan"]
    dirty = f" + uncommitted changes in {m['dirty_files']} file(s) outside bench/" if m.get("dirty_files") else ""
    if m.get("snapshot"):
        dirty = f" (clean snapshot of `--rev {res.get('rev')}`)"
    lines = [
        "# Rhetor benchmark results",
        "",
        f"- **Commit** `{m['commit']}`{dirty}; **date** {m['date']}; **mode** {res['mode']} "
        f"({plan['duration']:g} s per scenario after {plan['warmup']:g} s warm-up; "
        f"wall time {res['wall_s'] / 60:.1f} min)",
        f"- **Machine** {m['nproc']} × {m['cpu']}, {m['mem_gb']} GB, Linux {m['kernel']}; load average "
        f"{' '.join(res['loadavg_start'])} at start, {' '.join(res['loadavg_end'])} at end",
        f"- **Gateway** `rhetor serve` pinned to core 0 (`taskset -c 0`), one process, default pipeline "
        f"({', '.join(res.get('pipelines', []))} copied from rhetor/defaults/pipelines); "
        f"uvicorn {stack.get('uvicorn')} with {stack.get('loop')} + {stack.get('http')}, "
        f"Litestar {stack.get('litestar')}, Python {stack.get('python')}",
        f"- **Upstream and load** on core 1: bench/fake_upstream.py ({res.get('load_tools_loop')}), wrk (JSON), "
        f"bench/loadgen.py ({res.get('load_tools_loop')}; SSE and WebSocket); loopback only",
        "- Reproduce: `bench/run.sh` (full) or `bench/run.sh --quick`; raw figures in bench/out/run-*/results.json",
        *(["- Quick mode: 3 s windows. At c=16/64 the gateway completes requests in waves of c (asyncio interleaves "
            "them), so a short window's rate is only good to about ±10%; RSS and stored-rows checks use 2k/20k "
            "requests and 100k rows instead of 10k/100k and 1M."] if res["mode"] == "quick" else []),
        "",
        "## Targets",
        "",
        "| target | goal | measured | status |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(res)]
    measured = [r for r in res["scenarios"] if r.get("target") == "gateway" and "foreign_gw_core" in r]
    noisy = [r for r in measured if _noisy(r)]
    if noisy:
        lines += ["", f"⚠ {len(noisy)} of {len(measured)} gateway rows ran while other processes used more than "
                  f"{NOISY:.0%} of a core (marked ⚠ below; e.g. other test suites on a shared machine). Their "
                  "throughput and latency are pessimistic; CPU per request is affected less."]
    lines += ["", "“Added” = gateway figure − the same request sent straight to the fake upstream, same concurrency. "
              "CPU per request = the gateway's utime+stime (/proc/<pid>/stat) over the window ÷ requests. "
              "“Upstream + client CPU” = the fake upstream's and the load tool's CPU on core 1 (far below 100% in the "
              "gateway rows: they are not the bottleneck; direct rows saturate core 1 on purpose). "
              "“Other load” = CPU used on core 0 by anything but the gateway and "
              "on core 1 by anything but the upstream and load tool: other work on the machine, i.e. noise.", ""]
    if _rows(res, "json"):
        lines += ["## Non-streaming (wrk, JSON)", "", *_json_table(res, "json"), ""]
    if _rows(res, "sse") or _rows(res, "ws"):
        lines += ["## Streaming (20 chunks; SSE and WebSocket; bench/loadgen.py)", "",
                  "TTFT = request written → first non-empty content chunk received.", "",
                  *_stream_table(res, ("sse", "ws")), ""]
    if _rows(res, "anthropic"):
        lines += ["## Through the Anthropic provider (c=16)", "", *_json_table(res, "anthropic"), "",
                  *_stream_table(res, ("anthropic",)), ""]
    if _rows(res, "offline"):
        lines += ["## Rhetor alone: offline provider, no SDK, no upstream (c=16)", "",
                  "The same default pipeline (routing, budget reserve and settle in SQLite, trace, metrics, access log) "
                  "answered by the `simulated` provider; its streams have fewer chunks than the 20 above. The gap to "
                  "the rows above is the vendor SDK's share.", "",
                  *_json_table(res, "offline"), "", *_stream_table(res, ("offline",)), ""]
    paced = _rows(res, "paced")
    if paced:
        lines += ["## Chunk forwarding (20 chunks, 10 ms apart, c=1)", "",
                  "Spread = first → last chunk arrival (190 ms when nothing batches); separate arrivals = gaps ≥ 5 ms "
                  "between consecutive chunks (19 expected); max lag = worst deviation from the 10 ms schedule.", "",
                  "| path | streams | spread p50 ms | separate arrivals (min) | max lag p50 ms | TTFT p50 ms |",
                  "|---|--:|--:|--:|--:|--:|"]
        for r in paced:
            lines.append(f"| {r['name']} | {r.get('streams')} | {_f(r.get('spread_ms_p50'), '{:.1f}')} "
                         f"| {r.get('separate_arrivals_min')}/{r.get('expected_separate')} "
                         f"| {_f(r.get('max_lag_ms_p50'), '{:.1f}')} | {_f(r.get('ttft_p50_ms'))} |")
        lines.append("")
    mem = res.get("memory", {})
    if mem:
        lines += ["## Memory (gateway RSS, /proc/<pid>/status VmRSS)", "", "| point | requests served | RSS MB |",
                  "|---|--:|--:|",
                  f"| at start (ready in {mem.get('ready_s', 0):.1f} s) | 0 | {mem['start_rss_mb']:.1f} |",
                  f"| idle after the first requests | ~5 | {mem.get('idle_rss_mb', 0):.1f} |"]
        for n in plan["memory_requests"]:
            point = mem.get(f"after_{n}")
            if point:
                lines.append(f"| after {n:,} requests (JSON, c=16: /v1, then /message over 10,000 conversations) "
                             f"| {point['requests']:,} | {point['rss_mb']:.1f} |")
        if mem.get("end_rss_mb"):
            lines.append(f"| end of the run (all scenarios) | – | {mem['end_rss_mb']:.1f} |")
        lines.append("")
    rows = res.get("rows", {})
    if rows:
        lines += ["## Stored rows", ""]
        if rows.get("status") == "measured":
            if rows.get("cpu_ratios"):
                how = ("alternate (fresh, seeded, seeded, fresh, twice), so a drift of the machine weighs on both "
                       "alike; the target reads the median of the four ratios of neighbouring windows (seeded ÷ "
                       f"fresh): CPU per request {_ratios(rows['cpu_ratios'])}, req/s "
                       f"{_ratios(rows.get('rate_ratios'))}. The target's figures are each database's medians.")
            else:  # runs before the pairs were kept
                how = ("alternate (fresh, seeded, seeded, fresh), so a drift of the machine weighs on both alike; the "
                       "target compares the better window of each (noise only ever adds cost).")
            lines += [f"`POST /message` with 16 conversations (`context_id`), c=16, on two gateways side by side: one "
                      "on a database holding a warm-up's rows, one on a copy of it grown to "
                      f"{rows['rows']:,} rows in every table the gateway wrote to (bench/seed_rows.py). Their windows "
                      f"{how}", "",
                      *_json_table(res, "rows"), ""]
        else:
            lines += [f"Not measured: {rows.get('reason')}. The check runs by itself once the gateway writes its "
                      "database under `RHETOR_DATA_DIR`.", ""]
    if res.get("prune", {}).get("points"):
        lines += _prune_section(res["prune"])
    if res.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in res["notes"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    src = Path(sys.argv[1])
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "RESULTS.md"
    dest.write_text(render(json.loads(src.read_text())), encoding="utf-8")
    print(dest)
