"""What the server keeps between requests, held on ``app.state.rhetor`` (never in module globals).

The engine is read per request, so a config reload swaps it atomically: requests already running keep
the engine they started with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar.datastructures import State

from rhetor.engine.engine import Engine

__all__ = ["ServerState", "TraceStore", "server_state"]


class TraceStore:
    """The traces of the most recent requests, by request id (bounded: oldest dropped first).

    A trace is kept as given: a record, or a function making it, called on the first read (most traces are never
    read, so the request path only keeps the pieces and the rendering is left to ``GET /traces/{id}``)."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any] | Callable[[], dict[str, Any]]] = OrderedDict()

    def put(self, request_id: str, record: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        self._items[request_id] = record
        self._items.move_to_end(request_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        record = self._items.get(request_id)
        if record is None or isinstance(record, dict):
            return record
        rendered = self._items[request_id] = record()  # its place in the order is kept
        return rendered


@dataclass
class ServerState:
    engine: Engine
    active: dict[str, str] = field(default_factory=dict)
    """The provider/model chosen with POST /provider, used by requests that name neither a model nor a task."""
    traces: TraceStore = field(default_factory=TraceStore)


def server_state(state: State) -> ServerState:
    """The app's ``ServerState``, read as ``state["rhetor"]``: ``state.rhetor`` reaches it only through Litestar's
    ``__getattr__``, after an ``AttributeError`` made and dropped on every request."""
    rhetor_state: ServerState = state["rhetor"]
    return rhetor_state
