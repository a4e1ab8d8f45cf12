"""`rhetor validate` against a corpus of broken configurations, one directory per case.

Every directory under ``tests/fixtures/configs/bad/`` is a complete, self-contained configuration
(offline ``simulated`` providers only) broken in one way; its name is ``<expected-code>--<variant>``.
Each case must make ``rhetor validate`` exit 1 and report the expected code; the exact text output is
pinned with a syrupy snapshot, so any change of wording, position or ordering shows up in review.
Besides the snapshots, every diagnostic's caret snippet is checked against the real file: the numbered
line is the reported line, its text is the file's text, and the caret sits under the reported column.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from rhetor.cli import main
from rhetor.config.loader import default_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
BAD = CONFIGS / "bad"
GOOD = CONFIGS / "good" / "minimal"
CASES = sorted(p for p in BAD.iterdir() if p.is_dir())

# Every code the corpus must exercise at least once.
REQUIRED_CODES = {
    "unknown-stage-type",
    "unknown-ref",
    "cycle",
    "unreachable-stage",
    "missing-input",
    "type-mismatch",
    "duplicate-id",
    "bad-value",
    "unknown-key",
    "missing-field",
    "yaml-syntax",
    "duplicate-key",
    "missing-price",
    "limit-exceeded",
}

# Cases whose name does not start with a code: the codes they must report.
EXPECTED_CODES: dict[str, set[str]] = {
    "several-problems--across-files": {
        "bad-value",
        "unknown-stage-type",
        "type-mismatch",
        "unknown-ref",
        "missing-price",
    },
}


HEADER = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<column>\d+): (?P<code>[a-z][a-z-]*): (?P<rest>.*)$")
NUMBERED = re.compile(r"^  +(?P<n>\d+) \| (?P<text>.*)$")
CARET = re.compile(r"^  +\| (?P<pad> *)\^$")
SUMMARY = re.compile(r"^(?P<errors>\d+) error\(s\), (?P<warnings>\d+) warning\(s\)$")


@dataclass
class Shown:
    """One diagnostic as printed: the header fields and its snippet lines."""

    file: str
    line: int
    column: int
    code: str
    rest: str
    snippet: list[str]


def parse_text(out: str) -> tuple[list[Shown], tuple[int, int]]:
    """The diagnostics and the (errors, warnings) summary of `rhetor validate`'s text output."""
    shown: list[Shown] = []
    summary = None
    for raw in out.splitlines():
        if m := HEADER.match(raw):
            shown.append(Shown(m["file"], int(m["line"]), int(m["column"]), m["code"], m["rest"], []))
        elif m := SUMMARY.match(raw):
            summary = (int(m["errors"]), int(m["warnings"]))
        else:
            assert raw.startswith("  ") and shown, f"unexpected output line: {raw!r}"
            shown[-1].snippet.append(raw)
    assert summary is not None, "no `N error(s), M warning(s)` line"
    return shown, summary


def source_file(case: Path, shown_file: str) -> Path:
    if shown_file.startswith("<built-in>/"):
        return default_config_dir() / shown_file.removeprefix("<built-in>/")
    return case / shown_file


def case_id(path: Path) -> str:
    return path.name


def expected_codes(case: Path) -> set[str]:
    return EXPECTED_CODES.get(case.name) or {case.name.split("--", 1)[0]}


@pytest.fixture(autouse=True)
def neutral_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RHETOR_* variable of the developer's shell may change what validate reports."""
    for var in [v for v in os.environ if v.startswith("RHETOR_")]:
        monkeypatch.delenv(var)
    for var in (
        "RHETOR_CONFIG_DIR",
        "RHETOR_TASK_CONFIG",
        "RHETOR_BUDGET_POLICY",
        "RHETOR_BUDGET_DAILY_LIMIT",
        "RHETOR_BUDGET_WEEKLY_LIMIT",
        "RHETOR_BUDGET_MONTHLY_LIMIT",
    ):
        monkeypatch.delenv(var, raising=False)


def validate(capsys: pytest.CaptureFixture[str], directory: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["validate", str(directory), *extra])
    captured = capsys.readouterr()
    assert captured.err == ""
    return code, captured.out


# ------------------------------------------------------------------------------------------------ corpus


