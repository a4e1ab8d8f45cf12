"""``python -m bench profile``: the gateway under py-spy while load runs; flamegraph + speedscope + hot spots.

Starts the fake upstream and ``rhetor serve`` exactly as the benchmark does (gateway on core 0), drives
one scenario on core 1 (wrk for JSON, bench/loadgen.py for streams), and samples the gateway with
py-spy (also on core 1) twice: once into a flamegraph SVG, once into a speedscope JSON. Then prints the
hot spots (self time by function, time by package, inclusive time in Rhetor's own code) and writes them
next to the profiles in bench/out/.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.procs import log
from bench.runner import BODIES

SCENARIOS = {  # name: (path, body, tool, sse kind)
    "v1": ("/v1/chat/completions", "v1", "wrk", None),
    "message": ("/message", "message", "wrk", None),
    "stream": ("/stream", "stream", "sse", "rhetor"),
    "v1-stream": ("/v1/chat/completions", "v1_stream", "sse", "openai"),
    "ws": ("/ws", "ws", "ws", "rhetor"),
    "offline": ("/message", "message_offline", "wrk", None),  # the simulated provider: Rhetor without an SDK
    "conversation": ("/message", "message_ctx", "wrk", None),  # 16 growing conversations (context_id)
}
CONVERSATIONS = 16


def ensure_py_spy() -> str:
    venv_bin = procs.ROOT / ".venv" / "bin" / "py-spy"
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which("py-spy")
    if found:
        return found
    log("py-spy not found: pip install py-spy into .venv")
    subprocess.run([str(procs.ROOT / ".venv" / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"], check=True)
    return str(venv_bin)


_SITE = re.compile(r".*/(?:site|dist)-packages/")
_STDLIB = re.compile(r".*/lib/python3\.\d+/")


_SNAPSHOT = re.compile(r".*/bench/out/src-[0-9a-f]+/")


def short(path: str) -> str:
    path = _SNAPSHOT.sub("", path)
    path = _SITE.sub("", path)
    path = _STDLIB.sub("stdlib/", path)
    root = str(procs.ROOT) + "/"
    return path[len(root):] if path.startswith(root) else path


def package(path: str) -> str:
    p = short(path)
    if p.startswith("stdlib/"):
        rest = p[len("stdlib/"):]
        return "stdlib:" + rest.split("/", 1)[0].removesuffix(".py")
    return p.split("/", 1)[0].removesuffix(".py") or "?"


def hotspots(speedscope: Path, top: int = 10) -> dict[str, Any]:
    data = json.loads(speedscope.read_text())
    frames = data["shared"]["frames"]
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    pkg: collections.Counter[str] = collections.Counter()
    total = 0.0
    for prof in data["profiles"]:
        if prof.get("type") != "sampled":
            continue
        for stack, weight in zip(prof["samples"], prof["weights"], strict=False):
            if not stack:
                continue
            total += weight
            leaf = frames[stack[-1]]
            self_t[f"{leaf['name']} ({short(leaf.get('file', '?'))})"] += weight
            pkg[package(leaf.get("file", "?"))] += weight
            for key in {f"{frames[i]['name']} ({short(frames[i].get('file', '?'))})" for i in stack}:
                incl[key] += weight
    rhetor_incl = [(k, v) for k, v in incl.most_common() if "(rhetor/" in k]
    tree = _tree(data, frames, total)

    def pct(items: list[tuple[str, float]]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in items]

    return {"samples": total, "self": pct(self_t.most_common(top)), "packages": pct(pkg.most_common(top)),
            "rhetor_inclusive": pct(rhetor_incl[:top]), "inclusive": pct(incl.most_common(top * 3)), "tree": tree}


def _tree(data: dict[str, Any], frames: list[dict[str, Any]], total: float, cutoff: float = 2.0) -> list[str]:
    """The call tree (inclusive %), below the common trunk, pruned under ``cutoff`` %."""
    root: dict[str, Any] = {"w": 0.0, "kids": {}}
    for prof in data["profiles"]:
        if prof.get("type") != "sampled":
            continue
        for stack, weight in zip(prof["samples"], prof["weights"], strict=False):
            node = root
            node["w"] += weight
            for i in stack:
                key = f"{frames[i]['name']} ({short(frames[i].get('file', '?'))})"
                node = node["kids"].setdefault(key, {"w": 0.0, "kids": {}})
                node["w"] += weight
    # skip the trunk: frames every sample goes through (the server loop, ASGI plumbing)
    node, trunk = root, []
    while len(node["kids"]) >= 1:
        name, kid = max(node["kids"].items(), key=lambda kv: kv[1]["w"])
        if kid["w"] < 0.9 * total or name.startswith(("ObserveMiddleware", "chat_completions", "message")):
            break
        trunk.append(name)
        node = kid
    lines = [f"(trunk: … → {' → '.join(trunk[-3:])})"] if trunk else []

    def walk(n: dict[str, Any], depth: int) -> None:
        for name, kid in sorted(n["kids"].items(), key=lambda kv: -kv[1]["w"]):
            share = 100.0 * kid["w"] / total
            if share < cutoff:
                continue
            # fold chains of wrappers that pass nearly all their time to one callee
            while len(kid["kids"]) == 1 and next(iter(kid["kids"].values()))["w"] >= 0.97 * kid["w"] and depth > 0:
                child_name, child = next(iter(kid["kids"].items()))
                name, kid = f"{name} → {child_name}", child
            lines.append(f"{'  ' * depth}- {share:5.1f}%  {name}")
            walk(kid, depth + 1)

    walk(node, 0)
    return lines


def render_hotspots(h: dict[str, Any], title: str) -> str:
    out = [f"# Hot spots: {title}", "", f"{h['samples']:.1f} s of samples (idle excluded).", "",
           "## Self time by function", ""]
    out += [f"{i}. {v:5.1f}%  {k}" for i, (k, v) in enumerate(h["self"], 1)]
    out += ["", "## Self time by package", ""]
    out += [f"- {v:5.1f}%  {k}" for k, v in h["packages"]]
    out += ["", "## Call tree (inclusive, ≥ 2%)", "", *h["tree"]]
    out += ["", "## Inclusive time in rhetor/", ""]
    out += [f"- {v:5.1f}%  {k}" for k, v in h["rhetor_inclusive"]]
    out += ["", "## Inclusive time, all frames", ""]
    out += [f"- {v:5.1f}%  {k}" for k, v in h["inclusive"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="v1",
                   help="what load to profile (default v1 = POST /v1/chat/completions, JSON)")
    p.add_argument("--concurrency", "-c", type=int, default=16)
    p.add_argument("--duration", "-d", type=float, default=15.0, help="seconds per py-spy recording")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="include native (C) frames")
    p.add_argument("--all-threads", action="store_true",
                   help="sample every thread, not only the one holding the GIL (py-spy --gil is the default: "
                        "idle helper threads, e.g. logging's QueueListener, otherwise show up as busy)")
    p.add_argument("--rev", help="profile this git revision (a clean snapshot) instead of the working tree")
    args = p.parse_args(argv)

    os.sched_setaffinity(0, {procs.CLIENT_CORE})
    py_spy = ensure_py_spy()
    procs.ensure_wrk()
    py, _ = procs.bench_python()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = procs.OUT / f"profile-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    up_port = procs.free_port(procs.UPSTREAM_DEFAULT_PORT)
    src = procs.source(args.rev)
    config = procs.prepare_config(run_dir / "config", up_port, src)
    upstream = procs.upstream(py, up_port, run_dir).start()
    gw_port = procs.free_port()
    gw = procs.gateway(src, config, gw_port, run_dir / "data", run_dir / "gateway.log").start(timeout=120)
    base = f"http://127.0.0.1:{gw_port}"
    load: subprocess.Popen[bytes] | None = None
    try:
        scenario = args.scenario
        if scenario.startswith("v1") and procs.http_json("POST", f"{base}/v1/chat/completions", BODIES["v1"])[0] == 404:
            log("/v1/chat/completions is not mounted: profiling /message instead")
            scenario = "message" if scenario == "v1" else "stream"
        path, body, tool, kind = SCENARIOS[scenario]
        body_file = run_dir / "body.json"
        payload = {**BODIES["message"], "task_type": "bench-offline"} if body == "message_offline" else BODIES[body]
        body_file.write_text(json.dumps(payload), encoding="utf-8")
        url = (f"ws://127.0.0.1:{gw_port}" if tool == "ws" else base) + path
        span = 2 * args.duration + 10
        log(f"load: {scenario} ({url}) at c={args.concurrency} for up to {span:.0f} s; warming up 3 s")
        if tool == "wrk":
            contexts = ("profile", CONVERSATIONS) if body == "message_ctx" else None
            procs.run_wrk(url, body_file, args.concurrency, 3, contexts=contexts)
            cmd = ["taskset", "-c", str(procs.CLIENT_CORE), "wrk", "-t1", f"-c{args.concurrency}", f"-d{span:.0f}s",
                   "--timeout", "30s", "-s", str(procs.BENCH / "wrk" / "post.lua"), url]
            env = {**os.environ, "WRK_BODY_FILE": str(body_file)}
            if contexts:
                env.update(WRK_CONTEXT_PREFIX=contexts[0], WRK_CONTEXTS=str(contexts[1]))
            load = subprocess.Popen(cmd, env=env,  # noqa: S603
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            cmd = ["taskset", "-c", str(procs.CLIENT_CORE), py, str(procs.BENCH / "loadgen.py"), tool, "--url", url,
                   "--body", json.dumps(BODIES[body]), "--kind", kind or "rhetor", "-c", str(args.concurrency),
                   "-d", f"{span:.0f}", "--warmup", "0"]
            load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
            time.sleep(3)
        outputs = {"flamegraph": run_dir / f"profile-{scenario}.svg",
                   "speedscope": run_dir / f"profile-{scenario}.speedscope.json"}
        for fmt, out in outputs.items():
            log(f"py-spy: {fmt} for {args.duration:g} s → {out.relative_to(procs.ROOT)}")
            cmd = ["taskset", "-c", str(procs.CLIENT_CORE), py_spy, "record", "--pid", str(gw.pid), "--duration",
                   str(int(args.duration)), "--rate", str(args.rate), "--format", fmt, "--output", str(out)]
            if args.native:
                cmd.append("--native")
            if not args.all_threads:
                cmd.append("--gil")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
        h = hotspots(outputs["speedscope"])
        text = render_hotspots(h, f"{scenario} ({path}), c={args.concurrency}, {args.rate} Hz, "
                                  f"{'all threads' if args.all_threads else 'GIL holder only (py-spy --gil)'}")
        (run_dir / "hotspots.md").write_text(text, encoding="utf-8")
        for name, src in (*outputs.items(), ("hotspots", run_dir / "hotspots.md")):
            latest = procs.OUT / f"profile-latest-{name}{''.join(src.suffixes)}"
            shutil.copy2(src, latest)
        print(text)
        log(f"profiles in {run_dir.relative_to(procs.ROOT)} (copies: bench/out/profile-latest-*)")
    finally:
        if load is not None and load.poll() is None:
            load.send_signal(signal.SIGINT)
            try:
                load.wait(timeout=10)
            except subprocess.TimeoutExpired:
                load.kill()
        gw.stop()
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
