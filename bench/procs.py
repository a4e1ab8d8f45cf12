"""Process plumbing for the benchmark: set-up, the fake upstream and the gateway, /proc readings, load tools.

Everything listens on 127.0.0.1 only. The gateway runs on core 0 (``taskset -c 0``); the fake upstream,
wrk, the asyncio load generator and this orchestrator run on core 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
CONFIG = BENCH / "config"
GATEWAY_CORE, CLIENT_CORE = 0, 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
UPSTREAM_DEFAULT_PORT = 18001  # what bench/config/providers.yaml names


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- set-up


@dataclass(frozen=True)
class Source:
    """The Rhetor code under test: the working tree (default) or a snapshot of a git revision."""

    root: Path
    commit: str
    dirty_files: int
    snapshot: bool = False

    def rhetor(self, *args: str) -> list[str]:
        if self.snapshot:  # `python -m rhetor` is the same CLI; PYTHONPATH (below) picks the snapshot's code
            return [str(ROOT / ".venv" / "bin" / "python"), "-m", "rhetor", *args]
        rhetor_bin = ROOT / ".venv" / "bin" / "rhetor"
        if not rhetor_bin.exists():
            raise SystemExit("bench: .venv/bin/rhetor is missing: run ./run_rhetor.sh (or pip install -e .) first")
        return [str(rhetor_bin), *args]

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.root)} if self.snapshot else {}


def source(rev: str | None) -> Source:
    git = ["git", "-C", str(ROOT)]
    if not rev:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                                check=False).stdout.splitlines()
        return Source(ROOT, commit, len([ln for ln in status if not ln[3:].startswith("bench/")]))
    commit = subprocess.run([*git, "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    dest = OUT / f"src-{commit}"
    if not (dest / "rhetor" / "__init__.py").exists():
        log(f"extracting {rev} ({commit}) into {dest.relative_to(ROOT)}")
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen([*git, "archive", commit], stdout=subprocess.PIPE)  # noqa: S603
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)  # noqa: S603
        archive.wait()
    return Source(dest, commit, 0, snapshot=True)


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk not found: installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=True)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("bench: wrk could not be installed (apt-get install wrk)")
    return path


def bench_python() -> tuple[str, bool]:
    """The interpreter for the fake upstream and load generator: bench/.venv with uvloop when possible.

    A separate venv keeps uvloop out of the gateway's .venv (uvicorn would pick it up silently and the
    benchmark would stop measuring the gateway as shipped).
    """
    venv = BENCH / ".venv"
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import uvloop"]
    if py.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return str(py), True
    try:
        if not py.exists():
            log("creating bench/.venv for the load tools")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "uvloop"], check=True, capture_output=True)
        return str(py), True
    except (subprocess.CalledProcessError, OSError) as exc:
        log(f"uvloop unavailable ({exc}); the load tools use plain asyncio")
        return (str(py) if py.exists() else sys.executable), False


def gateway_stack() -> dict[str, Any]:
    """What uvicorn in the gateway's venv will pick: event loop and HTTP parser."""
    code = ("import importlib.util as u, importlib.metadata as m, json, sys; print(json.dumps({"
            "'uvloop': bool(u.find_spec('uvloop')), 'httptools': bool(u.find_spec('httptools')),"
            "'uvicorn': m.version('uvicorn'), 'litestar': m.version('litestar'), 'python': sys.version.split()[0]}))")
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         check=False)
    try:
        info = json.loads(out.stdout)
    except ValueError:
        return {"error": out.stderr.strip()[-300:]}
    info["loop"] = "uvloop" if info["uvloop"] else "asyncio"
    info["http"] = "httptools" if info["httptools"] else "h11"
    return info


