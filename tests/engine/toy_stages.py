"""Toy stage types for graph-shape tests: they record when they ran and pass text along."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from rhetor.stages.base import RunContext, Stage, StageConfig, StageResult
from rhetor.types import Completion, Messages, Usage


class Text(str):
    """A socket type distinct from the built-in ones."""


class Number(int):
    """Another socket type, to provoke type mismatches."""


class SleepConfig(StageConfig):
    seconds: float = 0.0
    suffix: str = ""


class Source(Stage):
    """messages → text: the last message's content."""

    type_name = "source"
    Config = SleepConfig
    inputs = {"messages": Messages}
    outputs = {"text": Text}

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        ctx.notes.setdefault("log", []).append((self.id, "start", time.perf_counter()))
        await asyncio.sleep(self.config.seconds)
        ctx.notes["log"].append((self.id, "end", time.perf_counter()))
        return StageResult({"text": Text(inputs["messages"][-1].content + self.config.suffix)}, decision=self.id)


class Step(Stage):
    """text → text with a suffix, after sleeping."""

    type_name = "step"
    Config = SleepConfig
    inputs = {"text": Text}
    outputs = {"text": Text}

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        ctx.notes.setdefault("log", []).append((self.id, "start", time.perf_counter()))
        await asyncio.sleep(self.config.seconds)
        ctx.notes["log"].append((self.id, "end", time.perf_counter()))
        return StageResult({"text": Text(inputs["text"] + self.config.suffix)}, decision=self.id)


class Join(Stage):
    """two texts → one completion."""

    type_name = "join"
    inputs = {"left": Text, "right": Text}
    outputs = {"completion": Completion}

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        text = f"{inputs['left']}|{inputs['right']}"
        completion = Completion(text=text, model="toy", model_id="toy", provider="toy", usage=Usage(), cost_usd=0.0)
        return StageResult({"completion": completion}, decision="joined")


class Finish(Stage):
    """one text → a completion."""

    type_name = "finish"
    inputs = {"text": Text}
    outputs = {"completion": Completion}

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        completion = Completion(text=str(inputs["text"]), model="toy", model_id="toy", provider="toy",
                                usage=Usage(), cost_usd=0.0)
        return StageResult({"completion": completion}, decision="finished")


class Count(Stage):
    """text → number (a socket of another type)."""

    type_name = "count"
    inputs = {"text": Text}
    outputs = {"number": Number}

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        return StageResult({"number": Number(len(inputs["text"]))})


class Quick(Stage):
    """text → text with a suffix, never waiting (``waits = False``); records the task it ran in."""

    type_name = "quick"
    Config = SleepConfig
    inputs = {"text": Text}
    outputs = {"text": Text}
    waits = False

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        ctx.notes.setdefault("tasks", {})[self.id] = asyncio.current_task()
        return StageResult({"text": Text(inputs["text"] + self.config.suffix)}, decision=self.id)


class Broken(Stage):
    """Returns an output it did not declare: the runner must refuse it."""

    type_name = "broken"
    inputs = {"text": Text}
    outputs = {"text": Text}

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        return StageResult({"other": 1})


TOY_REGISTRY: Mapping[str, type[Stage]] = {
    cls.type_name: cls for cls in (Source, Step, Join, Finish, Count, Quick, Broken)
}
