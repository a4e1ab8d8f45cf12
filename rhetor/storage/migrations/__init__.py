"""Versioned schema migrations: ``<dialect>/NNN_name.sql``, applied in order, each exactly once.

Each backend records applied versions in a ``schema_version`` table and applies the pending files
inside one transaction that also serialises concurrent starts (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a transaction-level advisory lock). A file is split into statements at ``;`` — keep
semicolons out of comments and string literals. Never edit a released file: add the next number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load", "statements"]

_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(dialect: str) -> list[Migration]:
    """The migrations of ``dialect`` (``sqlite`` or ``postgres``), in version order, numbered 1, 2, 3, ..."""
    found = []
    for entry in resources.files(__package__).joinpath(dialect).iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    if [mig.version for mig in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations must be numbered 001, 002, ... without gaps")
    return found


def statements(sql: str) -> list[str]:
    """The statements of a migration file, comments removed."""
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]
