"""``rhetor`` command line: validate, run, explain, graph, serve, schema.

Exit codes: 0 success, 1 the configuration (or the request) is invalid or the run failed, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rhetor.config.diagnostics import Diagnostic
from rhetor.engine.engine import Engine, load_engine
from rhetor.engine.graph import REQUEST_NODE
from rhetor.errors import RhetorError
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

__all__ = ["main"]


def _config_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("RHETOR_CONFIG_DIR") or ".")


def _print_diagnostics(diags: list[Diagnostic], fmt: str) -> None:
    errors = [d for d in diags if d.severity == "error"]
    if fmt == "json":
        print(json.dumps({"ok": not errors, "diagnostics": [d.to_dict() for d in diags]}, indent=2))
        return
    for d in diags:
        print(d.render())
    warnings = len(diags) - len(errors)
    print(f"{len(errors)} error(s), {warnings} warning(s)")


def _load(args: argparse.Namespace) -> Engine | None:
    engine, diags = load_engine(_config_dir(args.config))
    if engine is None:
        _print_diagnostics(diags, "text")
    return engine


def cmd_validate(args: argparse.Namespace) -> int:
    engine, diags = load_engine(_config_dir(args.dir))
    if engine is None:
        _print_diagnostics(diags, args.format)
        return 1
    if args.format == "json":
        pipelines = {n: {"stages": list(p.stages), "worst_case": dataclasses.asdict(p.bounds)}
                     for n, p in engine.pipelines.items()}
        print(json.dumps({"ok": True, "version": engine.version, "pipelines": pipelines,
                          "diagnostics": [d.to_dict() for d in diags]}, indent=2))
        return 0
    for d in diags:
        print(d.render())
    print(f"config OK (version {engine.version}): {len(engine.pipelines)} pipeline(s)")
    for name, p in sorted(engine.pipelines.items()):
        b = p.bounds
        print(f"  {name}: {len(p.stages)} stages; worst case {b.attempts} attempts, "
              f"{b.latency_s:g} s, ${b.cost_usd:.4f}")
    return 0


def _request(args: argparse.Namespace, stream: bool = False) -> Request:
    options = RequestOptions(task_type=args.task_type, component=args.component, model=args.model,
                             provider=args.provider, stream=stream)
    return Request.from_text(args.message, options, request_id="cli")


def _print_trace(trace: Sequence[Any]) -> None:
    print("\ntrace:")
    for t in trace:
        timing = f" {t.duration_ms:.1f} ms" if t.status != "not-run" and t.duration_ms else ""
        print(f"  {t.id} ({t.type}) {t.status}{timing}: {t.decision}" + (f" — {t.why}" if t.why else ""))


async def _run(engine: Engine, args: argparse.Namespace) -> int:
    try:
        if args.stream:
            result = None
            async for item in engine.stream(_request(args, stream=True), args.pipeline):
                if isinstance(item, str):
                    sys.stdout.write(item)
                    sys.stdout.flush()
                else:
                    result = item
            print()
        else:
            result = await engine.run(_request(args), args.pipeline)
            print(result.completion.text)
        assert result is not None
        c = result.completion
        print(f"\nmodel: {c.model} ({c.provider}); tokens in {c.usage.input_tokens}, "
              f"out {c.usage.output_tokens}; cost ${c.cost_usd:.6f}")
        _print_trace(result.trace)
        return 0
    except RhetorError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        if getattr(exc, "trace", None):
            _print_trace(exc.trace)  # type: ignore[attr-defined]
        return 1
    finally:
        await engine.aclose()


def cmd_run(args: argparse.Namespace) -> int:
    """One real request: its spend is recorded in the same storage the server uses."""
    from rhetor.engine.resources import Resources

    resources = Resources.from_env()
    engine, diags = load_engine(_config_dir(args.config), resources=resources)
    if engine is None:
        _print_diagnostics(diags, "text")
        return 1

    async def go() -> int:
        try:
            return await _run(engine, args)
        finally:
            await resources.close()

    return asyncio.run(go())


def cmd_explain(args: argparse.Namespace) -> int:
    engine = _load(args)
    if engine is None:
        return 1
    try:
        explanation = engine.explain(_request(args), args.pipeline)
    except RhetorError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps({"pipeline": explanation.pipeline,
                          "stages": [t.to_dict(timings=False) for t in explanation.stages],
                          "budget": explanation.budget}, indent=2))
        return 0
    print(f"pipeline: {explanation.pipeline} (no provider is called)")
    for t in explanation.stages:
        print(f"  {t.id} ({t.type}): {t.decision or t.status}" + (f" — {t.why}" if t.why else ""))
    b = explanation.budget
    print(f"budget: policy {b['policy']}; limits " + json.dumps(b["limits"], sort_keys=True))
    return 0


def mermaid(engine: Engine, name: str) -> str:
    pipeline = engine.pipelines[name]
    lines = ["flowchart LR", f"  {REQUEST_NODE}([request])"]
    for sid, stage in pipeline.stages.items():
        lines.append(f'  {sid}["{sid}<br/><i>{stage.type}</i>"]')
    for src, dst, data in sorted(pipeline.graph.edges(data=True)):
        label = ", ".join(socket if socket == inp else f"{socket}→{inp}" for socket, inp in data["sockets"])
        lines.append(f"  {src} -- {label} --> {dst}")
    node, socket = pipeline.output
    lines += ["  output([answer])", f"  {node} -- {socket} --> output"]
    return "\n".join(lines)


def cmd_graph(args: argparse.Namespace) -> int:
    engine = _load(args)
    if engine is None:
        return 1
    if args.pipeline not in engine.pipelines:
        print(f"error: unknown pipeline {args.pipeline!r}; known: {', '.join(sorted(engine.pipelines))}",
              file=sys.stderr)
        return 1
    print(mermaid(engine, args.pipeline))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rhetor.server.run import serve  # imported here so other commands stay light

    port = args.port or int(os.environ.get("RHETOR_PORT") or 8300)
    return serve(_config_dir(args.config), host=args.host, port=port)


def cmd_schema(args: argparse.Namespace) -> int:
    from rhetor.config.schema import render_schemas, write_schemas
    from rhetor.stages import REGISTRY

    out = Path(args.out)
    if args.check:
        stale = [n for n, text in render_schemas(REGISTRY).items()
                 if not (out / n).is_file() or (out / n).read_text(encoding="utf-8") != text]
        for name in stale:
            print(f"{out / name}: stale; run `rhetor schema --out {out}`")
        return 1 if stale else 0
    for path in write_schemas(out, REGISTRY):
        print(f"wrote {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rhetor", description="Rhetor LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a configuration directory; exit 1 with every problem")
    p.add_argument("dir", nargs="?", help="config directory (default: RHETOR_CONFIG_DIR or .)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_validate)

    def request_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--message", "-m", required=True)
        p.add_argument("--task-type")
        p.add_argument("--component")
        p.add_argument("--model")
        p.add_argument("--provider")
        p.add_argument("--config", help="config directory (default: RHETOR_CONFIG_DIR or .)")

    p = sub.add_parser("run", help="run one request through a pipeline; print the answer and the trace")
    p.add_argument("pipeline", nargs="?", help="pipeline name (default: the task type's pipeline)")
    request_args(p)
    p.add_argument("--stream", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("explain", help="what a request would do, without calling any provider")
    p.add_argument("pipeline", nargs="?")
    request_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("graph", help="print a pipeline's DAG as Mermaid text")
    p.add_argument("pipeline")
    p.add_argument("--config")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("serve", help="serve HTTP, SSE and WebSocket on one port")
    p.add_argument("--port", type=int)
    p.add_argument("--host", default=os.environ.get("RHETOR_HOST", "0.0.0.0"))  # noqa: S104
    p.add_argument("--config")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("schema", help="write (or --check) the JSON Schemas of the config files")
    p.add_argument("--out", default="schemas")
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RhetorError as exc:  # e.g. an unusable RHETOR_DATABASE_URL, met before any command's own handling
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
