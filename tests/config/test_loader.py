"""Loading a configuration directory: defaults, environment overrides, positions, version hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rhetor.config.loader import default_config_dir, load_config_files
from rhetor.config.source import parse_source

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "fixtures" / "configs" / "sim"


def test_an_empty_directory_loads_the_built_in_defaults(tmp_path: Path) -> None:
    config, diags = load_config_files(tmp_path, env={})
    assert diags == []
    assert config is not None
    assert config.docs["providers"].file == "<built-in>/providers.yaml"
    assert config.pipeline_docs["default"].file == "<built-in>/pipelines/default.yaml"
    assert config.tasks.tasks["code"].chain == ["claude-opus", "gpt-4-turbo", "simulated"]


def test_the_seed_routing_table_is_the_default() -> None:
    config, _ = load_config_files(default_config_dir(), env={})
    assert config is not None
    chains = {name: task.chain for name, task in config.tasks.tasks.items()}
    assert chains == {
        "code": ["claude-opus", "gpt-4-turbo", "simulated"],
        "planning": ["claude-sonnet", "gpt-4o", "simulated"],
        "reasoning": ["claude-sonnet", "gpt-4o", "simulated"],
        "chat": ["claude-haiku", "gpt-3.5-turbo", "simulated"],
        "default": ["claude-sonnet", "gpt-4o", "simulated"],
    }
    assert all(m.price is not None for m in config.providers.models.values())


def test_the_repo_config_is_the_built_in_default() -> None:
    """The top-level YAML files a user edits start as exactly what Rhetor ships."""
    builtin = default_config_dir()
    for name in ("providers.yaml", "tasks.yaml", "budgets.yaml", "pipelines/default.yaml"):
        assert (REPO / name).read_text() == (builtin / name).read_text(), name


def test_budget_environment_overrides(tmp_path: Path) -> None:
    env = {"RHETOR_BUDGET_POLICY": "enforce", "RHETOR_BUDGET_DAILY_LIMIT": "2.5",
           "RHETOR_BUDGET_WEEKLY_LIMIT": "10", "RHETOR_BUDGET_MONTHLY_LIMIT": "0"}
    config, diags = load_config_files(tmp_path, env=env)
    assert diags == [] and config is not None
    assert config.budgets.policy == "enforce"
    assert (config.budgets.limits.daily, config.budgets.limits.weekly, config.budgets.limits.monthly) == (2.5, 10, 0)


@pytest.mark.parametrize(("var", "value", "message"), [
    ("RHETOR_BUDGET_POLICY", "enforced", "RHETOR_BUDGET_POLICY='enforced' is not one of"),
    ("RHETOR_BUDGET_DAILY_LIMIT", "ten", "RHETOR_BUDGET_DAILY_LIMIT='ten' is not a number"),
    ("RHETOR_BUDGET_WEEKLY_LIMIT", "-1", "RHETOR_BUDGET_WEEKLY_LIMIT='-1' is not a number"),
])
def test_bad_environment_overrides_are_diagnostics(tmp_path: Path, var: str, value: str, message: str) -> None:
    _, diags = load_config_files(tmp_path, env={var: value})
    assert [d.code for d in diags] == ["bad-value"]
    assert diags[0].file == "<env>" and message in diags[0].message


def test_task_config_env_points_at_a_json_file(tmp_path: Path) -> None:
    """RHETOR_TASK_CONFIG (the seeds' ./config/tasks.json) may name a JSON file: JSON is YAML."""
    (tmp_path / "config").mkdir()
    tasks = {"default_task": "default", "tasks": {"default": {"chain": ["gpt-4o", "simulated"]}}}
    (tmp_path / "config" / "tasks.json").write_text(json.dumps(tasks, indent=2))
    config, diags = load_config_files(tmp_path, env={"RHETOR_TASK_CONFIG": "config/tasks.json"})
    assert diags == [] and config is not None
    assert config.tasks.tasks["default"].chain == ["gpt-4o", "simulated"]
    assert config.docs["tasks"].file == "config/tasks.json"


def test_version_changes_with_any_input(tmp_path: Path) -> None:
    shutil.copytree(SIM, tmp_path / "c")
    first, _ = load_config_files(tmp_path / "c", env={})
    again, _ = load_config_files(tmp_path / "c", env={})
    overridden, _ = load_config_files(tmp_path / "c", env={"RHETOR_BUDGET_DAILY_LIMIT": "1"})
    (tmp_path / "c" / "budgets.yaml").write_text("policy: enforce\n")
    edited, _ = load_config_files(tmp_path / "c", env={})
    assert first and again and overridden and edited
    assert first.version == again.version
    assert len({first.version, overridden.version, edited.version}) == 3


def test_environment_never_shows_in_the_config_repr(tmp_path: Path) -> None:
    config, _ = load_config_files(tmp_path, env={"ANTHROPIC_API_KEY": "sk-ant-secret-value"})
    assert config is not None
    assert "sk-ant-secret-value" not in repr(config)


def test_positions_of_keys_and_values() -> None:
    doc, diags = parse_source("a:\n  b: [1, {c: 2}]\n  d:\n    - x\n", "f.yaml")
    assert diags == [] and doc is not None
    assert doc.position(("a", "b")) == (2, 6)
    assert doc.position(("a", "b"), key=True) == (2, 3)
    assert doc.position(("a", "b", 1, "c")) == (2, 14)
    assert doc.position(("a", "d", 0)) == (4, 7)
    # A path that is not in the file falls back to its closest ancestor.
    assert doc.position(("a", "d", 5, "zz")) == (4, 5)


def test_duplicate_keys_are_refused_not_silently_overwritten() -> None:
    doc, diags = parse_source("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert doc is None
    assert [(d.code, d.line, d.column) for d in diags] == [("duplicate-key", 3, 1)]


def test_python_object_tags_are_refused() -> None:
    doc, diags = parse_source("a: !!python/object/apply:os.system ['true']\n", "f.yaml")
    assert doc is None and diags[0].code == "yaml-syntax"
