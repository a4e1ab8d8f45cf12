"""JSON Schemas of the config files, generated from the Spec models (``rhetor schema``).

The pipeline schema lists the registered stage types and, per type, the schema of its ``with:`` block,
so editors catch a wrong stage setting as they type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rhetor.config.models import BudgetsFileSpec, PipelineSpec, ProvidersFileSpec, TasksFileSpec
from rhetor.stages.base import Stage

__all__ = ["SCHEMA_FILES", "render_schemas", "write_schemas"]

SCHEMA_FILES = {
    "providers.schema.json": ProvidersFileSpec,
    "tasks.schema.json": TasksFileSpec,
    "budgets.schema.json": BudgetsFileSpec,
    "pipeline.schema.json": PipelineSpec,
}


def _pipeline_schema(registry: Mapping[str, type[Stage]]) -> dict[str, Any]:
    schema = PipelineSpec.model_json_schema(by_alias=True)
    stage = schema["$defs"]["StageSpec"]
    stage["properties"]["type"]["enum"] = sorted(registry)
    branches = []
    for name, cls in sorted(registry.items()):
        with_schema = cls.Config.model_json_schema()
        for key, sub in with_schema.pop("$defs", {}).items():
            schema["$defs"][key] = sub
        branches.append({
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"properties": {"with": with_schema,
                                    "inputs": {"type": "object", "propertyNames": {"enum": sorted(cls.inputs)}}}},
        })
    stage["allOf"] = branches
    return schema


def render_schemas(registry: Mapping[str, type[Stage]]) -> dict[str, str]:
    """File name → JSON text (stable: sorted keys, trailing newline)."""
    out = {}
    for name, model in SCHEMA_FILES.items():
        schema = _pipeline_schema(registry) if model is PipelineSpec else model.model_json_schema(by_alias=True)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        out[name] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def write_schemas(directory: Path, registry: Mapping[str, type[Stage]]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas(registry).items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
