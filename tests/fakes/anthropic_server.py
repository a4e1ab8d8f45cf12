"""Fake Anthropic Messages API: ``POST /v1/messages``, JSON and SSE, as Anthropic sends them.

Stream: ``event: message_start`` (the message with empty content and the input usage),
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``) per chunk,
``content_block_stop``, ``message_delta`` (``stop_reason`` and cumulative ``usage.output_tokens``),
``message_stop``. Errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, with 529
for ``overloaded_error``; in a stream, an ``event: error`` with the same body. As API version
2026-10-21 (the SDK 2.x default, key sent as ``Authorization: Bearer``), sampling parameters such as
``temperature`` are refused with a 400.
"""

from __future__ import annotations

import json
from typing import Any

from ._http import FakeUpstream, Fault, Frame, RecordedRequest, Reply, apply_stream_faults

__all__ = ["CONTEXT_TOO_LONG", "FakeAnthropic"]

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\""),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("api_error", "Gateway timeout"),
    529: ("overloaded_error", "Overloaded"),
}
_SAMPLING = ("temperature", "top_p", "top_k")
CONTEXT_TOO_LONG = Fault(status=400, error_type="invalid_request_error",
                         message="prompt is too long: 208310 tokens > 200000 maximum")


def _event(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class FakeAnthropic(FakeUpstream):
    keepalive_frame = _event("ping", {"type": "ping"})

    def __init__(self) -> None:
        super().__init__()
        self.chunks = ["Hello", ", ", "world", "!"]
        self.input_tokens = 25
        self.output_tokens = 9
        self.cache_read_input_tokens = 11
        self.cache_creation_input_tokens = 3
        self.stop_reason = "end_turn"

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def _usage(self, output_tokens: int) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "cache_creation_input_tokens": self.cache_creation_input_tokens,
                "cache_read_input_tokens": self.cache_read_input_tokens, "output_tokens": output_tokens,
                "service_tier": "standard"}

    def _message(self, model: str, content: list[dict[str, Any]], stop: str | None, output: int) -> dict[str, Any]:
        return {"id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": self._usage(output)}

    def reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        if request.method != "POST" or request.path != "/v1/messages":
            return self._error(Fault(status=404, error_type="not_found_error", message="Not found"), request)
        if fault.status is not None:
            return self._error(fault, request)
        body = request.json
        for name in _SAMPLING:
            if name in body:  # API version 2026-10-21 has no sampling parameters
                return self._error(Fault(status=400, message=f"{name}: Extra inputs are not permitted"), request)
        headers = {"content-type": "application/json", "request-id": "req_fake",
                   "anthropic-organization-id": "org-fake"}
        if body.get("stream"):
            return self._stream(body["model"], fault, headers)
        message = self._message(body["model"], [{"type": "text", "text": self.text}], self.stop_reason,
                                self.output_tokens)
        return Reply(200, headers, json.dumps(message).encode())

    def _stream(self, model: str, fault: Fault, headers: dict[str, str]) -> Reply:
        preamble = [
            Frame(_event("message_start", {"type": "message_start",
                                           "message": self._message(model, [], None, 1)})),
            Frame(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}})),
            Frame(_event("ping", {"type": "ping"})),
        ]
        texts = [Frame(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                      "delta": {"type": "text_delta", "text": piece}}))
                 for piece in self.chunks]
        closing = [
            Frame(_event("content_block_stop", {"type": "content_block_stop", "index": 0})),
            Frame(_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                                           "usage": {"output_tokens": self.output_tokens}})),
            Frame(_event("message_stop", {"type": "message_stop"})),
        ]
        kind = fault.error_type or "overloaded_error"
        error = _event("error", {"type": "error", "error": {"type": kind, "message": fault.message or "Overloaded"}})
        malformed = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"ty\n\n'
        frames = apply_stream_faults(self, preamble, texts, closing, fault, malformed=malformed, error_event=error)
        return Reply(200, {**headers, "content-type": "text/event-stream; charset=utf-8",
                           "cache-control": "no-cache"}, frames=frames)

    def _error(self, fault: Fault, request: RecordedRequest) -> Reply:
        assert fault.status is not None
        kind, message = _ERRORS.get(fault.status, ("api_error", "Internal server error"))
        model = (json.loads(request.body) if request.body else {}).get("model", "")
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        body = {"type": "error",
                "error": {"type": fault.error_type or kind,
                          # a 401 echoes the key it got, so tests prove Rhetor never passes a key on
                          "message": fault.message or message.format(model=model)
                          + (f" ({key})" if key and fault.status == 401 else "")},
                "request_id": "req_fake"}
        return Reply(fault.status, {"content-type": "application/json", "request-id": "req_fake"},
                     json.dumps(body).encode())
