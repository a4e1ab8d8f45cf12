"""The JSON Schemas in schemas/ are generated from the models, current, and accept the repo's config."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from rhetor.config.schema import render_schemas
from rhetor.stages import REGISTRY

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"


def test_schemas_are_not_stale() -> None:
    for name, text in render_schemas(REGISTRY).items():
        on_disk = (SCHEMAS / name).read_text(encoding="utf-8")
        assert on_disk == text, f"schemas/{name} is stale: run `rhetor schema --out schemas`"


@pytest.mark.parametrize(("yaml_file", "schema"), [
    ("providers.yaml", "providers.schema.json"),
    ("tasks.yaml", "tasks.schema.json"),
    ("budgets.yaml", "budgets.schema.json"),
    ("pipelines/default.yaml", "pipeline.schema.json"),
])
def test_repo_config_validates_against_its_schema(yaml_file: str, schema: str) -> None:
    text = (REPO / yaml_file).read_text()
    first_line = text.splitlines()[0]
    assert first_line.startswith("# yaml-language-server: $schema=") and first_line.endswith(schema)
    jsonschema.validate(yaml.safe_load(text), json.loads((SCHEMAS / schema).read_text()))


def test_the_pipeline_schema_checks_each_stage_types_settings() -> None:
    schema = json.loads((SCHEMAS / "pipeline.schema.json").read_text())
    doc = yaml.safe_load((REPO / "pipelines/default.yaml").read_text())
    doc["stages"][1]["with"] = {"deadline_secs": 5}
    with pytest.raises(jsonschema.ValidationError, match="deadline_secs"):
        jsonschema.validate(doc, schema)
    doc["stages"][1]["with"] = {}
    doc["stages"][1]["type"] = "generat"
    with pytest.raises(jsonschema.ValidationError, match="generat"):
        jsonschema.validate(doc, schema)
