"""``system_prompt``: put the component's system prompt in front of the request.

Precedence: the request's own ``system_prompt`` (or a system message it already has); else the
component's default prompt stored through ``POST /prompts`` (``is_default``) — the component named by
the request, else the prefix of its ``context_id`` (``ergon:s1`` → ergon); else this stage's ``default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rhetor.stages.base import BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.storage.content_records import component_of
from rhetor.types import Message, Messages, RequestOptions

__all__ = ["SystemPromptStage"]


class SystemPromptConfig(StageConfig):
    default: str | None = None
    """Used when the request gives none and its component has no stored default prompt."""


class SystemPromptStage(Stage):
    type_name = "system_prompt"
    Config = SystemPromptConfig
    inputs = {"messages": Messages, "options": RequestOptions}
    outputs = {"messages": Messages}

    def __init__(self, stage_id: str, config: SystemPromptConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: SystemPromptConfig = config
        self._resources = build.resources

    @staticmethod
    def _with(prompt: str, messages: Messages) -> Messages:
        return Messages((Message("system", prompt), *messages))

    def _own(self, messages: Messages, options: RequestOptions) -> StageResult | None:
        if any(m.role == "system" for m in messages):
            return StageResult({"messages": messages}, decision="request's own", why="the request has a system message")
        if options.system_prompt:
            return StageResult({"messages": self._with(options.system_prompt, messages)}, decision="request's own",
                               why="the request's system_prompt")
        return None

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        messages, options = inputs["messages"], inputs["options"]
        return self._own(messages, options) or StageResult(
            {"messages": messages}, decision="would use the component's default prompt",
            why=f"component={options.component}" if options.component else "no component")

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        messages: Messages = inputs["messages"]
        options: RequestOptions = inputs["options"]
        own = self._own(messages, options)
        if own is not None:
            return own
        component = options.component or (component_of(options.context_id) if options.context_id else None)
        if component and self._resources is not None:
            stored = await self._resources.storage.prompts.default_for(component)
            if stored is not None:
                return StageResult({"messages": self._with(stored.content, messages)},
                                   decision=f"prompt {stored.name!r}", why=f"default of component {component}")
        if self.config.default:
            return StageResult({"messages": self._with(self.config.default, messages)}, decision="pipeline default",
                               why="no stored default for this component")
        return StageResult({"messages": messages}, decision="none", why="no prompt given or stored")
