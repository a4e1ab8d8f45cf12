"""YAML documents that remember where every key and value came from.

``load_source`` parses a file once into plain Python data plus a ``SourceMap`` from key paths to
(line, column), so a problem found anywhere later (pydantic, cross-references, the graph) can point at
file:line:col. Only safe YAML is read: no tags that build Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rhetor.config.diagnostics import Diagnostic, Path_, caret_snippet, dotted

__all__ = ["SourceDoc", "load_source", "parse_source"]


@dataclass
class SourceDoc:
    """One parsed file: its data, its text and where each path starts."""

    file: str
    text: str
    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """(line, column) of ``path``; falls back to the closest ancestor that exists in the file.

        Segments that are not YAML keys (pydantic puts union tags into ``loc``) are skipped.
        """
        table = self.keys if key else self.values
        parts = list(path)
        while parts:
            pos = table.get(tuple(parts)) or self.values.get(tuple(parts))
            if pos:
                return pos
            # Try dropping an inner segment that is not a YAML key (e.g. a union tag).
            for i in range(len(parts) - 1, 0, -1):
                trial = tuple(parts[:i] + parts[i + 1 :])
                pos = table.get(trial) or self.values.get(trial)
                if pos:
                    return pos
            parts.pop()
        return self.values.get((), (1, 1))

    def diagnostic(
        self, path: Path_, code: str, message: str, *, hint: str | None = None, key: bool = False,
        severity: str = "error", redact: bool = False,
    ) -> Diagnostic:
        """A diagnostic at ``path``; ``redact`` hides the offending value in the snippet (secrets)."""
        line, col = self.position(path, key=key)
        text = self.text
        if redact:
            lines = text.splitlines()
            lines[line - 1] = lines[line - 1][: col - 1] + "<redacted>"
            text = "\n".join(lines)
        return Diagnostic(
            file=self.file, line=line, column=col, code=code, message=message, path=dotted(path),
            hint=hint, snippet=caret_snippet(text, line, col), severity=severity,
        )


def _walk(node: yaml.Node, path: Path_, doc: SourceDoc) -> None:
    doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            sub = (*path, key)
            doc.keys[sub] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, sub, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), doc)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one silently."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_source(text: str, file: str) -> tuple[SourceDoc | None, list[Diagnostic]]:
    """Parse ``text``; on a syntax error return no document and one ``yaml-syntax`` diagnostic."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        code = "duplicate-key" if "duplicate key" in str(exc.problem) else "yaml-syntax"
        message = str(exc.problem or exc).strip()
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        elif exc.context:
            message += f" ({exc.context})"
        if "mapping values are not allowed" in message or "could not find expected ':'" in message:
            message += "; check the indentation and that a space follows each ':'"
        return None, [Diagnostic(file, line, col, code, message, snippet=caret_snippet(text, line, col))]
    doc = SourceDoc(file=file, text=text, data=data if data is not None else {})
    if node is not None:
        _walk(node, (), doc)
    return doc, []


def load_source(path: Path, display: str) -> tuple[SourceDoc | None, list[Diagnostic]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(display, 1, 1, "unreadable-file", f"cannot read the file: {exc.strerror or exc}")]
    return parse_source(text, display)
