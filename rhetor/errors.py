"""Rhetor's error tree. Every error Rhetor raises on purpose is a ``RhetorError``.

Each class carries a stable kebab-case ``code`` (shown in CLI output and HTTP JSON bodies) and an
HTTP ``status``. Provider errors also say whether a retry may help (``retryable``)::

    RhetorError                         rhetor-error          500
    ├── ConfigError                     config-invalid        422  (holds every Diagnostic of a config)
    ├── RequestError                    bad-request           400  (a caller's input is wrong)
    │   ├── NotFoundError               not-found             404
    │   └── UnknownPipelineError        unknown-pipeline      404
    ├── BudgetExceededError             budget-exceeded       402
    ├── ProviderError                   provider-error        502  (mapped at each SDK's boundary)
    │   ├── ProviderUnavailableError    provider-unavailable  503  no key, unreachable base URL
    │   ├── AuthenticationError         provider-auth         502  not retryable
    │   ├── BadRequestError             provider-bad-request  502  not retryable
    │   │   └── ContextTooLongError     context-too-long      502  not retryable; pruning/fallback act on it
    │   ├── RateLimitError              rate-limited          429  retryable, carries retry_after
    │   ├── OverloadedError             provider-overloaded   503  retryable (5xx, 529)
    │   ├── ProviderTimeoutError        provider-timeout      504  retryable
    │   ├── ProviderConnectionError     provider-connection   502  retryable
    │   └── MidStreamError              mid-stream-error      502  the stream broke after chunks were sent
    ├── AllTargetsFailedError           all-targets-failed    502  every attempt of a chain failed
    └── PipelineRunError                pipeline-error        500  a stage broke its contract at run time

Provider errors never carry API keys: the provider boundary passes only the status, the vendor's error
body and a message built by Rhetor.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AllTargetsFailedError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ContextTooLongError",
    "MidStreamError",
    "NotFoundError",
    "OverloadedError",
    "PipelineRunError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RequestError",
    "RhetorError",
    "UnknownPipelineError",
    "error_type",
]


class RhetorError(Exception):
    """Root of every error Rhetor raises on purpose."""

    code = "rhetor-error"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON body used on every interface: ``{"error": {"code", "message", "details"}}``, plus
        OpenAI's ``type`` and ``param`` so OpenAI clients read the same body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details,
                          "type": error_type(self.status), "param": self.details.get("field")}}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return {401: "authentication_error", 402: "insufficient_quota", 403: "permission_error",
            429: "rate_limit_error"}.get(
        status, "invalid_request_error" if 400 <= status < 500 else "api_error")


class ConfigError(RhetorError):
    """A configuration that does not validate; ``diagnostics`` lists every problem, sorted."""

    code = "config-invalid"
    status = 422  # over HTTP only on a refused reload: the running config stays

    def __init__(self, diagnostics: list[Any]) -> None:
        self.diagnostics = sorted(diagnostics)
        lines = [d.one_line() for d in self.diagnostics]
        super().__init__(
            f"{len(lines)} problem(s) in the configuration:\n" + "\n".join(lines),
            details={"diagnostics": [d.to_dict() for d in self.diagnostics]},
        )


class RequestError(RhetorError):
    """The caller's request is wrong; ``field`` names the offending field when there is one."""

    code = "bad-request"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None) -> None:
        merged = dict(details or {})
        if field is not None:
            merged.setdefault("field", field)
        super().__init__(message, details=merged)
        self.field = field


class NotFoundError(RequestError):
    code = "not-found"
    status = 404


class UnknownPipelineError(NotFoundError):
    code = "unknown-pipeline"


class BudgetExceededError(RhetorError):
    code = "budget-exceeded"
    status = 402


class PipelineRunError(RhetorError):
    code = "pipeline-error"


class ProviderError(RhetorError):
    """An error from (or on the way to) an LLM provider, mapped at the SDK boundary."""

    code = "provider-error"
    status = 502
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        upstream_status: int | None = None,
        body: Any = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        merged = dict(details or {})
        merged.update({"provider": provider, "model": model, "upstream_status": upstream_status})
        if body is not None:
            merged["body"] = body
        merged["retryable"] = self.retryable
        super().__init__(message, details=merged)
        self.provider = provider
        self.model = model
        self.upstream_status = upstream_status
        self.body = body


class ProviderUnavailableError(ProviderError):
    code = "provider-unavailable"
    status = 503


class AuthenticationError(ProviderError):
    code = "provider-auth"


class BadRequestError(ProviderError):
    code = "provider-bad-request"


class ContextTooLongError(BadRequestError):
    code = "context-too-long"


class RateLimitError(ProviderError):
    code = "rate-limited"
    status = 429
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.details["retry_after"] = retry_after


class OverloadedError(ProviderError):
    code = "provider-overloaded"
    status = 503
    retryable = True


class ProviderTimeoutError(ProviderError):
    code = "provider-timeout"
    status = 504
    retryable = True


class ProviderConnectionError(ProviderError):
    code = "provider-connection"
    retryable = True


class MidStreamError(ProviderError):
    """A stream that broke after chunks were produced: carries the text and usage known so far."""

    code = "mid-stream-error"

    def __init__(self, message: str, *, partial_text: str = "", usage: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.partial_text = partial_text
        self.usage = usage
        self.details["partial_text"] = partial_text


class AllTargetsFailedError(RhetorError):
    """Every target of a chain failed; ``attempts`` lists each one (target, error class, status, message)."""

    code = "all-targets-failed"
    status = 502

    def __init__(self, attempts: list[dict[str, Any]]) -> None:
        summary = "; ".join(f"{a['model']}: {a['code']}" for a in attempts) or "no target was available"
        super().__init__(f"every target failed ({summary})", details={"attempts": attempts})
        self.attempts = attempts
