"""Loading a configuration directory: raw YAML → ``*Spec`` models → cross-checked ``LoadedConfig``.

The flow, each step gathering every diagnostic rather than stopping at the first:

1. Find the files: ``providers.yaml``, ``tasks.yaml`` (or ``RHETOR_TASK_CONFIG``), ``budgets.yaml``,
   ``pipelines/*.yaml`` in the directory (``RHETOR_CONFIG_DIR``). A missing file falls back to the
   built-in default of the same name, so Rhetor starts with no config at all.
2. Parse each with source positions (``config.source``) and validate it against its Spec model.
3. Apply the environment overrides documented for existing components (budget policy and limits).
4. Check references across files (models → providers, tasks → models and pipelines, prices).
5. Hash every input (file texts and overrides) into the config version shown by ``/health``.

Pipelines are compiled afterwards by ``rhetor.engine.compile`` against this ``LoadedConfig``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from rhetor.config.diagnostics import Diagnostic, Path_, display_path, dotted, suggest, suggest_or_list
from rhetor.config.errors_map import pydantic_diagnostics
from rhetor.config.models import BudgetsFileSpec, PipelineSpec, ProvidersFileSpec, TasksFileSpec
from rhetor.config.source import SourceDoc, load_source, parse_source

__all__ = ["LoadedConfig", "default_config_dir", "load_config_files"]

M = TypeVar("M", bound=BaseModel)

_BUDGET_ENV = {
    "RHETOR_BUDGET_DAILY_LIMIT": "daily",
    "RHETOR_BUDGET_WEEKLY_LIMIT": "weekly",
    "RHETOR_BUDGET_MONTHLY_LIMIT": "monthly",
}
_POLICIES = ("ignore", "warn", "enforce", "downgrade")
_CONFIG_FILES = ("providers.yaml", "tasks.yaml", "budgets.yaml")


@dataclass(frozen=True)
class LoadedConfig:
    """Every file of a configuration, validated and cross-checked, with its source documents."""

    root: Path
    providers: ProvidersFileSpec
    tasks: TasksFileSpec
    budgets: BudgetsFileSpec
    pipelines: dict[str, PipelineSpec]
    docs: dict[str, SourceDoc]
    pipeline_docs: dict[str, SourceDoc]
    version: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The environment the config was loaded with (secrets resolve from it); never printed."""

    def chains_for_pipeline(self, pipeline: str) -> list[list[str]]:
        """Every model chain a request can be routed to in ``pipeline``.

        A request may name any pipeline explicitly, and routing then uses its task's chain: so every
        task chain (with its complexity variants and component overrides) counts for every pipeline.
        """
        chains: list[list[str]] = []
        for name, task in self.tasks.tasks.items():
            chains.append(list(task.chain))
            chains.extend(list(c) for c in task.by_complexity.values())
            for comp in self.tasks.components.values():
                if name in comp.tasks:
                    chains.append(list(comp.tasks[name]))
                elif comp.default_chain:
                    chains.append(list(comp.default_chain))
        return chains


def default_config_dir() -> Path:
    """The built-in default configuration shipped inside the package."""
    return Path(str(resources.files("rhetor") / "defaults"))


def _pick(root: Path, name: str) -> tuple[Path, str]:
    candidate = root / name
    if candidate.is_file():
        return candidate, display_path(candidate, root)
    builtin = default_config_dir() / name
    return builtin, f"<built-in>/{name}"


def _validate(doc: SourceDoc, model: type[M], diags: list[Diagnostic]) -> M | None:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        diags.extend(pydantic_diagnostics(exc, doc, model))
        return None


def _env_overrides(doc: SourceDoc, env: Mapping[str, str], diags: list[Diagnostic]) -> dict[str, str]:
    """Apply ``RHETOR_BUDGET_*`` to the parsed budgets document (before validation).

    Returns window → variable for every limit that came from the environment, so later checks blame
    the variable and not the file. A document that is not a mapping is left alone for validation to report.
    """
    if not isinstance(doc.data, dict):
        return {}
    data = doc.data
    policy = env.get("RHETOR_BUDGET_POLICY")
    if policy is not None:
        if policy not in _POLICIES:
            diags.append(Diagnostic("<env>", 1, 1, "bad-value",
                                    f"RHETOR_BUDGET_POLICY={policy!r} is not one of {', '.join(_POLICIES)}",
                                    hint=suggest(policy, _POLICIES)))
        else:
            data["policy"] = policy
    from_env: dict[str, str] = {}
    for var, window in _BUDGET_ENV.items():
        raw = env.get(var)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value < 0:
            diags.append(Diagnostic("<env>", 1, 1, "bad-value", f"{var}={raw!r} is not a number of USD >= 0",
                                    hint="0 means no limit"))
            continue
        limits = data.setdefault("limits", {})
        if isinstance(limits, dict):
            limits[window] = value
            from_env[window] = var
    return from_env


