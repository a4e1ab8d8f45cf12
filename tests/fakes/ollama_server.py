"""Fake Ollama server: ``POST /api/chat``, JSON and NDJSON, as Ollama sends them.

Stream (``application/x-ndjson``): one JSON object per line, ``"done": false`` with
``message.content`` pieces, then a last ``"done": true`` line with an empty message, ``done_reason``
and the counts (``prompt_eval_count``, ``eval_count``) and durations in nanoseconds. Errors:
``{"error": "..."}`` with the HTTP status; inside a stream, an ``{"error": "..."}`` line.
"""

from __future__ import annotations

import json
from typing import Any

from ._http import FakeUpstream, Fault, Frame, RecordedRequest, Reply, apply_stream_faults

__all__ = ["FakeOllama"]

_ERRORS: dict[int, str] = {
    400: "invalid options",
    401: "unauthorized",
    404: "model \"{model}\" not found, try pulling it first",
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_CREATED = "2024-07-22T20:33:28.123648Z"


def _line(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


class FakeOllama(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.chunks = ["Hello", ", ", "world", "!"]
        self.prompt_eval_count = 26
        self.eval_count = 5
        self.done_reason = "stop"

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def _final(self, model: str, content: str) -> dict[str, Any]:
        return {"model": model, "created_at": _CREATED, "message": {"role": "assistant", "content": content},
                "done_reason": self.done_reason, "done": True, "total_duration": 4_883_583_458,
                "load_duration": 1_334_875, "prompt_eval_count": self.prompt_eval_count,
                "prompt_eval_duration": 342_546_000, "eval_count": self.eval_count,
                "eval_duration": 4_535_599_000}

    def reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        if request.method != "POST" or request.path != "/api/chat":
            return Reply(404, {"content-type": "text/plain"}, b"404 page not found")
        body = request.json
        if fault.status is not None:
            message = fault.message or _ERRORS.get(fault.status, "internal error").format(model=body.get("model"))
            return Reply(fault.status, {"content-type": "application/json; charset=utf-8"},
                         json.dumps({"error": message}).encode())
        model = body["model"]
        if body.get("stream", True):
            texts = [Frame(_line({"model": model, "created_at": _CREATED,
                                  "message": {"role": "assistant", "content": piece}, "done": False}))
                     for piece in self.chunks]
            frames = apply_stream_faults(
                self, [], texts, [Frame(_line(self._final(model, "")))], fault,
                malformed=b'{"model":"' + model.encode() + b'","message":{"role":"assis\n',
                error_event=_line({"error": fault.message or "an error was encountered while running the model"}))
            return Reply(200, {"content-type": "application/x-ndjson"}, frames=frames)
        return Reply(200, {"content-type": "application/json; charset=utf-8"},
                     json.dumps(self._final(model, self.text)).encode())
