"""Prompt templates with named variables in the seeds' syntax: ``{variable}``.

Rendering is plain substitution: a template never evaluates code, attribute access or format specs
(``{x.__class__}`` or ``{x!r}`` are not variables, they are refused when the template is created).
``{{`` and ``}}`` write literal braces. Required variables missing from a render are one error naming
all of them; optional ones take their default (empty when none is declared).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rhetor.errors import RequestError

__all__ = ["TemplateDef", "parse_variables", "render"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_variables(content: str) -> list[str]:
    """The variable names of ``content`` in order of first use; raises on anything but plain names."""
    names: list[str] = []
    for match in _TOKEN.finditer(content):
        inner = match.group(1)
        if inner is None:
            continue
        if not _NAME.match(inner):
            raise RequestError(f"{{{inner}}} is not a variable: use {{name}} with letters, digits and _ "
                               "(write {{ and }} for literal braces)", field="content")
        if inner not in names:
            names.append(inner)
    stray = _TOKEN.sub("", content)
    if "{" in stray or "}" in stray:
        raise RequestError("unbalanced brace in the template (write {{ and }} for literal braces)", field="content")
    return names


@dataclass(frozen=True)
class TemplateDef:
    """A template: its text, which variables it needs, and their defaults."""

    name: str
    content: str
    required: tuple[str, ...] = ()
    optional: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, content: str, *, required: list[str] | None = None,
               optional: Mapping[str, str] | list[str] | None = None, description: str = "",
               metadata: Mapping[str, Any] | None = None) -> TemplateDef:
        """Validate and build a template; undeclared variables are required."""
        used = parse_variables(content)
        opt = dict.fromkeys(optional, "") if isinstance(optional, list) else dict(optional or {})
        req = list(required or [])
        unknown = [v for v in [*req, *opt] if v not in used]
        if unknown:
            raise RequestError(f"declared variables not used in the template: {', '.join(unknown)}",
                               field="variables", details={"unused": unknown})
        req += [v for v in used if v not in req and v not in opt]
        return cls(name=name, content=content, required=tuple(req), optional=opt, description=description,
                   metadata=dict(metadata or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "content": self.content, "description": self.description,
                "variables": {"required": list(self.required), "optional": dict(self.optional)},
                "metadata": dict(self.metadata)}


def render(template: TemplateDef, values: Mapping[str, Any]) -> str:
    """``template`` with every ``{name}`` replaced by ``values[name]`` (as text)."""
    missing = [v for v in template.required if v not in values or values[v] is None]
    if missing:
        raise RequestError(f"template {template.name!r} needs {', '.join(repr(m) for m in missing)}",
                           field="variables", details={"missing": missing, "template": template.name})
    merged = {**template.optional, **{k: v for k, v in values.items() if v is not None}}

    def substitute(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece in ("{{", "}}"):
            return piece[0]
        return str(merged.get(match.group(1), ""))

    return _TOKEN.sub(substitute, template.content)