def prepare_config(dest: Path, upstream_port: int, src: Source) -> Path:
    """bench/config + the real default pipelines (copied now, never kept), with the upstream's port.

    Also refreshes bench/config/pipelines/ so ``rhetor serve --config bench/config`` works by hand.
    """
    for target in ([CONFIG / "pipelines"] if not src.snapshot else []) + [dest / "pipelines"]:
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.yaml"):
            old.unlink()
        for pipeline in sorted((src.root / "rhetor" / "defaults" / "pipelines").glob("*.yaml")):
            shutil.copy2(pipeline, target / pipeline.name)
    for name in ("providers.yaml", "tasks.yaml", "budgets.yaml"):
        text = (CONFIG / name).read_text(encoding="utf-8")
        text = text.replace(f"127.0.0.1:{UPSTREAM_DEFAULT_PORT}", f"127.0.0.1:{upstream_port}")
        if name == "providers.yaml":
            text = _with_shipped_models(text, src)
        (dest / name).write_text(text, encoding="utf-8")
    check = subprocess.run(src.rhetor("validate", str(dest)), capture_output=True, text=True, check=False,  # noqa: S603
                           env={**os.environ, **src.env()}, cwd=src.root)
    if check.returncode != 0:
        raise SystemExit(f"bench: the benchmark config does not validate:\n{check.stdout}{check.stderr}")
    return dest


def _with_shipped_models(bench_providers: str, src: Source) -> str:
    """bench/config's providers.yaml plus any shipped model it lacks, on the fake providers.

    Pipelines may name shipped models (an ``evaluate`` stage's judges, say): they must validate, and any
    call to them must go to the fake upstream, never out of the machine.
    """
    import yaml  # the gateway's venv runs this; PyYAML is a Rhetor dependency

    data = yaml.safe_load(bench_providers) or {}
    ours = data.setdefault("models", {})
    shipped = yaml.safe_load((src.root / "rhetor" / "defaults" / "providers.yaml").read_text(encoding="utf-8"))
    kinds = {name: p.get("kind") for name, p in (shipped.get("providers") or {}).items()}
    added = []
    for name, model in (shipped.get("models") or {}).items():
        kind = kinds.get(model.get("provider"))
        if name not in ours and kind != "simulated":
            ours[name] = {**model, "provider": "fake-anthropic" if kind == "anthropic" else "fake-openai"}
            added.append(name)
    if not added:
        return bench_providers
    return (f"# bench/config/providers.yaml + shipped models added at run time: {', '.join(added)}\n"
            + yaml.safe_dump(data, sort_keys=False))


def free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


