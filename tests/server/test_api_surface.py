"""The rest of the HTTP surface in-process: catalog, /chat, legacy shapes, auth, CORS, limits,
request ids and traces, metrics, OpenAPI, reload."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from rhetor.engine.engine import build_engine
from rhetor.server.app import create_app
from rhetor.server.settings import ServerSettings
from tests.server.conftest import SIM_DIR, sse_events


@pytest.fixture
async def secured() -> AsyncIterator[AsyncTestClient]:
    settings = ServerSettings.from_env({"RHETOR_API_KEY": "s3cret-key", "RHETOR_REGISTER": "0"})
    async with AsyncTestClient(app=create_app(build_engine(SIM_DIR, env={}), settings=settings)) as c:
        yield c


async def test_root_lists_name_version_and_endpoints(client: AsyncTestClient) -> None:
    body = (await client.get("/")).json()
    assert body["name"] == "Rhetor" and body["version"]
    assert body["endpoints"]["message"] == "POST /message"


async def test_providers_lists_models_availability_and_active(client: AsyncTestClient) -> None:
    body = (await client.get("/providers")).json()
    sim = body["providers"]["simulated"]
    assert sim["available"] is True
    assert set(sim["models"]) == {"simulated", "flaky", "cut"}
    assert sim["models"]["flaky"]["price_per_million"] == {"input": 1.0, "output": 2.0, "cache_read": None,
                                                          "cache_write": None}
    assert body["active"] == {}


async def test_set_provider_is_validated_and_then_used(client: AsyncTestClient) -> None:
    r = await client.post("/provider", json={"provider": "simulatd"})
    assert r.status_code == 400 and "did you mean 'simulated'?" in r.json()["error"]["message"]
    r = await client.post("/provider", json={"provider": "simulated", "model": "nope"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "model"
    r = await client.post("/provider", json={"provider": "simulated", "model": "simulated"})
    assert r.json() == {"success": True, "active": {"provider": "simulated", "model": "simulated"}}
    assert (await client.get("/providers")).json()["active"] == {"provider": "simulated", "model": "simulated"}
    # A request naming neither model nor task uses the active choice; naming a task routes as usual.
    chosen = (await client.post("/message", json={"message": "short"})).json()
    assert chosen["routing_explanation"]["chain"] == ["simulated"]
    routed = (await client.post("/message", json={"message": "x", "task_type": "default"})).json()
    assert routed["routing_explanation"]["chain"] == ["flaky", "simulated"]


async def test_chat_takes_a_conversation(client: AsyncTestClient) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second question"}]
    body = (await client.post("/chat", json={"messages": messages, "context_id": "c"})).json()
    assert body["message"].endswith('You said: "second question"')
    # Per message: ceil(characters / 4) + 4 of framing: "Be brief." 3+4, "first" 2+4, "ok" 1+4, "second question" 4+4.
    assert body["usage"]["input_tokens"] == 26
    events = sse_events((await client.post("/chat", json={"messages": messages, "streaming": True})).text)
    assert events[-1]["done"] is True and events[-1]["message"] == "".join(e["chunk"] for e in events[:-1])
    r = await client.post("/chat", json={"messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "messages.0.role"


async def test_legacy_completions_and_chat(client: AsyncTestClient) -> None:
    body = (await client.post("/api/rhetor/completions", json={"prompt": "Hello, world!", "temperature": 0.7})).json()
    assert body["text"].endswith('You said: "Hello, world!"') and body["model"] == "simulated"
    body = (await client.post("/api/rhetor/chat", json={"messages": [{"role": "user", "content": "hi"}]})).json()
    assert body["message"]["role"] == "assistant" and body["message"]["content"].endswith('"hi"')
    events = sse_events((await client.post("/api/rhetor/completions", json={"prompt": "p", "stream": True})).text)
    assert events[-1]["done"] is True and events[-1]["text"] == "".join(e["text"] for e in events[:-1])


async def test_auth_guards_everything_but_health(secured: AsyncTestClient) -> None:
    assert (await secured.get("/health")).status_code == 200
    for path in ("/", "/providers", "/metrics", "/schema/openapi.json"):
        r = await secured.get(path)
        assert r.status_code == 401, path
        assert r.json() == {"error": {"code": "unauthorized", "message": "missing or invalid API key", "details": {},
                                      "type": "authentication_error", "param": None}}
    r = await secured.post("/message", json={"message": "x"}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and "s3cret" not in r.text
    r = await secured.post("/message", json={"message": "x"}, headers={"X-API-Key": "s3cret-key"})
    assert r.status_code == 200
    r = await secured.post("/message", json={"message": "x"}, headers={"Authorization": "Bearer s3cret-key"})
    assert r.status_code == 200


async def test_per_component_keys_file(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"ergon-key").hexdigest()
    (tmp_path / "keys.yaml").write_text(f"keys:\n  - component: ergon\n    key: sha256:{digest}\n"
                                        "  - component: apollo\n    key: env:APOLLO_KEY\n")
    settings = ServerSettings.from_env({"RHETOR_API_KEYS_FILE": str(tmp_path / "keys.yaml"), "APOLLO_KEY": "ap-1",
                                        "RHETOR_REGISTER": "0"})
    async with AsyncTestClient(app=create_app(build_engine(SIM_DIR, env={}), settings=settings)) as c:
        for key, status in (("ergon-key", 200), ("ap-1", 200), ("ap-2", 401)):
            assert (await c.get("/providers", headers={"X-API-Key": key})).status_code == status
        # A component's key makes its requests that component's, and may not speak for another one.
        r = await c.post("/message", json={"message": "x"}, headers={"X-API-Key": "ergon-key", "X-Request-ID": "k1"})
        assert r.status_code == 200 and (await c.get("/traces/k1", headers={"X-API-Key": "ergon-key"})).json()[
            "component"] == "ergon"
        r = await c.post("/message", json={"message": "x", "component": "apollo"}, headers={"X-API-Key": "ergon-key"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await c.post("/v1/chat/completions", headers={"X-API-Key": "ergon-key"},
                         json={"model": "simulated", "messages": [{"role": "user", "content": "x"}],
                               "rhetor": {"component": "apollo"}})
        assert r.status_code == 403


async def test_cors_preflight_is_answered() -> None:
    settings = ServerSettings.from_env({"RHETOR_CORS_ORIGINS": "http://ui.local", "RHETOR_API_KEY": "k",
                                        "RHETOR_REGISTER": "0"})
    async with AsyncTestClient(app=create_app(build_engine(SIM_DIR, env={}), settings=settings)) as c:
        r = await c.options("/message", headers={"Origin": "http://ui.local", "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "content-type,x-api-key"})
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "http://ui.local"
        r = await c.get("/health", headers={"Origin": "http://ui.local"})
        assert r.headers["access-control-allow-origin"] == "http://ui.local"


async def test_oversize_body_is_a_413_json() -> None:
    settings = ServerSettings.from_env({"RHETOR_MAX_BODY_BYTES": "2048", "RHETOR_REGISTER": "0"})
    async with AsyncTestClient(app=create_app(build_engine(SIM_DIR, env={}), settings=settings)) as c:
        r = await c.post("/message", json={"message": "x" * 5000})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body-too-large"


async def test_request_id_is_echoed_and_its_trace_retrievable(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"message": "trace me"}, headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42" and r.json()["request_id"] == "req-42"
    trace = (await client.get("/traces/req-42")).json()
    assert trace["status"] == "ok" and [t["id"] for t in trace["trace"]] == ["route", "generate"]
    assert trace["routing_explanation"]["chain"] == ["flaky", "simulated"]
    r = await client.post("/message", json={"message": "x", "model": "flaky"}, headers={"X-Request-ID": "bad id!"})
    rid = r.headers["x-request-id"]
    assert rid != "bad id!" and len(rid) == 32  # unsafe ids are replaced
    failed = (await client.get(f"/traces/{rid}")).json()
    assert failed["status"] == "error" and failed["error"]["code"] == "all-targets-failed"
    assert (await client.get("/traces/nope")).status_code == 404


async def test_metrics_count_requests_tokens_cost_errors_and_fallbacks(client: AsyncTestClient) -> None:
    await client.post("/message", json={"message": "one", "component": "ergon"})
    await client.post("/message", json={"message": "x", "model": "flaky", "component": "ergon"})
    text = (await client.get("/metrics")).text
    assert 'rhetor_http_requests_total{method="POST",path="/message",status="200"} 1' in text
    assert 'rhetor_http_requests_total{method="POST",path="/message",status="502"} 1' in text
    assert 'rhetor_completions_total{component="ergon",model="simulated",provider="simulated"} 1' in text
    assert 'rhetor_fallbacks_total{code="rate-limited",component="ergon",model="flaky",provider="simulated"} 2' in text
    assert 'rhetor_errors_total{code="all-targets-failed",component="ergon"} 1' in text
    assert 'rhetor_tokens_total{component="ergon",kind="output",model="simulated",provider="simulated"}' in text
    assert "# TYPE rhetor_http_request_duration_seconds histogram" in text


async def test_openapi_document_describes_the_endpoints(client: AsyncTestClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    for path in ("/message", "/stream", "/chat", "/providers", "/provider", "/health", "/api/rhetor/completions"):
        assert path in doc["paths"], path
    assert "MessageIn" in str(doc["components"]["schemas"])


async def test_reload_swaps_only_a_valid_config(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    shutil.copytree(SIM_DIR, config)
    engine = build_engine(config, env={})
    app = create_app(engine, config_dir=config, env={})
    async with AsyncTestClient(app=app) as c:
        before = (await c.get("/health")).json()["config_version"]
        (config / "tasks.yaml").write_text("tasks:\n  default: {chain: [simulated]}\n")
        r = await c.post("/admin/reload")
        assert r.status_code == 200 and r.json()["previous_version"] == before
        after = (await c.get("/health")).json()["config_version"]
        assert after == r.json()["config_version"] != before
        assert (await c.post("/message", json={"message": "x"})).json()["routing_explanation"]["chain"] == [
            "simulated"]
        (config / "tasks.yaml").write_text("tasks:\n  default: {chain: [nonexistent]}\n")
        r = await c.post("/admin/reload")
        assert r.status_code == 422
        assert r.json()["error"]["details"]["diagnostics"][0]["code"] == "unknown-ref"
        assert (await c.get("/health")).json()["config_version"] == after  # still serving the good one


def test_trace_store_renders_a_trace_once_on_its_first_read_and_stays_bounded() -> None:
    from rhetor.server.state import TraceStore

    calls: list[str] = []

    def later(rid: str) -> dict[str, str]:
        calls.append(rid)
        return {"request_id": rid}

    store = TraceStore(capacity=2)
    store.put("a", lambda: later("a"))
    store.put("b", {"request_id": "b"})
    assert calls == []  # nothing rendered on the request path
    assert store.get("a") == store.get("a") == {"request_id": "a"} and calls == ["a"]
    store.put("c", lambda: later("c"))  # "a" is the oldest put, rendered or not: dropped
    assert store.get("a") is None and store.get("b") == {"request_id": "b"} and store.get("c") == {"request_id": "c"}
    assert calls == ["a", "c"]
