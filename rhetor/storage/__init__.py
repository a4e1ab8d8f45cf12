"""Durable storage: pick a backend by URL with ``open_storage``, then ``await storage.start()``.

=============================  ==============================================================
``None`` / empty               SQLite at ``<data_dir>/rhetor.sqlite3`` (the default)
``sqlite:///abs/path.db``      SQLite at an absolute path (``sqlite://rel.db``: relative to data_dir)
``...?synchronous=normal``     SQLite whose spend survives a ``kill -9`` but not a power cut (no fsync
                               per commit); ``full``, the default, survives both
``postgresql://`` …            PostgreSQL (also ``postgres://``); shared by several replicas
``memory://``                  in-process, for tests; nothing is kept
=============================  ==============================================================
"""

from __future__ import annotations

from pathlib import Path

from rhetor.storage._rows import redact_url
from rhetor.storage.base import (
    ContextRepository,
    LedgerRepository,
    PromptRepository,
    ReservationStateError,
    Storage,
    StorageError,
    StorageUnavailableError,
    TemplateRepository,
    UnknownReservationError,
)
from rhetor.storage.content_records import (
    ContextHistory,
    ContextInfo,
    ContextRecord,
    PromptRecord,
    StoredMessage,
    StoredMessageIn,
    Summary,
    TemplateRecord,
)

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "ContextInfo",
    "ContextHistory",
    "ContextRecord",
    "ContextRepository",
    "LedgerRepository",
    "PromptRecord",
    "PromptRepository",
    "ReservationStateError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "StoredMessage",
    "StoredMessageIn",
    "Summary",
    "TemplateRecord",
    "TemplateRepository",
    "UnknownReservationError",
    "open_storage",
    "redact_url",
]

DEFAULT_SQLITE_NAME = "rhetor.sqlite3"


def open_storage(url: str | None, data_dir: str | Path) -> Storage:
    """The backend ``url`` names (not started yet: ``await storage.start()``).

    Args:
        url: A database URL (``RHETOR_DATABASE_URL``), or ``None``/empty for the default SQLite file.
        data_dir: Where the default SQLite file lives (``RHETOR_DATA_DIR``), and what a relative
            ``sqlite://`` path is relative to.

    Returns:
        An unstarted ``Storage``.

    Raises:
        StorageError: The URL's scheme is not one Rhetor supports (the message masks any password).
    """
    if not url:
        from rhetor.storage.sqlite import SQLiteStorage

        return SQLiteStorage(Path(data_dir) / DEFAULT_SQLITE_NAME)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from rhetor.storage.sqlite import SQLiteStorage

        rest = url.split("://", 1)[1] if "://" in url else url.split(":", 1)[1]
        rest, _, query = rest.partition("?")
        if not rest:
            raise StorageError(f"database URL {redact_url(url)!r} names no file")
        path = Path("/" + rest.lstrip("/") if rest.startswith("/") else rest)  # sqlite:////abs works too
        return SQLiteStorage(path if path.is_absolute() else Path(data_dir) / path, **_sqlite_options(url, query))
    if scheme in ("postgresql", "postgres"):
        from rhetor.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    if scheme == "memory":
        from rhetor.storage.memory import MemoryStorage

        return MemoryStorage()
    raise StorageError(
        f"unsupported database URL {redact_url(url)!r}: expected postgresql://, postgres://, sqlite:/// or memory://",
        details={"scheme": scheme},
    )


_SQLITE_OPTIONS = {"synchronous": ("full", "normal")}


def _sqlite_options(url: str, query: str) -> dict[str, str]:
    """The options of an ``sqlite:`` URL's query (``?synchronous=normal``); anything else is refused by name."""
    options: dict[str, str] = {}
    for name, _, value in (part.partition("=") for part in query.split("&") if part):
        allowed = _SQLITE_OPTIONS.get(name)
        if allowed is None:
            raise StorageError(
                f"database URL {redact_url(url)!r}: unknown SQLite option {name!r} "
                f"(known: {', '.join(_SQLITE_OPTIONS)})",
                details={"option": name, "known": list(_SQLITE_OPTIONS)},
            )
        if value.lower() not in allowed:
            raise StorageError(f"database URL {redact_url(url)!r}: {name} must be one of {', '.join(allowed)}, "
                               f"not {value!r}", details={"option": name, "value": value, "allowed": list(allowed)})
        options[name] = value.lower()
    return options
