"""Fake OpenAI Chat Completions API: ``POST /v1/chat/completions``, JSON and SSE, as OpenAI sends them.

Stream: ``data: {chat.completion.chunk}\\n\\n`` frames (the first with ``delta.role``, then content deltas,
then one with ``finish_reason``); when the request sets ``stream_options.include_usage`` every chunk
carries ``"usage": null`` and one more chunk with ``"choices": []`` and the usage precedes
``data: [DONE]``. Errors: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Any

from ._http import FakeUpstream, Fault, Frame, RecordedRequest, Reply, apply_stream_faults

__all__ = ["FakeOpenAI"]

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid value for 'temperature'."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}. You can find your API "
          "key at https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not "
          "supported"),
    404: ("invalid_request_error", "model_not_found", "The model `{model}` does not exist or you do not have "
          "access to it."),
    422: ("invalid_request_error", None, "Unprocessable entity"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for {model} on requests per min (RPM): "
          "Limit 3, Used 3, Requested 1. Please try again in 20s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}
CONTEXT_TOO_LONG = Fault(status=400, error_type="invalid_request_error", error_code="context_length_exceeded",
                         message="This model's maximum context length is 8192 tokens. However, your messages "
                                 "resulted in 9000 tokens. Please reduce the length of the messages.")


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class FakeOpenAI(FakeUpstream):
    keepalive_frame = b": keep-alive\n\n"  # an SSE comment, as proxies and some servers send

    def __init__(self) -> None:
        super().__init__()
        self.chunks = ["Hello", ", ", "world", "!"]
        self.prompt_tokens = 42
        self.completion_tokens = 7
        self.cached_tokens = 10
        self.finish_reason = "stop"

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def _usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return self._error(404, Fault(status=404, message=f"Invalid URL ({request.method} {request.path})"),
                               request)
        if fault.status is not None:
            return self._error(fault.status, fault, request)
        body = request.json
        if body.get("stream"):
            return self._stream(body, fault)
        return Reply(200, {"content-type": "application/json", "x-request-id": "req_fake"},
                     json.dumps(self._completion(body["model"])).encode())

    def _completion(self, model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self._usage(), "service_tier": "default", "system_fingerprint": "fp_fake",
        }

    def _stream(self, body: dict[str, Any], fault: Fault) -> Reply:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        model = body["model"]

        def chunk(delta: dict[str, Any], finish: str | None = None, choices: bool = True) -> bytes:
            data: dict[str, Any] = {
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "service_tier": "default", "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
            }
            if include_usage:
                data["usage"] = None
            return _sse(data)

        preamble = [Frame(chunk({"role": "assistant", "content": "", "refusal": None}))]
        texts = [Frame(chunk({"content": piece})) for piece in self.chunks]
        closing = [Frame(chunk({}, self.finish_reason))]
        if include_usage:
            final = json.loads(chunk({}, choices=False)[6:])
            final["usage"] = self._usage()
            closing.append(Frame(_sse(final)))
        closing.append(Frame(b"data: [DONE]\n\n"))
        error = _sse({"error": {"message": fault.message or "The server had an error while processing your "
                                "request.", "type": fault.error_type or "server_error", "param": None,
                                "code": fault.error_code}})
        frames = apply_stream_faults(self, preamble, texts, closing, fault,
                                     malformed=b'data: {"id":"chatcmpl-fake","choices":[{"delta":{"content":"oo\n\n',
                                     error_event=error)
        return Reply(200, {"content-type": "text/event-stream; charset=utf-8", "x-request-id": "req_fake"},
                     frames=frames)

    def _error(self, status: int, fault: Fault, request: RecordedRequest) -> Reply:
        kind, code, message = _ERRORS.get(status, ("server_error", None, "Unexpected error."))
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        model = (json.loads(request.body) if request.body else {}).get("model", "")
        error = {"message": fault.message or message.format(key=key, model=model),
                 "type": fault.error_type or kind, "param": None, "code": fault.error_code or code}
        return Reply(status, {"content-type": "application/json; charset=utf-8", "x-request-id": "req_fake"},
                     json.dumps({"error": error}, indent=2).encode())
