"""(being written) — route handlers are listed in HANDLERS and mounted by rhetor.server.app."""

from __future__ import annotations

from typing import Any

HANDLERS: list[Any] = []
