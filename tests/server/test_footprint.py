"""What serving loads: heavy packages (vendor SDKs, httpx, asyncpg) only when the configuration uses them.

Idle memory is one of issue 8's targets, and an import added at the top of a module is the easy way to
lose it: each of these costs several MB (the Anthropic SDK alone about 40 MB) in every process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, sys
from pathlib import Path
from rhetor.engine.engine import load_engine
from rhetor.engine.resources import Resources
from rhetor.server.app import create_app
resources = Resources.from_env({"RHETOR_DATABASE_URL": "memory://"})
engine, diags = load_engine(Path(sys.argv[1]), resources=resources)
assert engine is not None, [d.render() for d in diags]
create_app(engine, config_dir=Path(sys.argv[1]), env={})
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _loaded(config_dir: Path, env: dict[str, str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(config_dir)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", **env}, cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _config(tmp_path: Path, providers: str, models: str, chain: str) -> Path:
    (tmp_path / "pipelines").mkdir()
    default = (REPO / "rhetor" / "defaults" / "pipelines" / "default.yaml").read_text(encoding="utf-8")
    (tmp_path / "pipelines" / "default.yaml").write_text(default, encoding="utf-8")
    (tmp_path / "budgets.yaml").write_text("policy: warn\n", encoding="utf-8")
    (tmp_path / "providers.yaml").write_text(
        "providers:\n" + providers + "  simulated: {kind: simulated}\n"
        "models:\n" + models + "  sim: {provider: simulated, id: sim, context_window: 8000, max_output_tokens: 100, "
        "price: {input: 0, output: 0}}\n", encoding="utf-8")
    (tmp_path / "tasks.yaml").write_text(f"tasks:\n  default: {{chain: [{chain}]}}\n", encoding="utf-8")
    return tmp_path


def test_the_repository_config_without_keys_loads_no_vendor_sdk() -> None:
    loaded = _loaded(REPO, {})
    assert {"openai", "anthropic", "httpx2", "aiohttp", "asyncpg", "bpe_openai"}.isdisjoint(loaded)
    assert {"litestar", "networkx", "rhetor", "ollama"} <= loaded  # the probe did build the app (Ollama needs no key)


def test_an_offline_config_loads_no_http_client(tmp_path: Path) -> None:
    loaded = _loaded(_config(tmp_path, "", "", "sim"), {})
    assert {"openai", "anthropic", "ollama", "httpx", "httpx2", "aiohttp", "asyncpg"}.isdisjoint(loaded)


def test_a_configured_openai_provider_loads_its_sdk_and_only_it(tmp_path: Path) -> None:
    config = _config(tmp_path, "  up: {kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: 'env:PROBE_KEY'}\n",
                     "  m: {provider: up, id: m, context_window: 8000, max_output_tokens: 100, "
                     "price: {input: 1, output: 1}}\n", "m, sim")
    loaded = _loaded(config, {"PROBE_KEY": "k"})
    assert {"openai", "httptools"} <= loaded
    # nor aiohttp (~10 MB): the SDKs import it whenever it is installed, and Rhetor's own transport (_http) made
    # it unnecessary, so the dependencies no longer ask for the SDKs' `aiohttp` extra
    assert {"anthropic", "ollama", "asyncpg", "aiohttp"}.isdisjoint(loaded)
