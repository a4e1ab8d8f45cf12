"""Operating `rhetor serve`: reload on SIGHUP, draining streams on SIGTERM, Hermes registration, logs, auth."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import free_port, serve
from tests.fakes.hermes import FakeHermes

SIM = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "sim"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    target = tmp_path / "cfg"
    shutil.copytree(SIM, target)
    with (target / "providers.yaml").open("a") as f:
        f.write('  slow: {provider: simulated, id: "simulated:delay=1.5", context_window: 1000, '
                'price: {input: 0, output: 0}}\n')
    return target


@pytest.fixture
def hermes() -> Iterator[FakeHermes]:
    fake = FakeHermes().start()
    yield fake
    fake.stop()


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise(config: Path, tmp_path: Path) -> None:
    served = serve(config, tmp_path / "log.txt")
    try:
        before = httpx.get(f"{served.base}/health").json()["config_version"]
        (config / "tasks.yaml").write_text("tasks:\n  default: {chain: [simulated]}\n")
        served.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(f"{served.base}/health").json()["config_version"] == before:
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.05)
        good = httpx.get(f"{served.base}/health").json()["config_version"]
        (config / "tasks.yaml").write_text("tasks: [broken\n")
        served.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert httpx.get(f"{served.base}/health").json()["config_version"] == good
        assert "SIGHUP reload refused" in served.log()
        body = httpx.post(f"{served.base}/message", json={"message": "still serving"}).json()
        assert body["routing_explanation"]["chain"] == ["simulated"]
    finally:
        served.stop()


def test_sigterm_lets_an_open_stream_finish(config: Path, tmp_path: Path) -> None:
    served = serve(config, tmp_path / "log.txt", {"RHETOR_DRAIN_SECONDS": "10"})
    events: list[dict[str, object]] = []

    def consume() -> None:
        with httpx.stream("POST", f"{served.base}/stream", json={"message": "slow one", "model": "slow"},
                          timeout=20) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.5)  # the stream is open, its first chunk 1.5 s away
    served.proc.send_signal(signal.SIGTERM)
    reader.join(timeout=20)
    assert events and events[-1]["done"] is True and events[-1]["finished"] is True
    assert events[-1]["message"] == "".join(str(e["chunk"]) for e in events[:-1])
    # uvicorn drains, then re-raises the SIGTERM it caught: the conventional exit for that signal.
    assert served.proc.wait(timeout=20) == -signal.SIGTERM


def test_registers_with_hermes(config: Path, tmp_path: Path, hermes: FakeHermes) -> None:
    served = serve(config, tmp_path / "log.txt", {"RHETOR_REGISTER": "1", "HERMES_API_URL": hermes.url})
    try:
        deadline = time.monotonic() + 10
        while not hermes.requests:
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.05)
        payload = hermes.requests[0].json
        assert hermes.requests[0].path == "/api/register"
        assert payload["id"] == "rhetor" and payload["name"] == "Rhetor"
        assert payload["capabilities"] == ["llm_management", "prompt_engineering", "context_management",
                                           "model_selection"]
        assert payload["endpoints"]["ws"].endswith("/ws")
    finally:
        served.stop()


def test_hermes_down_is_retried_and_rhetor_serves_meanwhile(config: Path, tmp_path: Path,
                                                            hermes: FakeHermes) -> None:
    from tests.fakes._http import Fault

    hermes.fail_next(Fault(status=503))  # the first registration fails; the retry (1 s later) succeeds
    served = serve(config, tmp_path / "log.txt", {"RHETOR_REGISTER": "1", "HERMES_API_URL": hermes.url})
    try:
        assert httpx.post(f"{served.base}/message", json={"message": "hi"}).status_code == 200
        deadline = time.monotonic() + 10
        while len(hermes.requests) < 2:
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.05)
        assert "Hermes registration failed; retrying" in served.log()
    finally:
        served.stop()


def test_unreachable_hermes_does_not_block_serving(config: Path, tmp_path: Path) -> None:
    served = serve(config, tmp_path / "log.txt",
                   {"RHETOR_REGISTER": "1", "HERMES_API_URL": f"http://127.0.0.1:{free_port()}"})
    try:
        assert httpx.post(f"{served.base}/message", json={"message": "hi"}).status_code == 200
    finally:
        served.stop()


def test_logs_are_json_lines_with_the_request_id_and_no_keys(config: Path, tmp_path: Path) -> None:
    served = serve(config, tmp_path / "log.txt", {"RHETOR_API_KEY": "top-secret-key"},
                   health_headers=None)
    try:
        r = httpx.post(f"{served.base}/message", json={"message": "log me"},
                       headers={"X-API-Key": "top-secret-key", "X-Request-ID": "log-1"})
        assert r.status_code == 200
        assert httpx.post(f"{served.base}/message", json={"message": "x"}).status_code == 401
    finally:
        served.stop()
    lines = [json.loads(line) for line in served.log().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "rhetor.access"]
    assert any(e["request_id"] == "log-1" and e["status"] == "200" and e["path"] == "/message" for e in access)
    assert any(e["status"] == "401" for e in access)
    assert "top-secret-key" not in served.log()
