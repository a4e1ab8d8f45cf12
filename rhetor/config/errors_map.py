"""Turning pydantic ``ValidationError``s into file:line diagnostics with stable codes and hints."""

from __future__ import annotations

import types
import typing
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from rhetor.config.diagnostics import Diagnostic, Path_, suggest
from rhetor.config.source import SourceDoc

__all__ = ["pydantic_diagnostics"]


def _unwrap(tp: Any) -> Any:
    """The model class inside Optional/Annotated/dict/list, following one container level per call."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is not type(None):
                return _unwrap(arg)
    return tp


def _model_at(model: type[BaseModel], loc: Path_) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``loc`` (None if not a model)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            by_alias = {f.alias or n: f for n, f in current.model_fields.items()}
            f = by_alias.get(part) if isinstance(part, str) else None
            if f is None:
                return None
            current = f.annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_names(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def pydantic_diagnostics(exc: ValidationError, doc: SourceDoc, model: type[BaseModel],
                         prefix: Path_ = ()) -> list[Diagnostic]:
    """One diagnostic per pydantic error, positioned in ``doc`` (``prefix`` is prepended to each loc)."""
    out: list[Diagnostic] = []
    for err in exc.errors(include_url=False):
        loc: Path_ = tuple(err["loc"])
        path = (*prefix, *loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = _field_names(parent)
            hint = suggest(str(loc[-1]), allowed)
            if hint is None and allowed:
                hint = "allowed keys: " + ", ".join(allowed)
            out.append(doc.diagnostic(path, "unknown-key", f"unknown key {loc[-1]!r}", hint=hint, key=True))
        elif kind == "missing":
            out.append(doc.diagnostic(path[:-1], "missing-field", f"missing required key {loc[-1]!r}", key=True))
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            got = type(err.get("input")).__name__.replace("NoneType", "nothing").replace("str", "a string")
            out.append(doc.diagnostic(path, "bad-value", f"expected a mapping of `key: value` pairs, got {got}"))
        elif kind == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
            out.append(doc.diagnostic(path, "bad-value", message, redact=loc[-1:] == ("api_key",)))
        else:
            hint = None
            expected = (err.get("ctx") or {}).get("expected")
            if kind == "literal_error" and isinstance(err.get("input"), str) and expected:
                hint = suggest(err["input"], [e.strip(" '") for e in expected.replace(" or ", ",").split(",")])
            out.append(doc.diagnostic(path, "bad-value", err["msg"], hint=hint))
    return out
