"""Schemathesis over the OpenAPI document at /schema: generated requests to every HTTP operation
never get a 5xx (malformed input must be a 4xx naming the problem)."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from rhetor.engine.engine import build_engine
from rhetor.server.app import create_app

REPO = Path(__file__).resolve().parents[2]

app = create_app(build_engine(REPO, env={}))
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
