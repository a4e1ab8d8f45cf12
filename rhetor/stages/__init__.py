"""The explicit registry of stage types: ``type:`` in pipeline YAML → stage class.

YAML never names import paths; a new stage type is added here, in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rhetor.stages.base import Stage
from rhetor.stages.budget import BudgetStage
from rhetor.stages.context import ContextLoadStage, ContextSaveStage
from rhetor.stages.evaluate import EvaluateStage
from rhetor.stages.generate import GenerateStage
from rhetor.stages.prune import PruneStage
from rhetor.stages.route import RouteStage
from rhetor.stages.system_prompt import SystemPromptStage

__all__ = ["REGISTRY", "Stage"]

REGISTRY: Mapping[str, type[Stage]] = MappingProxyType({
    cls.type_name: cls
    for cls in (RouteStage, SystemPromptStage, ContextLoadStage, PruneStage, BudgetStage, GenerateStage,
                EvaluateStage, ContextSaveStage)
})
