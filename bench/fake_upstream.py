"""A fake LLM upstream for benchmarks: OpenAI Chat Completions and Anthropic Messages, wire-faithful.

Raw asyncio (uvloop when importable) HTTP/1.1 with keep-alive and pipelining; no framework, so it is
never the bottleneck. Routes:

  POST /v1/chat/completions   OpenAI: JSON ``chat.completion``; with ``stream: true`` SSE
                              ``chat.completion.chunk`` events: a role chunk (content ""), N content
                              chunks, a finish chunk, the usage chunk (when ``stream_options.include_usage``)
                              and ``data: [DONE]``.
  POST /v1/messages           Anthropic: JSON ``message``; with ``stream: true`` the SSE event sequence
                              message_start, content_block_start, ping, N content_block_delta,
                              content_block_stop, message_delta (stop_reason, usage), message_stop.
  GET  /health                ``{"status": "ok"}``
  GET  /stats                 request counters by route (checks that the gateway really called us)

Behaviour per model id, so a gateway config can point several models at one upstream:
``gpt-bench;chunks=20;delay_ms=10`` streams 20 content chunks 10 ms apart. Defaults come from the
command line (``--chunks``, ``--delay-ms``). With delay 0 each event is still its own HTTP chunk and
write, and the server yields to the event loop between events, so chunks leave one at a time.

Usage: python bench/fake_upstream.py --port 18001 [--host 127.0.0.1] [--chunks 20] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time
from typing import Any

try:  # uvloop when installed (bench/.venv); plain asyncio otherwise
    import uvloop
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None

_ID_WIDTH = 16  # fixed width of the generated ids, so pre-encoded chunk sizes never change
_ID_MARK = b"@" * _ID_WIDTH
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}

STATS: dict[str, int] = {"openai_json": 0, "openai_stream": 0, "anthropic_json": 0, "anthropic_stream": 0,
                         "other": 0, "connections": 0}
_counter = itertools.count(1)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (Transfer-Encoding: chunked)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: int, content_type: bytes, extra: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s\r\n"
            % (status, _REASONS.get(status, b"OK"), content_type, framing, extra))


class Behaviour:
    """What a model id asks for: ``name;chunks=N;delay_ms=D``."""

    __slots__ = ("chunks", "delay_s", "words")

    def __init__(self, model: str, default_chunks: int, default_delay_ms: float) -> None:
        opts = dict(part.split("=", 1) for part in model.split(";")[1:] if "=" in part)
        self.chunks = max(1, int(opts.get("chunks", default_chunks)))
        self.delay_s = float(opts.get("delay_ms", default_delay_ms)) / 1000.0
        self.words = [f"tok{i} " for i in range(self.chunks)]


class Templates:
    """Pre-encoded responses per (api, model, stream options); the request id is patched in per request."""

    def __init__(self, default_chunks: int, default_delay_ms: float) -> None:
        self.default_chunks = default_chunks
        self.default_delay_ms = default_delay_ms
        self._cache: dict[tuple[Any, ...], tuple[Behaviour, list[bytes]]] = {}

    def get(self, key: tuple[Any, ...], model: str) -> tuple[Behaviour, list[bytes]]:
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 1000:
                self._cache.clear()
            b = Behaviour(model, self.default_chunks, self.default_delay_ms)
            hit = self._cache[key] = (b, getattr(self, "_build_" + key[0])(b, model, *key[2:]))
        return hit

    # -- OpenAI
    @staticmethod
    def _build_openai_stream(b: Behaviour, model: str, prompt: int, include_usage: bool) -> list[bytes]:
        cid, created = "chatcmpl-" + _ID_MARK.decode(), int(time.time())
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_bench"}
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _chunk(b"data: " + _dumps({**base, "choices": [choice], **extra}) + b"\n\n")

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": w}) for w in b.words]
        events.append(chunk({}, "stop"))
        if include_usage:
            usage = {"prompt_tokens": prompt, "completion_tokens": b.chunks, "total_tokens": prompt + b.chunks,
                     "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
            events.append(_chunk(b"data: " + _dumps({**base, "choices": [], "usage": usage}) + b"\n\n"))
        events.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        head = _head(200, b"text/event-stream; charset=utf-8", b"Cache-Control: no-cache\r\n"
                     b"x-request-id: req_" + _ID_MARK + b"\r\nopenai-processing-ms: 1\r\n", None)
        return [head, *events]

    @staticmethod
    def _build_openai_json(b: Behaviour, model: str, prompt: int) -> list[bytes]:
        body = _dumps({
            "id": "chatcmpl-" + _ID_MARK.decode(), "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(b.words), "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": b.chunks, "total_tokens": prompt + b.chunks,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_bench"})
        head = _head(200, b"application/json", b"x-request-id: req_" + _ID_MARK + b"\r\n", len(body))
        return [head + body]

    # -- Anthropic
    @staticmethod
    def _build_anthropic_stream(b: Behaviour, model: str, prompt: int) -> list[bytes]:
        def event(name: str, payload: dict[str, Any]) -> bytes:
            return _chunk(b"event: " + name.encode() + b"\ndata: " + _dumps(payload) + b"\n\n")

        usage = {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "output_tokens": 1, "service_tier": "standard"}
        message = {"id": "msg_" + _ID_MARK.decode(), "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
        events = [event("message_start", {"type": "message_start", "message": message}),
                  event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}}),
                  event("ping", {"type": "ping"})]
        events += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": w}}) for w in b.words]
        events += [event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                           "usage": {"output_tokens": b.chunks}}),
                   event("message_stop", {"type": "message_stop"}) + b"0\r\n\r\n"]
        head = _head(200, b"text/event-stream; charset=utf-8",
                     b"Cache-Control: no-cache\r\nrequest-id: req_" + _ID_MARK + b"\r\n", None)
        return [head, *events]

    @staticmethod
    def _build_anthropic_json(b: Behaviour, model: str, prompt: int) -> list[bytes]:
        body = _dumps({"id": "msg_" + _ID_MARK.decode(), "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": "".join(b.words)}], "stop_reason": "end_turn",
                       "stop_sequence": None,
                       "usage": {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0, "output_tokens": b.chunks,
                                 "service_tier": "standard"}})
        head = _head(200, b"application/json", b"request-id: req_" + _ID_MARK + b"\r\n", len(body))
        return [head + body]


def _simple(status: int, payload: Any, close: bool = False) -> bytes:
    body = _dumps(payload)
    return _head(status, b"application/json", b"Connection: close\r\n" if close else b"", len(body)) + body


def _prompt_tokens(messages: Any, system: Any = None) -> int:
    chars = len(system) if isinstance(system, str) else 0
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return max(1, chars // 4)


class Upstream(asyncio.Protocol):
    """One client connection: parse requests in order, answer each before the next (pipelining-safe)."""

    templates: Templates

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        STATS["connections"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while not self.closed:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._send(_simple(400, {"error": "header too large"}, close=True), close=True)
                return
            head = bytes(buf[:end])
            lower = head.lower()
            length = 0
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17:j if j >= 0 else len(lower)].strip() or 0)
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4:total])
            del buf[:total]
            line_end = head.find(b"\r\n")
            method, target = (head if line_end < 0 else head[:line_end]).split(b" ", 2)[:2]
            close = b"\r\nconnection: close" in lower
            work = self._handle(method, target.split(b"?", 1)[0], body, close)
            if work is not None:  # a stream: answer it before reading the next request
                self.busy = True
                task = asyncio.get_running_loop().create_task(work)
                task.add_done_callback(self._resume)
                return

    def _resume(self, task: asyncio.Task[None]) -> None:
        self.busy = False
        if not task.cancelled() and task.exception() is not None and self.transport is not None:
            self.transport.close()
            return
        if self.buf:
            self._process()

    def _send(self, data: bytes, close: bool = False) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if close:
            self.transport.close()
            self.closed = True

    def _handle(self, method: bytes, path: bytes, body: bytes, close: bool) -> Any:
        if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
            return self._generate("openai", body, close)
        if method == b"POST" and path in (b"/v1/messages", b"/messages"):
            return self._generate("anthropic", body, close)
        if method == b"GET" and path == b"/health":
            self._send(_simple(200, {"status": "ok"}, close), close)
        elif method == b"GET" and path == b"/stats":
            self._send(_simple(200, STATS, close), close)
        else:
            STATS["other"] += 1
            self._send(_simple(404, {"error": {"type": "not_found_error", "message": f"no route {path!r}"}},
                               close), close)
        return None

    def _generate(self, api: str, body: bytes, close: bool) -> Any:
        try:
            req = json.loads(body)
            model = str(req["model"])
        except (ValueError, KeyError, TypeError):
            error = {"error": {"message": "bad request body", "type": "invalid_request_error"}} if api == "openai" \
                else {"type": "error", "error": {"type": "invalid_request_error", "message": "bad request body"}}
            self._send(_simple(400, error, close), close)
            return None
        prompt = _prompt_tokens(req.get("messages"), req.get("system"))
        stream = bool(req.get("stream"))
        if api == "openai" and stream:
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            key: tuple[Any, ...] = ("openai_stream", model, prompt, include_usage)
        else:
            key = (f"{api}_{'stream' if stream else 'json'}", model, prompt)
        STATS[key[0]] += 1
        behaviour, parts = self.templates.get(key, model)
        rid = b"%0*d" % (_ID_WIDTH, next(_counter))
        if not stream:
            self._send(parts[0].replace(_ID_MARK, rid), close)
            return None
        return self._stream(parts, rid, behaviour, close)

    async def _stream(self, parts: list[bytes], rid: bytes, behaviour: Behaviour, close: bool) -> None:
        assert self.transport is not None
        write = self.transport.write
        write(parts[0].replace(_ID_MARK, rid))
        # parts: head, then OpenAI role chunk + contents..., or Anthropic start, block start, ping + deltas...
        first = 2 if parts[1].find(b"message_start") < 0 else 4  # index of the first content chunk
        paced = range(first + 1, first + behaviour.chunks) if behaviour.delay_s > 0 else range(0)
        loop = asyncio.get_running_loop()
        t_first = 0.0
        for n in range(1, len(parts)):
            if self.closed:
                return
            if n in paced:  # on a fixed schedule from the first content chunk, so delays never drift
                await asyncio.sleep(max(0.0, t_first + (n - first) * behaviour.delay_s - loop.time()))
            else:
                await asyncio.sleep(0)  # one event per loop turn: chunks leave one at a time
            if n == first:
                t_first = loop.time()
            write(parts[n].replace(_ID_MARK, rid))
        if close:
            self.transport.close()
            self.closed = True


async def serve(host: str, port: int, chunks: int, delay_ms: float) -> None:
    Upstream.templates = Templates(chunks, delay_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream on http://{host}:{port} ({'uvloop' if uvloop else 'asyncio'}; {chunks} chunks, "
          f"{delay_ms:g} ms apart)", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="pause between content chunks (default 0)")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("the fake upstream only listens on loopback")
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(serve(args.host, args.port, args.chunks, args.delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