def _check_models(p: ProvidersFileSpec, pdoc: SourceDoc, diags: list[Diagnostic]) -> None:
    for name, model in p.models.items():
        if model.provider not in p.providers:
            diags.append(pdoc.diagnostic(("models", name, "provider"), "unknown-ref",
                                         f"unknown provider {model.provider!r}",
                                         hint=suggest(model.provider, p.providers)))
        if model.price is None:
            diags.append(pdoc.diagnostic(("models", name), "missing-price",
                                         f"model {name!r} states no price; write `price: {{input: 0, output: 0}}` "
                                         "if it is free", key=True))
    if p.default_model is not None and p.default_model not in p.models:
        diags.append(pdoc.diagnostic(("default_model",), "unknown-ref", f"unknown model {p.default_model!r}",
                                     hint=suggest(p.default_model, p.models)))


def _check_chain(chain: list[str], path: Path_, models: Mapping[str, Any], tdoc: SourceDoc,
                 diags: list[Diagnostic]) -> None:
    seen: set[str] = set()
    for i, ref in enumerate(chain):
        if ref not in models:
            diags.append(tdoc.diagnostic((*path, i), "unknown-ref", f"unknown model {ref!r}",
                                         hint=suggest_or_list(ref, models)))
        elif ref in seen:
            diags.append(tdoc.diagnostic((*path, i), "duplicate-id",
                                         f"model {ref!r} appears twice in one chain; each target is tried once"))
        seen.add(ref)


def _check_tasks(t: TasksFileSpec, models: Mapping[str, Any], tdoc: SourceDoc, pipelines: set[str],
                 broken: set[str], diags: list[Diagnostic]) -> None:
    if t.default_task not in t.tasks:
        diags.append(tdoc.diagnostic(("default_task",), "unknown-ref", f"unknown task type {t.default_task!r}",
                                     hint=suggest(t.default_task, t.tasks)))
    for name, task in t.tasks.items():
        _check_chain(task.chain, ("tasks", name, "chain"), models, tdoc, diags)
        for level, chain in task.by_complexity.items():
            _check_chain(chain, ("tasks", name, "by_complexity", level), models, tdoc, diags)
        if task.pipeline not in pipelines and task.pipeline not in broken:
            diags.append(tdoc.diagnostic(("tasks", name, "pipeline"), "unknown-ref",
                                         f"unknown pipeline {task.pipeline!r}",
                                         hint=suggest_or_list(task.pipeline, pipelines)))
    for comp, routing in t.components.items():
        for task_name, chain in routing.tasks.items():
            if task_name not in t.tasks:
                diags.append(tdoc.diagnostic(("components", comp, "tasks", task_name), "unknown-ref",
                                             f"unknown task type {task_name!r}",
                                             hint=suggest(task_name, t.tasks), key=True))
            _check_chain(chain, ("components", comp, "tasks", task_name), models, tdoc, diags)
        if routing.default_chain:
            _check_chain(routing.default_chain, ("components", comp, "default_chain"), models, tdoc, diags)


def _check_budgets(b: BudgetsFileSpec, doc: SourceDoc, from_env: Mapping[str, str],
                   diags: list[Diagnostic]) -> None:
    scopes: list[tuple[Path_, Any, Mapping[str, str]]] = [(("limits",), b.limits, from_env)]
    scopes += [(("components", name, "limits"), scope.limits, {}) for name, scope in b.components.items()]
    for path, lim, env_vars in scopes:
        pairs = [("daily", lim.daily, "weekly", lim.weekly), ("weekly", lim.weekly, "monthly", lim.monthly)]
        for small, sv, big, bv in pairs:
            if not (sv and bv and sv > bv):
                continue
            message = f"{small} limit {sv:g} is above the {big} limit {bv:g}"
            named = [f"{env_vars[w]}={lim_v:g}" for w, lim_v in ((small, sv), (big, bv)) if w in env_vars]
            if named:
                diags.append(Diagnostic("<env>", 1, 1, "bad-value", f"{message} (set by {', '.join(named)})",
                                        path=dotted((*path, small))))
            else:
                diags.append(doc.diagnostic((*path, small), "bad-value", message))


