"""Streaming load generator: SSE over HTTP/1.1 keep-alive and Rhetor's ``/ws`` WebSocket protocol.

Raw asyncio sockets (uvloop when importable), no HTTP library: C connections each run streams back to
back for a warm-up, then for a measured window; streams that complete inside the window are counted
(and their latencies kept), as wrk counts requests. Prints one JSON object: streams/s, time to first
token (first non-empty content chunk, measured from just before the request is written), stream
duration, chunks per stream, errors, the CPU used by this process and by the ``--cpu-pid`` processes
over the window, and each core's busy share (/proc/stat).

  sse   POST ``--body`` to ``--url``; ``--kind rhetor`` reads ``/stream``'s ``{"chunk", "done"}`` events,
        ``--kind openai`` reads OpenAI ``chat.completion.chunk`` events up to ``data: [DONE]`` (the
        gateway's ``/v1/chat/completions`` and the fake upstream alike), ``--kind anthropic`` the
        Messages API events up to ``message_stop`` (the fake upstream's ``/v1/messages``).
  ws    ``/ws`` LLM_REQUEST with ``streaming: true`` → UPDATE ``payload.chunk`` … RESPONSE. Exit code 3 and
        ``{"available": false}`` when the handshake is refused with 404.

``--gaps-ms G`` records every chunk's arrival time and reports how far arrivals stray from a schedule
of one chunk every G ms (the chunk-forwarding check: a buffering hop collapses the gaps).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

CLK_TCK = os.sysconf("SC_CLK_TCK")


class StreamError(Exception):
    pass


class NotAvailable(Exception):
    pass


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_ticks() -> dict[str, tuple[int, int]]:
    """Per core: (busy ticks, total ticks) from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                idle = v[3] + v[4]
                out[name[3:]] = (sum(v) - idle, sum(v))
    return out


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Sample:
    started: float
    ttft: float
    total: float
    chunks: int
    gaps: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- HTTP


async def read_head(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head[9:12]), head.lower()


async def http_chunks(reader: asyncio.StreamReader, head: bytes):  # noqa: ANN201 - async generator of bytes
    """The body of a response, piece by piece (chunked or Content-Length)."""
    if b"transfer-encoding: chunked" in head:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    else:
        i = head.find(b"content-length:")
        if i >= 0:
            length = int(head[i + 15:head.find(b"\r\n", i)])
            yield await reader.readexactly(length)


def is_token(event: bytes, kind: str) -> bool:
    """Whether an SSE event carries a non-empty piece of text."""
    if kind == "rhetor":
        return b'"chunk":"' in event and b'"chunk":""' not in event
    if kind == "anthropic":
        return b'"type":"text_delta","text":"' in event and b'"text":""' not in event
    return b'"content":"' in event and b'"content":""' not in event


async def sse_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, kind: str,
                     record_gaps: bool) -> Sample:
    t0 = time.perf_counter()
    writer.write(request)
    status, head = await read_head(reader)
    if status != 200:
        async for _ in http_chunks(reader, head):
            pass
        raise StreamError(f"HTTP {status}")
    ttft = None
    chunks = 0
    gaps: list[float] = []
    buf = b""
    last = b""
    async for piece in http_chunks(reader, head):
        buf += piece
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event, buf = buf[:end], buf[end + 2:]
            if is_token(event, kind):
                now = time.perf_counter()
                chunks += 1
                if ttft is None:
                    ttft = now - t0
                if record_gaps:
                    gaps.append(now)
            last = event
    total = time.perf_counter() - t0
    if kind == "rhetor":
        if b'"done":true' not in last or b'"error"' in last:
            raise StreamError(f"stream did not end cleanly: {last[:300]!r}")
    elif kind == "anthropic":
        if not last.startswith(b"event: message_stop"):
            raise StreamError(f"stream did not end with message_stop: {last[:300]!r}")
    elif last.strip() != b"data: [DONE]":
        raise StreamError(f"stream did not end with [DONE]: {last[:300]!r}")
    if ttft is None:
        raise StreamError("no content chunk")
    return Sample(t0, ttft, total, chunks, gaps)


