"""Graph checks of a pipeline: each a small pure function returning diagnostics.

The graph has one node per stage plus the ``request`` node, whose sockets are ``messages`` and
``options``. An edge runs from the stage (or ``request``) that produces an input to the stage that
consumes it. Checks: unique ids, known stage types, every input reference resolves to an existing
socket of a compatible type, every required input is connected, no cycles, every stage reachable from
the request, and the pipeline's output is a completion.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from rhetor.config.diagnostics import Diagnostic, suggest
from rhetor.config.models import PipelineSpec
from rhetor.config.source import SourceDoc
from rhetor.stages.base import Stage
from rhetor.types import Completion, Messages, RequestOptions

__all__ = ["REQUEST_NODE", "REQUEST_SOCKETS", "build_graph", "check_graph", "socket_types", "type_label"]

REQUEST_NODE = "request"
REQUEST_SOCKETS: Mapping[str, type] = {"messages": Messages, "options": RequestOptions}


def type_label(tp: type) -> str:
    return tp.__name__


def socket_types(spec: PipelineSpec, registry: Mapping[str, type[Stage]]) -> dict[str, Mapping[str, type]]:
    """Output sockets of every node whose type is known (the request included)."""
    out: dict[str, Mapping[str, type]] = {REQUEST_NODE: REQUEST_SOCKETS}
    for stage in spec.stages:
        cls = registry.get(stage.type)
        if cls is not None and stage.id not in out:
            out[stage.id] = cls.outputs
    return out


def check_ids(spec: PipelineSpec, doc: SourceDoc) -> list[Diagnostic]:
    seen: dict[str, int] = {}
    out = []
    for i, stage in enumerate(spec.stages):
        if stage.id == REQUEST_NODE:
            out.append(doc.diagnostic(("stages", i, "id"), "duplicate-id",
                                      f"{REQUEST_NODE!r} is reserved for the incoming request"))
        elif stage.id in seen:
            out.append(doc.diagnostic(("stages", i, "id"), "duplicate-id",
                                      f"stage id {stage.id!r} is already used by stages[{seen[stage.id]}]"))
        else:
            seen[stage.id] = i
    return out


def check_types(spec: PipelineSpec, doc: SourceDoc, registry: Mapping[str, type[Stage]]) -> list[Diagnostic]:
    out = []
    for i, stage in enumerate(spec.stages):
        if stage.type not in registry:
            hint = suggest(stage.type, registry) or "known types: " + ", ".join(sorted(registry))
            out.append(doc.diagnostic(("stages", i, "type"), "unknown-stage-type",
                                      f"unknown stage type {stage.type!r}", hint=hint))
    return out


def check_inputs(spec: PipelineSpec, doc: SourceDoc, registry: Mapping[str, type[Stage]]) -> list[Diagnostic]:
    """Every input names a declared socket, resolves to an output, and the types agree."""
    sockets = socket_types(spec, registry)
    known_nodes = {REQUEST_NODE, *(s.id for s in spec.stages)}
    out: list[Diagnostic] = []
    for i, stage in enumerate(spec.stages):
        cls = registry.get(stage.type)
        if cls is None:
            continue
        for name, ref in stage.inputs.items():
            path = ("stages", i, "inputs", name)
            if name not in cls.inputs:
                out.append(doc.diagnostic(path, "unknown-key", f"stage type {stage.type!r} has no input {name!r}",
                                          hint=suggest(name, cls.inputs) or "inputs: " + ", ".join(cls.inputs),
                                          key=True))
                continue
            node, _, socket = ref.partition(".")
            if node not in known_nodes:
                out.append(doc.diagnostic(path, "unknown-ref", f"no stage {node!r} (in {ref!r})",
                                          hint=suggest(node, known_nodes)))
                continue
            if node not in sockets:
                continue  # the producer's type is unknown; reported by check_types
            if socket not in sockets[node]:
                have = ", ".join(f"{s}: {type_label(t)}" for s, t in sockets[node].items())
                out.append(doc.diagnostic(path, "unknown-ref", f"{node!r} has no output {socket!r}",
                                          hint=suggest(socket, sockets[node]) or f"its outputs are {have}"))
                continue
            want, got = cls.inputs[name], sockets[node][socket]
            if not issubclass(got, want):
                fitting = [f"{n}.{s}" for n, outs in sockets.items() for s, t in outs.items()
                           if issubclass(t, want) and n != stage.id]
                hint = f"outputs of type {type_label(want)}: {', '.join(fitting)}" if fitting else None
                out.append(doc.diagnostic(path, "type-mismatch",
                                          f"input {stage.id}.{name} expects {type_label(want)} but {ref} "
                                          f"is {type_label(got)}", hint=hint))
        missing = [n for n in cls.inputs if n not in stage.inputs and n not in cls.optional_inputs]
        for name in missing:
            fitting = [f"{n}.{s}" for n, outs in sockets.items() for s, t in outs.items()
                       if issubclass(t, cls.inputs[name]) and n != stage.id]
            hint = f"connect it, e.g. `{name}: {fitting[0]}`" if fitting else None
            out.append(doc.diagnostic(("stages", i, "inputs") if stage.inputs else ("stages", i, "id"),
                                      "missing-input", key=True, message=(
                                          f"stage {stage.id!r} ({stage.type}) needs input {name!r} "
                                          f"of type {type_label(cls.inputs[name])}"), hint=hint))
    return out


def build_graph(spec: PipelineSpec) -> nx.DiGraph:
    """The DAG: nodes are stage ids plus ``request``; edges carry the socket names."""
    graph = nx.DiGraph()
    graph.add_node(REQUEST_NODE)
    stages = [s for s in spec.stages if s.id != REQUEST_NODE]  # a stage named 'request' is a duplicate-id
    ids = {s.id for s in stages}
    for stage in stages:
        graph.add_node(stage.id, type=stage.type)
    for stage in stages:
        for name, ref in stage.inputs.items():
            node, _, socket = ref.partition(".")
            if node in ids or node == REQUEST_NODE:
                if graph.has_edge(node, stage.id):
                    graph.edges[node, stage.id]["sockets"].append((socket, name))
                else:
                    graph.add_edge(node, stage.id, sockets=[(socket, name)])
    return graph


def check_graph(spec: PipelineSpec, doc: SourceDoc, graph: nx.DiGraph) -> list[Diagnostic]:
    """Cycles, stages unreachable from the request, and an output that is not a stage's completion."""
    index = {s.id: i for i, s in enumerate(spec.stages)}
    out: list[Diagnostic] = []
    in_cycle: set[str] = set()
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            members = sorted(component, key=lambda n: index.get(n, -1))
            in_cycle.update(members)
            loop = " → ".join([*members, members[0]])
            out.append(doc.diagnostic(("stages", index[members[0]], "inputs"), "cycle",
                                      f"stages form a cycle: {loop}",
                                      hint="a pipeline is a DAG; feed one of these from an earlier stage",
                                      key=True))
    reachable = nx.descendants(graph, REQUEST_NODE)
    for stage in spec.stages:
        if stage.id not in reachable and stage.id not in in_cycle and stage.id != REQUEST_NODE:
            why = "it has no inputs" if not stage.inputs else "none of its inputs comes from the request"
            out.append(doc.diagnostic(("stages", index[stage.id], "id"), "unreachable-stage",
                                      f"stage {stage.id!r} is not reachable from the request ({why})"))
    return out


