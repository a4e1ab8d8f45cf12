"""The `rhetor` command as a user types it: outputs pinned by snapshots, exit codes asserted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rhetor.cli import main

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "fixtures" / "configs" / "sim"


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "RHETOR_CONFIG_DIR", "RHETOR_TASK_CONFIG",
                "RHETOR_BUDGET_POLICY", "RHETOR_BUDGET_DAILY_LIMIT", "RHETOR_BUDGET_WEEKLY_LIMIT",
                "RHETOR_BUDGET_MONTHLY_LIMIT"):
        monkeypatch.delenv(var, raising=False)


def untimed(text: str) -> str:
    return re.sub(r" \d+\.\d ms", " <t> ms", text)


def test_validate_the_repo_config_prints_worst_cases(capsys: pytest.CaptureFixture[str], snapshot) -> None:
    assert main(["validate", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert re.sub(r"version [0-9a-f]{16}", "version <hash>", out) == snapshot


def test_validate_json_for_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True
    # attempts: the longest chain has 3 models, each tried at most twice (retries: 1) = 6. latency: the
    # pipeline's deadline_s of 180 caps every path. cost: chain code, every try billed in full = 2 ×
    # (claude-opus: 195,904 in × $15 + 4,096 out × $75 per million = $3.24576; gpt-4-turbo: 123,904 × $10 +
    # 4,096 × $30 = $1.36192; simulated: $0) = $9.21536.
    assert body["pipelines"]["default"]["worst_case"] == {"attempts": 6, "latency_s": 180.0, "cost_usd": 9.21536}


def test_run_prints_answer_model_and_trace(capsys: pytest.CaptureFixture[str], snapshot) -> None:
    assert main(["run", "default", "--config", str(SIM), "-m", "What is Tekton?"]) == 0
    assert untimed(capsys.readouterr().out) == snapshot


def test_run_streams_chunks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(SIM), "-m", "stream please", "--stream"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('This is a simulated response from Rhetor (no LLM provider was available). '
                          'You said: "stream please"\n')


def test_run_failure_exits_1_with_the_error_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(SIM), "-m", "x", "--model", "flaky"]) == 1
    captured = capsys.readouterr()
    assert "error: all-targets-failed: every target failed (flaky: rate-limited)" in captured.err
    assert "generate (generate) error" in captured.out


def test_run_unknown_pipeline_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope", "--config", str(SIM), "-m", "x"]) == 1
    assert "error: unknown-pipeline: unknown pipeline 'nope'" in capsys.readouterr().err


def test_explain_calls_no_provider(capsys: pytest.CaptureFixture[str], snapshot) -> None:
    assert main(["explain", "--config", str(REPO), "-m", "x", "--task-type", "code", "--component", "ergon"]) == 0
    assert capsys.readouterr().out == snapshot


def test_explain_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--config", str(REPO), "-m", "x", "--task-type", "chat", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    stages = {s["id"]: s for s in body["stages"]}
    route, budget, generate = stages["route"], stages["budget"], stages["generate"]
    assert list(stages) == ["route", "system_prompt", "context", "prune", "budget", "generate", "save"]
    assert stages["save"]["status"] == "not-run"  # it needs the answer: decided at run time
    assert budget["decision"] == "would reserve $0 (policy warn)"
    assert route["decision"] == "chain [simulated]"
    assert route["why"] == ("task=chat from tasks.yaml; dropped claude-haiku (provider-unavailable), "
                            "gpt-3.5-turbo (provider-unavailable)")
    assert [(t["model"], t["available"]) for t in generate["details"]["targets"]] == [("simulated", True)]
    assert generate["details"]["max_attempts"] == 2
    assert body["budget"]["policy"] == "warn"


def test_explain_honours_budget_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_POLICY", "enforce")
    monkeypatch.setenv("RHETOR_BUDGET_DAILY_LIMIT", "3")
    assert main(["explain", "--config", str(REPO), "-m", "x", "--format", "json"]) == 0
    budget = json.loads(capsys.readouterr().out)["budget"]
    assert budget == {"policy": "enforce", "limits": {"global": {"daily": 3.0, "weekly": 0.0, "monthly": 0.0}}}


def test_graph_is_mermaid(capsys: pytest.CaptureFixture[str], snapshot) -> None:
    assert main(["graph", "default", "--config", str(REPO)]) == 0
    assert capsys.readouterr().out == snapshot


def test_graph_unknown_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "nope", "--config", str(REPO)]) == 1
    assert "unknown pipeline 'nope'; known: default" in capsys.readouterr().err


def test_python_dash_m_is_the_same_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "rhetor", "validate", str(SIM)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "config OK" in proc.stdout


def test_usage_error_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "rhetor", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr


@pytest.mark.parametrize("command", [["run", "--config", str(SIM), "-m", "x"], ["serve", "--config", str(SIM)]])
def test_an_unusable_database_url_exits_1_with_the_reason_and_no_traceback(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RHETOR_DATABASE_URL", f"sqlite:///{tmp_path}/x.db?synchronous=off")
    assert main(command) == 1
    err = capsys.readouterr().err
    assert f"error: storage-error: database URL 'sqlite:///{tmp_path}/x.db?synchronous=off': synchronous must be " \
           "one of full, normal, not 'off'" in err
    assert "Traceback" not in err and not (tmp_path / "x.db").exists()
