"""The storage interfaces: a ``Storage`` backend owns one repository per kind of durable data.

Modelled on Litestar's ``stores/base.py``: small asynchronous ABCs, one implementation per backend
(``memory.py`` for tests, ``sqlite.py`` the default, ``postgres.py`` for several replicas). A backend
offers the budget ``ledger`` and the ``contexts``, ``templates`` and ``prompts`` repositories (their ABCs
live in ``content_base.py`` and are re-exported here); each kind of data has its own tables, added by a
numbered migration.

Every method of a repository is one atomic unit: it either happens completely or not at all, also when
several processes share the database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType

from rhetor.errors import RhetorError
from rhetor.storage.content_base import ContextRepository, PromptRepository, TemplateRepository
from rhetor.storage.records import (
    BucketKey,
    BucketTotals,
    ReservationRow,
    ReserveOutcome,
    ReserveRequest,
    SettleOutcome,
    SettleRequest,
    UsageRow,
)

__all__ = [
    "ContextRepository",
    "LedgerRepository",
    "PromptRepository",
    "ReservationStateError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "TemplateRepository",
    "UnknownReservationError",
]


class StorageError(RhetorError):
    """The storage layer failed or was misused (unsupported URL, schema newer than this Rhetor, ...)."""

    code = "storage-error"


class StorageUnavailableError(StorageError):
    """The database cannot be reached or opened. Its message names the location, never a password."""

    code = "storage-unavailable"
    status = 503


class UnknownReservationError(StorageError):
    """``settle`` named a reservation id the ledger has never recorded."""

    code = "unknown-reservation"


class ReservationStateError(StorageError):
    """A reservation cannot make the transition asked for (e.g. settling one that was released)."""

    code = "reservation-state"


class LedgerRepository(ABC):
    """Durable, atomic budget ledger: buckets of spend per scope and window, and reservations."""

    __slots__ = ()

    @abstractmethod
    async def reserve(self, request: ReserveRequest) -> ReserveOutcome:
        """Check every bucket's limit and record the reservation, in one atomic step.

        Args:
            request: The reservation: its id, amount, buckets with their limits, expiry and attributes.

        Returns:
            The outcome. When ``request.enforce`` is set and some bucket's spent + reserved + amount would
            exceed its limit (never the case for a zero amount), ``admitted`` is False and nothing was
            written; otherwise the reservation is recorded, ``over`` lists the buckets it exceeds and
            ``crossed`` the thresholds it reached first.
        """
        raise NotImplementedError

    @abstractmethod
    async def settle(self, request: SettleRequest) -> SettleOutcome:
        """Replace a reservation by the real spend, atomically and at most once.

        Args:
            request: The reservation id, the real cost and token usage, and final attributes.

        Returns:
            The outcome; settling an already settled reservation changes nothing and says so.

        Raises:
            UnknownReservationError: No reservation has this id.
            ReservationStateError: The reservation was released.
        """
        raise NotImplementedError

    @abstractmethod
    async def release(self, reservation_id: str, at: datetime) -> bool:
        """Drop a live reservation that produced no spend.

        Args:
            reservation_id: The reservation to drop.
            at: When it was released (recorded on the row).

        Returns:
            True when a live reservation was released; False when it was unknown, settled, released or
            expired already (each a no-op).
        """
        raise NotImplementedError

    @abstractmethod
    async def expire(self, now: datetime, limit: int = 1000) -> list[str]:
        """Drop live reservations whose expiry is at or before ``now``.

        Args:
            now: The current time (the caller's clock).
            limit: Most reservations expired in one call.

        Returns:
            The ids of the reservations expired.
        """
        raise NotImplementedError

    @abstractmethod
    async def get(self, reservation_id: str) -> ReservationRow | None:
        """Read one reservation.

        Args:
            reservation_id: The reservation's id.

        Returns:
            The reservation in whatever state it is, or ``None`` when unknown.
        """
        raise NotImplementedError

    @abstractmethod
    async def totals(self, buckets: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        """Read the spent and reserved amounts of buckets.

        Args:
            buckets: The buckets to read.

        Returns:
            One entry per bucket asked for; a bucket never used reads as zero.
        """
        raise NotImplementedError

    @abstractmethod
    async def fired_thresholds(self, buckets: Sequence[BucketKey]) -> dict[BucketKey, list[int]]:
        """Read which warn thresholds have fired.

        Args:
            buckets: The buckets to read.

        Returns:
            Bucket → thresholds fired in it (parts per million, ascending); every bucket asked for is a key.
        """
        raise NotImplementedError

    @abstractmethod
    async def usage(self, window: str | None = None, key: str | None = None) -> list[UsageRow]:
        """Sum settled spend by (model, provider, component, task_type).

        Args:
            window: ``daily``, ``weekly`` or ``monthly`` to restrict to one window; ``None`` for all time.
            key: The window's key (e.g. ``2025-W01``); required with ``window``.

        Returns:
            One row per combination that has settled spend.
        """
        raise NotImplementedError


class Storage(ABC):
    """A storage backend. Create it with ``open_storage``, then ``await start()``; ``await close()`` after.

    Also an async context manager that starts and closes it.
    """

    kind: str = ""

    @property
    @abstractmethod
    def ledger(self) -> LedgerRepository:
        """The budget ledger repository of this backend."""
        raise NotImplementedError

    @property
    @abstractmethod
    def contexts(self) -> ContextRepository:
        """The conversation (context) repository of this backend."""
        raise NotImplementedError

    @property
    @abstractmethod
    def templates(self) -> TemplateRepository:
        """The prompt template repository of this backend."""
        raise NotImplementedError

    @property
    @abstractmethod
    def prompts(self) -> PromptRepository:
        """The system prompt repository of this backend."""
        raise NotImplementedError

    @abstractmethod
    async def start(self) -> None:
        """Open connections and apply pending schema migrations (safe when several processes start at once)."""
        raise NotImplementedError

    @abstractmethod
    async def close(self) -> None:
        """Close connections. Closing twice, or a backend never started, is a no-op."""
        raise NotImplementedError

    @abstractmethod
    async def schema_version(self) -> int:
        """The version of the newest migration applied (0 for an empty database)."""
        raise NotImplementedError

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, fit for logs: a path or a URL with any password masked."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    async def __aenter__(self) -> Storage:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