def _case_params() -> list[object]:
    params = []
    for case in CASES:
        params.append(pytest.param(case, id=case.name))
    return params


def test_corpus_covers_every_code() -> None:
    covered = set().union(*(expected_codes(c) for c in CASES))
    assert REQUIRED_CODES <= covered, f"no case for {sorted(REQUIRED_CODES - covered)}"
    for case in CASES:
        # Self-contained: each case has its own providers.yaml, and only offline providers.
        providers = case / "providers.yaml"
        assert providers.is_file(), case.name
        assert not re.search(r"kind: *(anthropic|openai|ollama)", providers.read_text(encoding="utf-8")), case.name


@pytest.mark.parametrize("case", _case_params())
def test_corpus_case(case: Path, capsys: pytest.CaptureFixture[str], snapshot) -> None:  # type: ignore[no-untyped-def]
    code, out = validate(capsys, case)
    assert code == 1, out
    shown, (errors, warnings) = parse_text(out)
    assert errors >= 1
    assert errors + warnings == len(shown)
    assert expected_codes(case) <= {d.code for d in shown}, out

    # Gathered and sorted: by file, then line, then column.
    keys = [(d.file, d.line, d.column) for d in shown]
    assert keys == sorted(keys)

    # Machine-independent: no absolute path, every file is relative to the case (or built-in / env).
    assert str(case) not in out and str(CONFIGS) not in out
    for d in shown:
        assert d.file == "<env>" or not Path(d.file).is_absolute(), d.file
        if d.file == "<env>":
            continue
        src = source_file(case, d.file)
        assert src.is_file(), f"{d.file} is not a file of the case"
        lines = src.read_text(encoding="utf-8").splitlines()
        if not d.snippet:
            assert not lines, f"{d.file}:{d.line}: a diagnostic in a non-empty file has no snippet"
            continue
        # The caret snippet shows the reported line, verbatim, with the caret under the reported column.
        numbered = [NUMBERED.match(s) for s in d.snippet[:-1]]
        assert all(numbered), d.snippet
        assert int(numbered[-1]["n"]) == d.line, d.snippet  # type: ignore[index]
        shown_text = numbered[-1]["text"]  # type: ignore[index]
        if shown_text.endswith("<redacted>"):  # a secret's value is hidden, the rest of the line is verbatim
            assert lines[d.line - 1].startswith(shown_text.removesuffix("<redacted>")), d.snippet
        else:
            assert shown_text == lines[d.line - 1], d.snippet
        caret = CARET.match(d.snippet[-1])
        assert caret, d.snippet
        assert len(caret["pad"]) == d.column - 1, d.snippet

    assert out == snapshot


