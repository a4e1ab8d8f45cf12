"""Templates, prompts, contexts and evaluation over HTTP, in-process, on the repository's own config.

The repository's default pipeline has the ``system_prompt``, ``context`` and ``save`` stages; the engine is
built without resources, so storage is in memory and fresh per test. With no API key the offline
``simulated`` provider answers by echoing the last user message (whitespace collapsed, cut at 200 chars).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from rhetor.engine.engine import build_engine
from rhetor.server.app import create_app
from rhetor.server.settings import ApiKey, ServerSettings
from tests.server.conftest import sse_events

REPO = Path(__file__).resolve().parents[2]
Client = AsyncTestClient[Any]

BUG_TEMPLATE = """Analyze the following bug report and provide insights:

Bug Description:
{bug_description}

Steps to Reproduce:
{reproduction_steps}

Expected Behavior:
{expected_behavior}

Actual Behavior:
{actual_behavior}

Environment:
{environment}

Please provide:
1. A root cause analysis
2. Potential solutions
3. Severity assessment (low, medium, high, critical)
4. Estimated effort to fix (hours)"""

BUG_METADATA = {
    "description": "Template for analyzing software bug reports",
    "required_parameters": ["bug_description", "reproduction_steps", "expected_behavior", "actual_behavior"],
    "optional_parameters": ["environment"],
}

BUG_PARAMS = {"bug_description": "Login fails", "reproduction_steps": "Open /login; submit",
              "expected_behavior": "Dashboard", "actual_behavior": "500 error", "environment": "Not specified"}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(build_engine(REPO, env={}))) as c:
        yield c


@pytest.fixture
async def ergon_client() -> AsyncIterator[Client]:
    """A server whose only API key belongs to component ``ergon``."""
    settings = ServerSettings(api_keys=(ApiKey(hashlib.sha256(b"ergon-key").digest(), "ergon"),))
    app = create_app(build_engine(REPO, env={}), settings=settings)
    async with AsyncTestClient(app=app) as c:
        c.headers["X-API-Key"] = "ergon-key"
        yield c


def error_of(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code
    return error


async def create_bug_template(client: Client) -> dict[str, Any]:
    r = await client.post("/templates", json={"name": "bug_report_analysis", "content": BUG_TEMPLATE,
                                              "metadata": BUG_METADATA})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# ---- templates --------------------------------------------------------------------------------------

async def test_seed_bug_report_template_create_render_generate(client: Client) -> None:
    created = await create_bug_template(client)
    assert created["created"] is True and created["template_id"] == "bug_report_analysis"
    assert created["variables"] == {"required": BUG_METADATA["required_parameters"], "optional": {"environment": ""}}
    assert created["metadata"] == BUG_METADATA
    assert created["description"] == BUG_METADATA["description"]

    listed = (await client.get("/templates")).json()
    assert [t["name"] for t in listed["templates"]] == ["bug_report_analysis"]
    assert (await client.get("/templates/bug_report_analysis")).json()["content"] == BUG_TEMPLATE

    r = await client.post("/templates/bug_report_analysis/render", json={"parameters": BUG_PARAMS})
    assert r.status_code == 200, r.text
    rendered = r.json()["rendered"]
    assert r.json()["name"] == "bug_report_analysis"
    assert rendered == BUG_TEMPLATE.format(**BUG_PARAMS)
    # The optional variable defaults to empty.
    without_env = {k: v for k, v in BUG_PARAMS.items() if k != "environment"}
    r = await client.post("/templates/bug_report_analysis/render", json={"variables": without_env})
    assert "Environment:\n\n\nPlease provide" in r.json()["rendered"]

    r = await client.post("/templates/bug_report_analysis/generate",
                          json={"parameters": BUG_PARAMS, "temperature": 0.3, "context_id": "ergon:bugs"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["template"] == "bug_report_analysis" and body["rendered"] == rendered
    echoed = " ".join(rendered.split())[:197]
    assert body["message"].startswith("This is a simulated response") and echoed in body["message"]
    assert (body["model"], body["provider"], body["context"], body["finished"]) == (
        "simulated", "simulated", "ergon:bugs", True)
    assert [t["id"] for t in body["trace"]][-2:] == ["generate", "save"]
    # The conversation stored is the rendered prompt and the answer.
    stored = (await client.get("/contexts/ergon:bugs")).json()["messages"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", rendered), ("assistant", body["message"])]


async def test_generate_streams_like_message_with_template_fields(client: Client) -> None:
    await create_bug_template(client)
    r = await client.post("/templates/bug_report_analysis/generate",
                          json={"parameters": BUG_PARAMS, "streaming": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    chunks, final = events[:-1], events[-1]
    assert chunks and all(e["done"] is False for e in chunks)
    assert final["done"] is True and final["finished"] is True
    assert final["message"] == "".join(e["chunk"] for e in chunks)
    assert final["template"] == "bug_report_analysis" and final["rendered"] == BUG_TEMPLATE.format(**BUG_PARAMS)
    assert all("template" not in e for e in chunks)
    r = await client.post("/templates/bug_report_analysis/generate",
                          json={"parameters": BUG_PARAMS, "streaming": True, "pipeline": "nope"})
    assert error_of(r, 404, "unknown-pipeline")["details"]["field"] == "pipeline"
    r = await client.post("/templates/bug_report_analysis/generate", json={"parameters": BUG_PARAMS, "message": "m"})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "message"


async def test_missing_variables_are_named(client: Client) -> None:
    await create_bug_template(client)
    partial = {"bug_description": "x", "reproduction_steps": "y"}
    r = await client.post("/templates/bug_report_analysis/render", json={"parameters": partial})
    error = error_of(r, 400, "bad-request")
    assert error["details"]["missing"] == ["expected_behavior", "actual_behavior"]
    assert error["details"]["field"] == "parameters" and "expected_behavior" in error["message"]
    r = await client.post("/templates/bug_report_analysis/render", json={"variables": partial})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "variables"
    r = await client.post("/templates/bug_report_analysis/generate", json={"parameters": partial})
    assert error_of(r, 400, "bad-request")["details"]["missing"] == ["expected_behavior", "actual_behavior"]
    r = await client.post("/templates/bug_report_analysis/render", json={"variables": {}, "parameters": {}})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "parameters"


@pytest.mark.parametrize("content", ["{x.__class__}", "{x!r}", "{x[0]}", "{x:>10}", "open { brace"])
async def test_code_like_or_broken_templates_are_refused(client: Client, content: str) -> None:
    r = await client.post("/templates", json={"name": "evil", "content": content})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "content"
    error_of(await client.get("/templates/evil"), 404, "not-found")


async def test_variables_form_list_form_and_unused_declarations(client: Client) -> None:
    r = await client.post("/templates", json={"name": "greet", "content": "Hello {who}{{!}} {tone}",
                                              "description": "d", "variables": {"required": ["who"],
                                                                                "optional": {"tone": "kindly"}}})
    assert r.status_code == 201 and r.json()["variables"] == {"required": ["who"], "optional": {"tone": "kindly"}}
    rendered = (await client.post("/templates/greet/render", json={"variables": {"who": "Ada"}})).json()["rendered"]
    assert rendered == "Hello Ada{!} kindly"
    r = await client.post("/templates", json={"name": "docs", "content": "Document {component}.",
                                              "variables": ["component"]})
    assert r.json()["variables"] == {"required": ["component"], "optional": {}}
    r = await client.post("/templates", json={"name": "bad", "content": "{a}", "variables": {"required": ["b"]}})
    assert error_of(r, 400, "bad-request")["details"] == {"field": "variables", "unused": ["b"]}
    r = await client.post("/templates", json={"name": "bad", "content": "{a}",
                                              "metadata": {"required_parameters": ["a", "zz"]}})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "metadata"
    r = await client.post("/templates", json={"name": "bad", "content": "{a}",
                                              "metadata": {"required_parameters": "a"}})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "metadata.required_parameters"
    r = await client.post("/templates", json={"name": "bad", "content": "{a}", "variables": ["a"],
                                              "metadata": {"required_parameters": ["a"]}})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "variables"


async def test_request_validation_names_the_field(client: Client) -> None:
    r = await client.post("/templates", json={"name": "t"})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "content"
    r = await client.post("/templates", json={"name": "t", "content": "x", "template": "x"})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "template"
    r = await client.post("/templates", json={"name": "a/b", "content": "x"})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "name"
    r = await client.post("/evaluate", json={"response": "x"})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "prompt"
    r = await client.post("/prompts", json={"name": "p", "content": "c"})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "component"
    r = await client.get("/contexts", params={"limit": 0})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "limit"


async def test_create_twice_replaces_the_template(client: Client) -> None:
    """Upsert: the same name again replaces content, variables, description and metadata; created_at is kept;
    201 ``created: true`` the first time, 200 ``created: false`` after."""
    first = (await client.post("/templates", json={"name": "t", "content": "A {x}", "description": "one"})).json()
    r = await client.post("/templates", json={"name": "t", "content": "B {y}", "metadata": {"owner": "me"}})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["created"] is False
    assert (second["content"], second["required"], second["description"]) == ("B {y}", ["y"], "")
    assert second["metadata"]["owner"] == "me"
    assert second["created_at"] == first["created_at"] and second["updated_at"] >= first["updated_at"]
    assert len((await client.get("/templates")).json()["templates"]) == 1


async def test_unknown_templates_are_404(client: Client) -> None:
    for r in (await client.get("/templates/nope"), await client.delete("/templates/nope"),
              await client.post("/templates/nope/render", json={}),
              await client.post("/templates/nope/generate", json={"parameters": {}})):
        assert error_of(r, 404, "not-found")["details"]["field"] == "name"
    await client.post("/templates", json={"name": "t", "content": "x"})
    assert (await client.delete("/templates/t")).json() == {"deleted": True, "name": "t"}
    error_of(await client.delete("/templates/t"), 404, "not-found")


async def test_legacy_template_aliases(client: Client) -> None:
    r = await client.post("/api/rhetor/templates", json={"name": "bug_report_analysis", "content": BUG_TEMPLATE,
                                                         "metadata": BUG_METADATA})
    assert r.status_code == 201
    assert [t["name"] for t in (await client.get("/api/rhetor/templates")).json()["templates"]] == [
        "bug_report_analysis"]
    legacy = (await client.get("/api/rhetor/templates/bug_report_analysis")).json()
    assert legacy == (await client.get("/templates/bug_report_analysis")).json()
    assert (await client.delete("/api/rhetor/templates/bug_report_analysis")).status_code == 200
    error_of(await client.get("/api/rhetor/templates/bug_report_analysis"), 404, "not-found")


# ---- prompts ----------------------------------------------------------------------------------------

async def add_prompt(client: Client, **fields: Any) -> dict[str, Any]:
    r = await client.post("/prompts", json={"component": "ergon", "content": "You are Ergon.", **fields})
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


async def test_one_default_prompt_per_component(client: Client) -> None:
    error_of(await client.get("/prompts/default/ergon"), 404, "not-found")
    a = await add_prompt(client, name="a", is_default=True, tags=["system"], description="first")
    b = await add_prompt(client, name="b", is_default=True)
    await add_prompt(client, component="hermes", name="h", is_default=True)
    assert a["is_default"] and a["tags"] == ["system"] and a["created"] is True and a["id"]
    assert (await client.get("/prompts/default/ergon")).json()["id"] == b["id"]
    listed = (await client.get("/prompts", params={"component": "ergon"})).json()["prompts"]
    assert [(p["name"], p["is_default"]) for p in listed] == [("a", False), ("b", True)]
    assert len((await client.get("/prompts")).json()["prompts"]) == 3
    assert (await client.get("/prompts/default/hermes")).json()["name"] == "h"
    assert (await client.get(f"/prompts/{a['id']}")).json()["is_default"] is False

    again = await add_prompt(client, name="a", content="You are Ergon, v2.", is_default=True)  # same name: replaced
    assert again["id"] == a["id"] and again["created"] is False
    assert (await client.get("/prompts/default/ergon")).json()["content"] == "You are Ergon, v2."

    assert (await client.delete(f"/prompts/{a['id']}")).json() == {"deleted": True, "id": a["id"]}
    for r in (await client.get(f"/prompts/{a['id']}"), await client.delete(f"/prompts/{a['id']}"),
              await client.get("/prompts/default/ergon")):
        error_of(r, 404, "not-found")


async def test_default_prompt_is_applied_by_message_unless_the_request_has_one(client: Client) -> None:
    await add_prompt(client, name="ergon System Prompt", is_default=True)

    def decision(body: dict[str, Any]) -> str:
        return str(next(t["decision"] for t in body["trace"] if t["id"] == "system_prompt"))

    with_component = (await client.post("/message", json={"message": "hi", "component": "ergon"})).json()
    assert decision(with_component) == "prompt 'ergon System Prompt'"
    own = (await client.post("/message", json={"message": "hi", "component": "ergon",
                                               "system_prompt": "Be terse."})).json()
    assert decision(own) == "request's own"
    other = (await client.post("/message", json={"message": "hi", "component": "hermes"})).json()
    assert decision(other) == "none"


async def test_generate_prompt_from_built_in_formats(client: Client) -> None:
    body = {"task": "Explain MyComponent's integration with Rhetor", "context": {"audience": "developers"},
            "format": "instruction"}
    r = await client.post("/prompts/generate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out == {"prompt": "Instruction: Explain MyComponent's integration with Rhetor\n\nContext:\n"
                             "- audience: developers\n\nFollow the instruction exactly and answer clearly and "
                             "completely.",
                   "format": "instruction", "template": "format:instruction"}
    assert (await client.post("/prompts/generate", json=body)).json() == out  # deterministic
    chat = (await client.post("/prompts/generate", json={"task": "hello", "format": "chat"})).json()
    assert chat["prompt"].startswith("hello\n\nReply") and "Context" not in chat["prompt"]
    formats = [f["format"] for f in (await client.get("/prompts/formats")).json()["formats"]]
    assert {"instruction", "chat", "few_shot"} <= set(formats)
    for fmt in formats:
        text = (await client.post("/prompts/generate", json={"task": "T1", "format": fmt})).json()["prompt"]
        assert "T1" in text
    error = error_of(await client.post("/prompts/generate", json={"task": "t", "format": "haiku"}), 400, "bad-request")
    assert error["details"]["field"] == "format" and error["details"]["formats"] == formats


# ---- contexts ---------------------------------------------------------------------------------------

async def test_contexts_list_read_delete(client: Client) -> None:
    for text in ("first question", "second question"):
        r = await client.post("/message", json={"message": text, "context_id": "ergon:s1"})
        assert r.status_code == 200, r.text
    await client.post("/message", json={"message": "other", "context_id": "hermes:s9"})

    listed = (await client.get("/contexts")).json()["contexts"]
    assert {c["id"] for c in listed} == {"ergon:s1", "hermes:s9"}
    ergon = (await client.get("/contexts", params={"component": "ergon"})).json()["contexts"]
    assert [(c["id"], c["component"], c["message_count"]) for c in ergon] == [("ergon:s1", "ergon", 4)]
    assert ergon[0]["tokens"] > 0 and ergon[0]["last_activity"]
    paged = (await client.get("/contexts", params={"limit": 1, "offset": 1})).json()
    assert len(paged["contexts"]) == 1 and (paged["limit"], paged["offset"]) == (1, 1)

    context = (await client.get("/contexts/ergon:s1")).json()
    assert (context["id"], context["component"], context["message_count"]) == ("ergon:s1", "ergon", 4)
    assert [(m["seq"], m["role"]) for m in context["messages"]] == [
        (1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]
    assert context["messages"][2]["content"] == "second question"
    assert all(m["tokens"] > 0 and m["created_at"] for m in context["messages"])
    assert context["summary"] is None and context["tokens"] == sum(m["tokens"] for m in context["messages"])
    assert (await client.get("/contexts/ergon%3As1")).json() == context  # URL-encoded colon

    assert (await client.delete("/contexts/ergon:s1")).json() == {"deleted": True, "id": "ergon:s1"}
    error = error_of(await client.get("/contexts/ergon:s1"), 404, "not-found")
    assert error["details"]["field"] == "context_id"
    error_of(await client.delete("/contexts/ergon:s1"), 404, "not-found")
    assert [c["id"] for c in (await client.get("/contexts")).json()["contexts"]] == ["hermes:s9"]


# ---- evaluation -------------------------------------------------------------------------------------

async def test_evaluate_offline_uses_the_heuristic_judge_deterministically(client: Client) -> None:
    body = {"prompt": "Explain how Rhetor routes requests by task type.",
            "response": "Rhetor routes each request by its task type to a chain of models. It falls back in order."}
    r = await client.post("/evaluate", json=body)
    assert r.status_code == 200, r.text
    evaluation = r.json()["evaluation"]
    assert set(evaluation) == {"overall_score", "scores", "feedback", "judge"}
    assert evaluation["judge"] == "heuristic"
    assert set(evaluation["scores"]) == {"accuracy", "clarity", "relevance"}
    assert all(0 <= s <= 10 for s in [evaluation["overall_score"], *evaluation["scores"].values()])
    assert evaluation["scores"]["accuracy"] == 5.0 and "Heuristic" in evaluation["feedback"]
    assert (await client.post("/evaluate", json=body)).json()["evaluation"] == evaluation

    custom = (await client.post("/evaluate", json={**body, "criteria": ["clarity", "conciseness"]})).json()
    assert set(custom["evaluation"]["scores"]) == {"clarity", "conciseness"}
    r = await client.post("/evaluate", json={**body, "pipeline": "nope"})
    assert error_of(r, 404, "unknown-pipeline")["details"]["field"] == "pipeline"
    r = await client.post("/evaluate", json={**body, "criteria": []})
    assert error_of(r, 400, "bad-request")["details"]["field"] == "criteria"


# ---- component-bound API keys -----------------------------------------------------------------------

async def test_a_component_key_sees_and_writes_only_its_component(ergon_client: Client, client: Client) -> None:
    c = ergon_client
    r = await c.post("/prompts", json={"name": "p", "content": "You are Ergon.", "is_default": True})
    assert r.status_code == 201 and r.json()["component"] == "ergon"
    r = await c.post("/prompts", json={"component": "hermes", "name": "p", "content": "x"})
    assert error_of(r, 403, "forbidden")["details"]["field"] == "component"
    error_of(await c.get("/prompts", params={"component": "hermes"}), 403, "forbidden")
    error_of(await c.get("/prompts/default/hermes"), 403, "forbidden")
    assert [p["component"] for p in (await c.get("/prompts")).json()["prompts"]] == ["ergon"]

    # Requests with this key are ergon's: its default prompt applies and its context is listed.
    body = (await c.post("/message", json={"message": "hi", "context_id": "ergon:s1"})).json()
    assert next(t["decision"] for t in body["trace"] if t["id"] == "system_prompt") == "prompt 'p'"
    await c.post("/message", json={"message": "hi", "context_id": "hermes:s1", "component": "ergon"})
    # hermes:s1 was created by an ergon request, so it is ergon's context.
    assert {x["id"] for x in (await c.get("/contexts")).json()["contexts"]} == {"ergon:s1", "hermes:s1"}
    error_of(await c.get("/contexts", params={"component": "hermes"}), 403, "forbidden")

    await c.post("/templates", json={"name": "t", "content": "Say {x}"})
    r = await c.post("/templates/t/generate", json={"parameters": {"x": "hi"}, "component": "hermes"})
    error_of(r, 403, "forbidden")
    r = await c.post("/templates/t/generate", json={"parameters": {"x": "hi"}, "context_id": "ergon:t"})
    assert r.status_code == 200 and (await c.get("/contexts/ergon:t")).json()["component"] == "ergon"
    error_of(await c.get("/templates/t", headers={"X-API-Key": "wrong"}), 401, "unauthorized")


async def test_other_components_contexts_and_prompts_are_invisible(ergon_client: Client) -> None:
    """Another component's records (made here through the store) read as 404 for an ergon key."""
    app = ergon_client.app
    storage = app.state.rhetor.engine.resources.storage
    from rhetor.storage import PromptRecord, StoredMessageIn

    await app.state.rhetor.engine.resources.ensure_started()
    await storage.contexts.append("hermes:s1", [StoredMessageIn("user", "hi", 1)])
    prompt = await storage.prompts.put(PromptRecord(id="", component="hermes", name="h", content="x"))
    for r in (await ergon_client.get("/contexts/hermes:s1"), await ergon_client.delete("/contexts/hermes:s1"),
              await ergon_client.get(f"/prompts/{prompt.id}"), await ergon_client.delete(f"/prompts/{prompt.id}")):
        error_of(r, 404, "not-found")
    assert (await ergon_client.get("/contexts")).json()["contexts"] == []
    assert await storage.contexts.load("hermes:s1") is not None and await storage.prompts.get(prompt.id) is not None