def _load_file_docs(root: Path, env: Mapping[str, str], digest: Any,
                    diags: list[Diagnostic]) -> tuple[dict[str, SourceDoc], dict[str, str]]:
    docs: dict[str, SourceDoc] = {}
    from_env: dict[str, str] = {}
    task_file = env.get("RHETOR_TASK_CONFIG")
    files = {"providers": _pick(root, "providers.yaml"), "budgets": _pick(root, "budgets.yaml")}
    if task_file:
        path = Path(task_file) if Path(task_file).is_absolute() else root / task_file
        files["tasks"] = (path, display_path(path, root))
    else:
        files["tasks"] = _pick(root, "tasks.yaml")
    for key, (path, shown) in files.items():
        doc, errs = load_source(path, shown)
        diags.extend(errs)
        if doc is not None and shown.startswith("<built-in>/") and _has_own_config(root):
            diags.append(doc.diagnostic((), "missing-file", f"no {path.name} in {root.name}/; this built-in one "
                                        "is used", severity="warning"))
        if doc is not None:
            docs[key] = doc
            digest.update(shown.encode() + b"\0" + doc.text.encode() + b"\0")
    if "budgets" in docs:
        from_env = _env_overrides(docs["budgets"], env, diags)
        for var in ("RHETOR_BUDGET_POLICY", *_BUDGET_ENV):
            if var in env:
                digest.update(f"{var}={env[var]}\0".encode())
    return docs, from_env


def _has_own_config(root: Path) -> bool:
    """Whether ``root`` holds configuration of its own (then a missing file is worth a warning)."""
    return any((root / n).is_file() for n in _CONFIG_FILES) or (root / "pipelines").is_dir()


def _pipeline_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def _load_pipelines(root: Path, digest: Any, diags: list[Diagnostic]
                    ) -> tuple[dict[str, PipelineSpec], dict[str, SourceDoc], set[str]]:
    """``pipelines/*.yaml`` (and ``*.yml``) of ``root``, or the built-in ones when it has none.

    Also returns the names of pipelines whose file exists but does not validate, so that references
    to them are not reported a second time as unknown.
    """
    pipe_files = _pipeline_files(root / "pipelines")
    builtin = not pipe_files
    if builtin:
        if (root / "pipelines").is_dir():
            diags.append(Diagnostic("pipelines", 1, 1, "missing-file",
                                    "pipelines/ has no *.yaml file; the built-in pipelines are used",
                                    severity="warning"))
        pipe_files = _pipeline_files(default_config_dir() / "pipelines")
    pipelines: dict[str, PipelineSpec] = {}
    pipeline_docs: dict[str, SourceDoc] = {}
    broken: set[str] = set()
    for path in pipe_files:
        shown = f"<built-in>/pipelines/{path.name}" if builtin else display_path(path, root)
        doc, errs = load_source(path, shown)
        diags.extend(errs)
        if doc is None:
            broken.add(path.stem)
            continue
        digest.update(shown.encode() + b"\0" + doc.text.encode() + b"\0")
        spec = _validate(doc, PipelineSpec, diags)
        if spec is None:
            name = doc.data.get("name") if isinstance(doc.data, dict) else None
            broken.add(name if isinstance(name, str) else path.stem)
            continue
        if spec.name in pipelines:
            diags.append(doc.diagnostic(("name",), "duplicate-id",
                                        f"pipeline {spec.name!r} is also defined in {pipeline_docs[spec.name].file}"))
            continue
        pipelines[spec.name] = spec
        pipeline_docs[spec.name] = doc
    return pipelines, pipeline_docs, broken


def load_config_files(root: Path, env: Mapping[str, str] | None = None
                      ) -> tuple[LoadedConfig | None, list[Diagnostic]]:
    """Load and cross-check the configuration in ``root``; returns it (or None) and every diagnostic."""
    env = dict(os.environ if env is None else env)
    root = root.resolve()
    diags: list[Diagnostic] = []
    digest = hashlib.sha256()
    docs, from_env = _load_file_docs(root, env, digest, diags)
    pipelines, pipeline_docs, broken = _load_pipelines(root, digest, diags)
    specs: dict[str, Any] = {}
    for key, model in (("providers", ProvidersFileSpec), ("tasks", TasksFileSpec), ("budgets", BudgetsFileSpec)):
        if key in docs:
            specs[key] = _validate(docs[key], model, diags)
    if any(specs.get(k) is None for k in ("providers", "tasks", "budgets")):
        return None, diags
    _check_models(specs["providers"], docs["providers"], diags)
    _check_tasks(specs["tasks"], specs["providers"].models, docs["tasks"], set(pipelines), broken, diags)
    _check_budgets(specs["budgets"], docs["budgets"], from_env, diags)
    loaded = LoadedConfig(
        root=root, providers=specs["providers"], tasks=specs["tasks"], budgets=specs["budgets"],
        pipelines=pipelines, docs=docs, pipeline_docs=pipeline_docs,
        version=digest.hexdigest()[:16], env=env,
    )
    return loaded, diags


def parse_pipeline_text(text: str, file: str = "<pipeline>"
                        ) -> tuple[PipelineSpec | None, SourceDoc | None, list[Diagnostic]]:
    """Parse one pipeline document from text (used by tests and tools)."""
    doc, diags = parse_source(text, file)
    if doc is None:
        return None, None, diags
    spec = _validate(doc, PipelineSpec, diags)
    return spec, doc, diags