def http_request(url: str, body: bytes) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    req = (f"POST {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
           f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    return host, port, req


# ------------------------------------------------------------------------------------------ WebSocket


def ws_frame(text: str) -> bytes:
    """A masked client text frame."""
    data = text.encode()
    n = len(data)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    reps = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(data, "big") ^ int.from_bytes(reps, "big")).to_bytes(n, "big") if n else b""
    return head + mask + masked


class WsClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> WsClient:
        u = urlsplit(url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        status, head = await read_head(reader)
        if status != 101:
            writer.close()
            if status == 404:
                raise NotAvailable(f"{u.path} answered HTTP 404")
            raise StreamError(f"WebSocket handshake answered HTTP {status}")
        return cls(reader, writer)

    def send(self, text: str) -> None:
        self.writer.write(ws_frame(text))

    async def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            if b1 & 0x80:  # a masked server frame (not expected)
                mask = await self.reader.readexactly(4)
                raw = await self.reader.readexactly(n)
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
            else:
                data = await self.reader.readexactly(n) if n else b""
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping → pong
                self.writer.write(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise StreamError("the server closed the WebSocket")
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self.writer.write(bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
            self.writer.close()
        except (OSError, RuntimeError):
            pass


async def ws_stream(ws: WsClient, msg_id: str, payload: dict[str, Any], record_gaps: bool) -> Sample:
    request = json.dumps({"type": "LLM_REQUEST", "id": msg_id, "source": "bench", "payload": payload})
    t0 = time.perf_counter()
    ws.send(request)
    ttft = None
    chunks = 0
    gaps: list[float] = []
    while True:
        msg = json.loads(await ws.recv())
        if msg.get("id") != msg_id:
            continue  # e.g. the previous request's final "typing: false"
        kind = msg.get("type")
        p = msg.get("payload") or {}
        if kind == "UPDATE" and p.get("chunk"):
            now = time.perf_counter()
            chunks += 1
            if ttft is None:
                ttft = now - t0
            if record_gaps:
                gaps.append(now)
        elif kind == "RESPONSE":
            if ttft is None:
                raise StreamError("RESPONSE before any chunk")
            return Sample(t0, ttft, time.perf_counter() - t0, chunks, gaps)
        elif kind == "ERROR":
            raise StreamError(f"ERROR {p.get('code')}: {p.get('message')}")


# ------------------------------------------------------------------------------------------------ run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: list[Sample] = []
    errors: list[str] = []
    t_start = time.perf_counter()
    t_measure = t_start + args.warmup
    t_end = t_measure + args.duration
    limit = args.count or 0
    record = args.gaps_ms is not None
    cpu_marks: dict[str, Any] = {}

    def mark(name: str) -> None:
        cpu_marks[name] = (time.perf_counter(), self_cpu(), {p: cpu_seconds(p) for p in args.cpu_pid}, core_ticks())

    async def mark_at(when: float, name: str) -> None:
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        mark(name)

    def keep_going() -> bool:
        now = time.perf_counter()
        return now < t_end and not (limit and len(samples) >= limit)

    def take(s: Sample) -> None:  # streams that complete inside the window (like wrk's requests)
        if t_measure <= s.started + s.total <= t_end and not (limit and len(samples) >= limit):
            samples.append(s)

    async def sse_worker(i: int) -> None:
        host, port, request = http_request(args.url, args.body.encode())
        reader = writer = None
        while keep_going():
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
                take(await sse_stream(reader, writer, request, args.kind, record))
            except (StreamError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if time.perf_counter() >= t_measure:
                    errors.append(f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    async def ws_worker(i: int) -> None:
        payload = json.loads(args.body)
        ws = None
        n = 0
        while keep_going():
            try:
                if ws is None:
                    ws = await WsClient.connect(args.url)
                n += 1
                take(await ws_stream(ws, f"bench-{i}-{n}", payload, record))
            except (StreamError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if time.perf_counter() >= t_measure:
                    errors.append(f"{type(exc).__name__}: {exc}")
                if ws is not None:
                    ws.close()
                ws = None
                await asyncio.sleep(0.01)
        if ws is not None:
            ws.close()

    if args.mode == "ws":  # probe first: a 404 means /ws is not there (yet)
        try:
            probe = await WsClient.connect(args.url)
            probe.close()
        except NotAvailable as exc:
            return {"available": False, "reason": str(exc)}
    worker = sse_worker if args.mode == "sse" else ws_worker
    mark("start")
    markers = [asyncio.create_task(mark_at(t_measure, "measure")), asyncio.create_task(mark_at(t_end, "end"))]
    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    if "end" not in cpu_marks:  # a count-limited run that finished early
        markers[1].cancel()
        mark("end")
    if "measure" not in cpu_marks:
        markers[0].cancel()
        mark("measure")
    return summarise(args, samples, errors, cpu_marks)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarise(args: argparse.Namespace, samples: list[Sample], errors: list[str],
              marks: dict[str, Any]) -> dict[str, Any]:
    (w0, c0, p0, k0), (w1, c1, p1, k1) = marks["measure"], marks["end"]
    wall = max(w1 - w0, 1e-9)
    ttft = [s.ttft * 1000 for s in samples]
    total = [s.total * 1000 for s in samples]
    out: dict[str, Any] = {
        "available": True, "mode": args.mode, "url": args.url, "concurrency": args.concurrency,
        "window_s": round(wall, 3), "streams": len(samples), "streams_per_s": len(samples) / wall,
        "errors": len(errors), "error_examples": sorted(set(errors))[:5],
        "ttft_ms": {"p50": pct(ttft, 50), "p90": pct(ttft, 90), "p99": pct(ttft, 99),
                    "mean": statistics.fmean(ttft) if ttft else None},
        "total_ms": {"p50": pct(total, 50), "p99": pct(total, 99)},
        "chunks_per_stream": statistics.fmean(s.chunks for s in samples) if samples else 0,
        "loadgen_cpu_s": c1 - c0,
        "cpu_s": {str(p): p1[p] - p0[p] for p in p1},
        "cores": {c: (k1[c][0] - k0[c][0]) / max(1, k1[c][1] - k0[c][1]) for c in k1 if c in k0},
    }
    if args.gaps_ms is not None and samples:
        gap = args.gaps_ms / 1000.0
        spreads, lags, separate = [], [], []
        for s in samples:
            rel = [t - s.gaps[0] for t in s.gaps]
            spreads.append(rel[-1] * 1000)
            lags.append(max(abs(r - i * gap) for i, r in enumerate(rel)) * 1000)
            separate.append(sum(1 for a, b in zip(rel, rel[1:], strict=False) if b - a >= gap / 2))
        out["gaps"] = {"expected_gap_ms": args.gaps_ms, "chunks": samples[0].chunks,
                       "spread_ms_p50": pct(spreads, 50), "max_lag_ms_p50": pct(lags, 50),
                       "max_lag_ms_max": max(lags), "separate_arrivals_min": min(separate),
                       "expected_separate": samples[0].chunks - 1}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("sse", "ws"))
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, help="JSON request body (sse) or LLM_REQUEST payload (ws)")
    p.add_argument("--kind", choices=("rhetor", "openai", "anthropic"), default="rhetor", help="SSE event format")
    p.add_argument("--concurrency", "-c", type=int, default=1)
    p.add_argument("--duration", "-d", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before the measured window")
    p.add_argument("--count", type=int, default=0, help="stop after this many measured streams")
    p.add_argument("--gaps-ms", type=float, default=None, help="record chunk arrival vs this pacing")
    p.add_argument("--cpu-pid", type=int, action="append", default=[], help="also report this process's CPU")
    args = p.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback URLs only")
    runner = uvloop.run if uvloop is not None else asyncio.run
    result = runner(run(args))
    print(json.dumps(result))
    return 0 if result.get("available") else 3


if __name__ == "__main__":
    sys.exit(main())