# ------------------------------------------------------------------------------------------ readings


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def core_ticks() -> dict[int, tuple[int, int]]:
    """Per core: (busy ticks, total ticks) from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


@dataclass
class Window:
    """CPU of the processes of interest and of each core over a stretch of wall time."""

    pids: dict[str, int]
    t0: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    cores0: dict[int, tuple[int, int]] = field(default_factory=dict)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    cores: dict[int, float] = field(default_factory=dict)

    def __enter__(self) -> Window:
        self.t0 = time.perf_counter()
        self.cpu0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.cores0 = core_ticks()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = {n: cpu_seconds(p) - self.cpu0[n] for n, p in self.pids.items()}
        now = core_ticks()
        self.cores = {c: (now[c][0] - b0) / max(1, now[c][1] - t0) for c, (b0, t0) in self.cores0.items() if c in now}


# -------------------------------------------------------------------------------------------- processes


def _clean_env() -> dict[str, str]:
    drop = ("RHETOR_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
            "OPENAI_", "ANTHROPIC_", "HERMES_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, OSError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Service:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path, health: str) -> None:
        self.name, self.cmd, self.env, self.log_path, self.health = name, cmd, env, log_path, health
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0
        self.cwd = ROOT

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT,  # noqa: S603
                                         cwd=self.cwd)
        try:
            self.ready_s = wait_http(self.health, timeout, self.proc)
        except RuntimeError as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"bench: {self.name} did not start: {exc}\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def upstream(py: str, port: int, run_dir: Path) -> Service:
    cmd = ["taskset", "-c", str(CLIENT_CORE), py, str(BENCH / "fake_upstream.py"), "--port", str(port)]
    return Service("fake upstream", cmd, _clean_env(), run_dir / "upstream.log", f"http://127.0.0.1:{port}/health")


def gateway(src: Source, config: Path, port: int, data_dir: Path, log_path: Path) -> Service:
    env = {**_clean_env(), **src.env(), "RHETOR_REGISTER": "0", "RHETOR_DATA_DIR": str(data_dir),
           "BENCH_OPENAI_API_KEY": "bench-not-a-key", "BENCH_ANTHROPIC_API_KEY": "bench-not-a-key"}
    cmd = ["taskset", "-c", str(GATEWAY_CORE), *src.rhetor("serve", "--config", str(config), "--port", str(port),
                                                             "--host", "127.0.0.1")]
    svc = Service("gateway", cmd, env, log_path, f"http://127.0.0.1:{port}/health")
    svc.cwd = src.root
    return svc


def http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - loopback only
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


# ------------------------------------------------------------------------------------------ load tools


def run_wrk(url: str, body_file: Path, concurrency: int, duration: float, *, max_requests: int = 0,
            pids: dict[str, int] | None = None, done_file: Path | None = None,
            contexts: tuple[str, int] | None = None) -> dict[str, Any]:
    """One wrk run on the client core; with ``max_requests`` it ends as soon as that many answers came.

    ``contexts=(prefix, n)``: the body's ``@CTX@`` becomes one of n context ids, in turn.
    """
    env = {**os.environ, "WRK_BODY_FILE": str(body_file)}
    if contexts:
        env.update(WRK_CONTEXT_PREFIX=contexts[0], WRK_CONTEXTS=str(contexts[1]))
    if max_requests:
        assert done_file is not None
        done_file.unlink(missing_ok=True)
        env.update(WRK_MAX_REQUESTS=str(max_requests), WRK_DONE_FILE=str(done_file))
    cmd = ["taskset", "-c", str(CLIENT_CORE), "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
           "--timeout", "30s", "--latency", "-s", str(BENCH / "wrk" / "post.lua"), url]
    with Window(pids or {}) as w:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603
        if max_requests:
            assert done_file is not None
            while proc.poll() is None and not done_file.exists():
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # wrk then stops and prints its summary
        _, _, rusage = os.wait4(proc.pid, 0)
        out, err = proc.stdout.read().decode(), proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.returncode = 0
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary:\n{out}\n{err}")
    r = json.loads(line.split(" ", 1)[1])
    r["wall_s"] = w.wall
    r["rate"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    r["cpu"] = w.cpu
    r["cores"] = w.cores
    r["loadgen_cpu_s"] = rusage.ru_utime + rusage.ru_stime
    return r


def run_loadgen(py: str, mode: str, url: str, body: Any, *, kind: str = "rhetor", concurrency: int = 1,
                duration: float = 10, warmup: float = 2, count: int = 0, gaps_ms: float | None = None,
                pids: dict[str, int] | None = None) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(CLIENT_CORE), py, str(BENCH / "loadgen.py"), mode, "--url", url,
           "--body", json.dumps(body), "--kind", kind, "-c", str(concurrency), "-d", str(duration),
           "--warmup", str(warmup), "--count", str(count)]
    if gaps_ms is not None:
        cmd += ["--gaps-ms", str(gaps_ms)]
    names = {}
    for name, pid in (pids or {}).items():
        cmd += ["--cpu-pid", str(pid)]
        names[str(pid)] = name
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120, check=False)  # noqa: S603
    try:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"loadgen failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    if r.get("available"):
        r["cpu"] = {names.get(k, k): v for k, v in r.pop("cpu_s", {}).items()}
        r["rate"] = r["streams_per_s"]
    return r
