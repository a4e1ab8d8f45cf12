"""Fill the gateway's SQLite database with stored rows, for the "cost independent of stored rows" check.

Run with the gateway's interpreter while the gateway is stopped:

    .venv/bin/python bench/seed_rows.py --data-dir DIR --rows 1000000

Every table the gateway has written at least one row to (except the migration bookkeeping) is grown to
``--rows`` rows by copying its first row with fresh primary-key values; other columns keep the sample's
values, so the copies sit in the current budget windows, the worst case for any query by window. New
tables (contexts, templates, ...) are picked up without changes here. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

_SKIP = ("schema_version", "schema_migrations", "sqlite_")
_BATCH = 50_000


def databases(data_dir: Path) -> list[Path]:
    return sorted(p for pat in ("*.sqlite3", "*.sqlite", "*.db") for p in data_dir.rglob(pat))


def seed_table(conn: sqlite3.Connection, table: str, rows: int) -> dict[str, object]:
    have = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608 - names from sqlite_master
    if have == 0 or have >= rows:
        return {"before": have, "after": have, "seeded": 0}
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()  # cid, name, type, notnull, dflt, pk
    cols = [r[1] for r in info]
    pks = [(r[1], (r[2] or "").upper()) for r in info if r[5]]
    first = conn.execute(f'SELECT * FROM "{table}" LIMIT 1').fetchone()  # noqa: S608
    sample = dict(zip(cols, first, strict=True))
    rowid_alias = len(pks) == 1 and pks[0][1] == "INTEGER"
    if not pks:
        pks = []  # no key: plain copies
    # text columns referencing another table (foreign keys) follow the same ~seed<i> naming
    fk_text = [r[3] for r in conn.execute(f'PRAGMA foreign_key_list("{table}")').fetchall()
               if r[3] not in {n for n, _ in pks} and isinstance(sample.get(r[3]), str)]
    base_int = {}
    for name, kind in pks:
        if "INT" in kind:
            base_int[name] = (conn.execute(f'SELECT MAX("{name}") FROM "{table}"').fetchone()[0] or 0)  # noqa: S608
    placeholders = ", ".join("?" * len(cols))
    quoted = ", ".join(f'"{c}"' for c in cols)
    sql = f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})'  # noqa: S608

    # Text key columns get the suffix ~seed<i> (the same i in every table, so a copied child row points at
    # the parent copied with the same i: context_messages.context_id → contexts.id); integer key columns
    # are renumbered only when the key has no text column.
    text_key = any("INT" not in kind for _, kind in pks)

    def row(i: int) -> tuple[object, ...]:
        values = dict(sample)
        for name, kind in pks:
            if rowid_alias:
                values[name] = None
            elif "INT" not in kind:
                values[name] = f"{sample[name]}~seed{i:07d}"
            elif not text_key:
                values[name] = base_int[name] + i
        for name in fk_text:
            values[name] = f"{sample[name]}~seed{i:07d}"
        return tuple(values[c] for c in cols)

    todo = rows - have
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    try:
        for start in range(1, todo + 1, _BATCH):
            conn.executemany(sql, (row(i) for i in range(start, min(todo, start + _BATCH - 1) + 1)))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK")
        return {"before": have, "after": have, "seeded": 0, "error": str(exc)}
    after = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608
    return {"before": have, "after": after, "seeded": after - have, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args(argv)
    result: dict[str, object] = {}
    for db in databases(args.data_dir):
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not r[0].startswith(_SKIP)]
        result[str(db)] = {t: seed_table(conn, t, args.rows) for t in tables}
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        result[str(db)]["_bytes"] = db.stat().st_size  # type: ignore[index]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
