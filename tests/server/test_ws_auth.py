"""WebSocket endpoints need the API key too: as the `api_key` query parameter (the seeds' clients) or
a header; without it the socket is refused (close code 4401) and nothing runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from rhetor.engine.engine import build_engine
from rhetor.server.app import create_app
from rhetor.server.settings import ServerSettings
from tests.server.conftest import SIM_DIR


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = ServerSettings.from_env({"RHETOR_API_KEY": "ws-key", "RHETOR_REGISTER": "0"})
    with TestClient(app=create_app(build_engine(SIM_DIR, env={}), settings=settings)) as c:
        yield c


@pytest.mark.parametrize("path", ["/ws", "/ws/rhetor/streaming", "/ws?api_key=wrong"])
def test_a_socket_without_the_key_is_refused(client: TestClient, path: str) -> None:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(path) as ws:
        ws.receive_text()
    assert info.value.code == 4401


def test_the_key_as_query_parameter_or_header_is_accepted(client: TestClient) -> None:
    with client.websocket_connect("/ws?api_key=ws-key") as ws:
        ws.send_json({"type": "STATUS", "id": "s1"})
        assert ws.receive_json()["id"] == "s1"
    with client.websocket_connect("/ws/rhetor/streaming", headers={"X-API-Key": "ws-key"}) as ws:
        ws.send_json({"prompt": "hi", "stream": True})
        messages = []
        while not messages or messages[-1]["type"] not in ("content_complete", "error"):
            messages.append(ws.receive_json())
        assert messages[-1]["type"] == "content_complete"
