"""Diagnostics: one problem of a configuration, with where it is and how to fix it.

Every check (YAML syntax, pydantic models, cross-references, the pipeline graph, worst-case limits)
produces ``Diagnostic`` values; they are gathered, sorted and reported together, never first-only.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Diagnostic", "Path_", "dotted", "suggest", "suggest_or_list"]

Path_ = tuple[str | int, ...]


def dotted(path: Path_) -> str:
    """``("stages", 1, "with", "x")`` → ``stages[1].with.x``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint, or None when nothing is close."""
    match = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else None


def suggest_or_list(word: str, candidates: Iterable[str], most: int = 10) -> str | None:
    """A "did you mean" hint, else the known names (up to ``most``), else None."""
    names = sorted(set(candidates))
    hint = suggest(word, names)
    if hint or not names:
        return hint
    shown = ", ".join(names[:most]) + (", ..." if len(names) > most else "")
    return f"known: {shown}"


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    column: int
    code: str
    message: str
    path: str = ""
    hint: str | None = field(default=None, compare=False)
    snippet: str = field(default="", compare=False)
    severity: str = field(default="error", compare=False)

    def one_line(self) -> str:
        where = f" {self.path}:" if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}:{self.column}: {self.code}:{where} {self.message}{hint}"

    def render(self) -> str:
        """The CLI form: the one-line summary and a caret snippet under it."""
        return self.one_line() + ("\n" + self.snippet if self.snippet else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "severity": self.severity,
        }


def caret_snippet(text: str, line: int, column: int) -> str:
    """Up to one line of context before the offending line, then a caret under the column."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    first = max(1, line - 1)
    width = len(str(line))
    out = [f"  {n:>{width}} | {lines[n - 1]}" for n in range(first, line + 1)]
    out.append(f"  {' ' * width} | {' ' * (column - 1)}^")
    return "\n".join(out)


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
