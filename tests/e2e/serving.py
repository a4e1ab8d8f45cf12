"""Start `rhetor serve` as a user would, in a subprocess on a free port, and wait for /health."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

KEY_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    proc: subprocess.Popen[str]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def serve(config: Path, log_path: Path, extra_env: dict[str, str] | None = None, *,
          wait_s: float = 30, health_headers: dict[str, str] | None = None) -> Served:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and not k.startswith("RHETOR_")}
    # Each server keeps its data beside its log (never in the working tree) unless a test shares one.
    env.update({"RHETOR_PORT": str(port), "RHETOR_REGISTER": "0", "RHETOR_DATA_DIR": str(log_path.parent / "data"),
                **(extra_env or {})})
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "rhetor", "serve", "--host", "127.0.0.1", "--config", str(config)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    served = Served(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"rhetor serve exited with {proc.returncode}:\n{served.log()}")
        try:
            if httpx.get(f"{served.base}/health", timeout=1, headers=health_headers).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"rhetor serve did not answer /health within {wait_s} s:\n{served.log()}")
        time.sleep(0.1)