def check_output(spec: PipelineSpec, doc: SourceDoc, registry: Mapping[str, type[Stage]]) -> list[Diagnostic]:
    node, _, socket = spec.output.partition(".")
    sockets = socket_types(spec, registry)
    known = [s.id for s in spec.stages]
    if node in known and node not in sockets:
        return []  # the stage exists but its type is unknown: reported once, by check_types
    if node not in sockets:
        return [doc.diagnostic(("output",), "unknown-ref", f"no stage {node!r} (in {spec.output!r})",
                               hint=suggest(node, known))]
    completions = [f"{n}.{s}" for n, outs in sockets.items() for s, t in outs.items() if issubclass(t, Completion)]
    fitting = f"outputs of type Completion: {', '.join(completions)}" if completions else None
    if socket not in sockets[node]:
        have = ", ".join(f"{s}: {type_label(t)}" for s, t in sockets[node].items())
        return [doc.diagnostic(("output",), "unknown-ref", f"{node!r} has no output {socket!r}",
                               hint=suggest(socket, sockets[node]) or f"its outputs are {have}")]
    if not issubclass(sockets[node][socket], Completion):
        return [doc.diagnostic(("output",), "type-mismatch",
                               f"the pipeline's output must be a Completion, {spec.output} is "
                               f"{type_label(sockets[node][socket])}", hint=fitting)]
    return []