def test_output_does_not_depend_on_where_the_case_lives(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    case = BAD / "several-problems--across-files"
    copy = tmp_path / "somewhere" / "else"
    shutil.copytree(case, copy)
    _, here = validate(capsys, case)
    _, there = validate(capsys, copy)
    assert here == there
    assert str(tmp_path) not in there


def test_unknown_stage_type_does_not_cascade_into_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    """A stage whose type is unknown is reported once; the pipeline output naming it is not 'no stage'."""
    _, out = validate(capsys, BAD / "unknown-stage-type--output-stage")
    shown, _ = parse_text(out)
    assert [d.code for d in shown] == ["unknown-stage-type"]


# ------------------------------------------------------------------------------------------------ carets


def _column_of(case: Path, file: str, line: int, token: str) -> int:
    text = (case / file).read_text(encoding="utf-8").splitlines()[line - 1]
    assert text.count(token) == 1, (text, token)
    return text.index(token) + 1


@pytest.mark.parametrize(
    ("case_name", "file", "line", "token"),
    [
        # the typo'd stage type value
        ("unknown-stage-type--typo", "pipelines/main.yaml", 6, "rout"),
        # the second element of a flow sequence
        ("unknown-ref--task-chain", "tasks.yaml", 6, "smal"),
        # a value in the middle of a flow mapping
        ("bad-value--negative-timeout", "providers.yaml", 8, "-30"),
        # an unknown key points at the key, not its value
        ("unknown-key--providers-typo", "providers.yaml", 20, "context_windw"),
    ],
)
def test_caret_points_at_the_offending_token(
    capsys: pytest.CaptureFixture[str], case_name: str, file: str, line: int, token: str
) -> None:
    case = BAD / case_name
    _, out = validate(capsys, case)
    shown, _ = parse_text(out)
    column = _column_of(case, file, line, token)
    [d] = [d for d in shown if d.code == case_name.split("--")[0]]
    assert (d.file, d.line, d.column) == (file, line, column)
    source_line = (case / file).read_text(encoding="utf-8").splitlines()[line - 1]
    numbered, caret = d.snippet[-2], d.snippet[-1]
    # The caret is drawn under the token in the printed source line.
    gutter = numbered.index(" | ") + len(" | ")
    assert numbered[gutter:] == source_line
    assert caret.index("^") == gutter + column - 1
    assert numbered[caret.index("^") :].startswith(token)


# ------------------------------------------------------------------------------------------------ json


def test_json_format_lists_every_diagnostic_with_positions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(capsys, BAD / "several-problems--across-files", "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    got = [(d["file"], d["line"], d["column"], d["code"], d["path"], d["severity"]) for d in report["diagnostics"]]
    assert got == [
        ("budgets.yaml", 4, 11, "bad-value", "limits.weekly", "error"),
        ("pipelines/batch.yaml", 4, 11, "unknown-stage-type", "stages[0].type", "error"),
        ("pipelines/main.yaml", 15, 14, "type-mismatch", "stages[1].inputs.chain", "error"),
        ("pipelines/main.yaml", 17, 9, "unknown-ref", "output", "error"),
        ("providers.yaml", 18, 15, "unknown-ref", "models.large.provider", "error"),
        ("providers.yaml", 23, 3, "missing-price", "models.free", "error"),
        ("tasks.yaml", 9, 20, "unknown-ref", "tasks.code.chain[1]", "error"),
    ]
    by_path = {d["path"]: d for d in report["diagnostics"]}
    assert by_path["models.large.provider"]["hint"] == "did you mean 'sim-slow'?"
    assert by_path["stages[0].type"]["hint"] == "did you mean 'route'?"
    assert set(report["diagnostics"][0]) == {"file", "line", "column", "code", "path", "message", "hint", "severity"}


def test_json_and_text_report_the_same_diagnostics(capsys: pytest.CaptureFixture[str]) -> None:
    case = BAD / "several-problems--across-files"
    _, text = validate(capsys, case)
    _, raw = validate(capsys, case, "--format", "json")
    shown, _ = parse_text(text)
    assert [(d.file, d.line, d.column, d.code) for d in shown] == [
        (d["file"], d["line"], d["column"], d["code"]) for d in json.loads(raw)["diagnostics"]
    ]


# ------------------------------------------------------------------------------------------------ good config


def test_good_config_validates_and_prints_the_worst_case(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(capsys, GOOD)
    assert code == 0, out
    lines = out.splitlines()
    assert re.fullmatch(r"config OK \(version [0-9a-f]{16}\): 1 pipeline\(s\)", lines[0])
    # chain `code` is [large, small, free]: 30 + 5 + 5 s; large costs 96000*3/1e6 + 4000*15/1e6 = 0.348,
    # small 7000*0.5/1e6 + 1000*1.5/1e6 = 0.005, free 0.
    assert lines[1:] == ["  main: 2 stages; worst case 3 attempts, 40 s, $0.3530"]


def test_good_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(capsys, GOOD, "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True and report["diagnostics"] == []
    assert report["pipelines"]["main"] == {
        "stages": ["route", "generate"],
        "worst_case": {"attempts": 3, "latency_s": 40.0, "cost_usd": 0.353},
    }


# ------------------------------------------------------------------------------------------------ environment


def _env_diags(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out = validate(capsys, GOOD, "--format", "json")
    assert code == 1, out
    return json.loads(out)["diagnostics"]


def test_env_budget_policy_typo_has_a_did_you_mean(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_POLICY", "enforc")
    [d] = _env_diags(capsys)
    assert (d["file"], d["code"]) == ("<env>", "bad-value")
    assert "RHETOR_BUDGET_POLICY='enforc'" in str(d["message"])
    assert d["hint"] == "did you mean 'enforce'?"


def test_env_budget_policy_bogus(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_POLICY", "bogus")
    [d] = _env_diags(capsys)
    assert (d["file"], d["code"]) == ("<env>", "bad-value")
    # Nothing is close to 'bogus', so there is no did-you-mean; the message lists the allowed values.
    assert str(d["message"]).endswith("is not one of ignore, warn, enforce, downgrade")


def test_env_budget_limit_not_a_number(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_DAILY_LIMIT", "abc")
    [d] = _env_diags(capsys)
    assert (d["file"], d["code"]) == ("<env>", "bad-value")
    assert d["message"] == "RHETOR_BUDGET_DAILY_LIMIT='abc' is not a number of USD >= 0"


def test_env_negative_limit(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_MONTHLY_LIMIT", "-5")
    [d] = _env_diags(capsys)
    assert (d["file"], d["code"], d["message"]) == (
        "<env>",
        "bad-value",
        "RHETOR_BUDGET_MONTHLY_LIMIT='-5' is not a number of USD >= 0",
    )


def test_env_problems_text_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, snapshot
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RHETOR_BUDGET_POLICY", "bogus")
    monkeypatch.setenv("RHETOR_BUDGET_DAILY_LIMIT", "abc")
    code, out = validate(capsys, GOOD)
    assert code == 1
    assert out == snapshot


def test_env_valid_overrides_are_accepted(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_POLICY", "enforce")
    monkeypatch.setenv("RHETOR_BUDGET_DAILY_LIMIT", "5")
    code, out = validate(capsys, GOOD)
    assert code == 0, out


# ------------------------------------------------------------------------------------------------ regressions
# Each found by reviewing this corpus; each states the behaviour a user should get.


def test_env_nan_limit_is_reported_against_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_DAILY_LIMIT", "nan")
    [d] = _env_diags(capsys)
    assert d["file"] == "<env>" and "RHETOR_BUDGET_DAILY_LIMIT" in str(d["message"])


def test_env_limit_above_file_limit_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHETOR_BUDGET_DAILY_LIMIT", "100")  # the file's weekly limit is 50
    [d] = _env_diags(capsys)
    assert d["code"] == "bad-value"
    assert "RHETOR_BUDGET_DAILY_LIMIT" in str(d["message"]) + str(d["hint"])


@pytest.mark.parametrize(
    "case_name",
    [
        "bad-value--input-not-dotted",
        "missing-field--pipeline-output",
        "missing-field--stage-type",
        "duplicate-key--stage-inputs",
        "unknown-key--pipeline-top-level",
    ],
)
def test_invalid_pipeline_file_does_not_cascade_into_tasks(capsys: pytest.CaptureFixture[str], case_name: str) -> None:
    _, out = validate(capsys, BAD / case_name)
    shown, _ = parse_text(out)
    assert all(d.file.startswith("pipelines/") for d in shown), out


def test_non_dotted_input_points_at_the_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    case = BAD / "bad-value--input-not-dotted"
    _, out = validate(capsys, case)
    shown, _ = parse_text(out)
    [d] = [d for d in shown if d.code == "bad-value"]
    assert d.line == 15  # `chain: route`; line 13 is the valid `messages: request.messages`


def test_reserved_request_id_reports_no_cycle(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = validate(capsys, BAD / "duplicate-id--reserved-request")
    shown, _ = parse_text(out)
    assert "cycle" not in {d.code for d in shown}


def test_a_literal_api_key_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    case = BAD / "bad-value--api-key-literal"
    assert "sk-live-123" in (case / "providers.yaml").read_text()
    for fmt in ("text", "json"):
        code, out = validate(capsys, case, "--format", fmt)
        assert code == 1
        assert "sk-live-123" not in out
        assert "env:VARIABLE" in out


def test_pipeline_files_may_end_in_yml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = validate(capsys, CONFIGS / "good" / "pipeline-yml-extension")
    assert code == 0, out
    assert "main: 2 stages" in out


def test_a_missing_file_next_to_others_is_a_warning_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = validate(capsys, BAD / "unknown-ref--builtin-tasks-fallback")
    shown, (errors, warnings) = parse_text(out)
    assert warnings == 1
    assert shown[0].code == "missing-file" and shown[0].file == "<built-in>/tasks.yaml"
    assert "no tasks.yaml in unknown-ref--builtin-tasks-fallback/; this built-in one is used" in shown[0].rest
