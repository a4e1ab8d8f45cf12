"""Templates, prompts and contexts through `rhetor serve` on SQLite: they survive a restart.

A real server (uvicorn) on the repository's own config with ``RHETOR_DATA_DIR`` in a temporary directory;
the offline ``simulated`` provider answers.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.serving import serve

REPO = Path(__file__).resolve().parents[2]


def test_content_survives_a_restart_on_sqlite(tmp_path: Path) -> None:
    env = {"RHETOR_DATA_DIR": str(tmp_path / "data")}
    served = serve(REPO, tmp_path / "log1.txt", env)
    try:
        with httpx.Client(base_url=served.base, timeout=10) as http:
            r = http.post("/templates", json={"name": "docs", "content": "Document {component} for {audience}.",
                                              "metadata": {"required_parameters": ["component"],
                                                           "optional_parameters": ["audience"]}})
            assert r.status_code == 201, r.text
            prompt = http.post("/prompts", json={"component": "ergon", "name": "sys", "content": "You are Ergon.",
                                                 "is_default": True}).json()
            r = http.post("/templates/docs/generate", json={"parameters": {"component": "Ergon"},
                                                            "context_id": "ergon:s1", "component": "ergon"})
            assert r.status_code == 200, r.text
            assert r.json()["rendered"] == "Document Ergon for ."
            trace = {t["id"]: t["decision"] for t in r.json()["trace"]}
            assert trace["system_prompt"] == "prompt 'sys'"
            assert 'You said: "Document Ergon for ."' in r.json()["message"]
    finally:
        served.stop()

    served = serve(REPO, tmp_path / "log2.txt", env)
    try:
        with httpx.Client(base_url=served.base, timeout=10) as http:
            assert http.get("/templates/docs").json()["metadata"]["required_parameters"] == ["component"]
            assert http.get("/prompts/default/ergon").json()["id"] == prompt["id"]
            context = http.get("/contexts/ergon%3As1").json()
            assert [m["role"] for m in context["messages"]] == ["user", "assistant"]
            assert [c["id"] for c in http.get("/contexts", params={"component": "ergon"}).json()["contexts"]] == [
                "ergon:s1"]
            assert http.delete("/contexts/ergon:s1").status_code == 200
            assert http.get("/contexts/ergon:s1").status_code == 404
            r = http.post("/evaluate", json={"prompt": "Say hello", "response": "Hello."})
            assert r.json()["evaluation"]["judge"] == "heuristic"
    finally:
        served.stop()
