"""The budget tests use the storage fixtures (every backend, fresh PostgreSQL databases)."""

from tests.storage.conftest import (  # noqa: F401
    backend_url,
    durable_url,
    make_durable_storage,
    make_storage,
    pg_available,
    pg_url,
    storage,
)
