"""With PostgreSQL unreachable, its tests skip on a developer's machine and FAIL when CI is true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storage.conftest import _ci

REPO = Path(__file__).resolve().parents[2]


def run_pg_tests(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["RHETOR_TEST_PG_URL"] = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens on port 1
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/storage/test_durability.py", "-k", "postgres", "-q",
         "-p", "no:cacheprovider"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_ci_fails_when_postgres_is_unreachable() -> None:
    proc = run_pg_tests("true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PostgreSQL is unreachable" in proc.stdout and "CI is set" in proc.stdout
    assert "1 error" in proc.stdout


def test_elsewhere_the_postgres_tests_skip() -> None:
    proc = run_pg_tests(None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout and "PostgreSQL is unreachable" in proc.stdout


@pytest.mark.parametrize(("value", "is_ci"), [("true", True), ("1", True), ("YES", True), ("false", False),
                                               ("0", False), ("", False), (None, False)])
def test_what_counts_as_ci(monkeypatch: pytest.MonkeyPatch, value: str | None, is_ci: bool) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert _ci() is is_ci
