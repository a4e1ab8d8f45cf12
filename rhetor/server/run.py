"""``rhetor serve``: load and compile the configuration, then serve it with uvicorn on one port."""

from __future__ import annotations

import copy
import gc
import logging
import logging.handlers
import os
import queue
import sys
from pathlib import Path

import uvicorn

from rhetor.engine.engine import load_engine
from rhetor.engine.resources import Resources
from rhetor.errors import ConfigError
from rhetor.server.app import create_app
from rhetor.server.observe import JsonFormatter
from rhetor.server.settings import ServerSettings

__all__ = ["serve"]


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the log thread as they are: the JSON formatting and the write to stderr (a blocking
    write, once per request for the access log) happen there, never on the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg, record.args = record.getMessage(), None  # arguments may change once the call returns
        return record


def _configure_logging() -> logging.handlers.QueueListener:
    """JSON lines on stderr, written by a listener thread; the caller stops it (which flushes) at exit."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
    root = logging.getLogger("rhetor")
    root.handlers[:] = [_Handoff(records)]
    root.setLevel(os.environ.get("RHETOR_LOG_LEVEL", "INFO").upper())
    root.propagate = False
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):  # one INFO line per upstream call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    listener.start()
    return listener


def serve(config_dir: Path, *, host: str, port: int) -> int:
    """Serve until interrupted; a configuration that does not validate is reported and not served.

    SIGTERM/SIGINT stop accepting connections and let open streams finish within
    ``RHETOR_DRAIN_SECONDS``; SIGHUP reloads the configuration when it validates.
    """
    try:
        settings = ServerSettings.from_env(port=port)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    resources = Resources.from_env()
    engine, diags = load_engine(config_dir, resources=resources)
    if engine is None:
        for d in diags:
            print(d.render(), file=sys.stderr)
        print(f"rhetor: not serving: the configuration in {config_dir} has errors", file=sys.stderr)
        return 1
    print(f"rhetor: config version {engine.version}, pipelines {', '.join(sorted(engine.pipelines))}, "
          f"storage {resources.storage.describe()}; serving on http://{host}:{port}", file=sys.stderr, flush=True)
    listener = _configure_logging()
    try:
        app = create_app(engine, settings=settings, config_dir=config_dir, env=dict(os.environ))
        # Everything built so far (modules, the SDKs' types, the compiled engine) lives as long as the
        # process: move it out of the collector's reach, so a full collection under load scans only what
        # requests created. Without this, gen-2 collections stalled the event loop for tens of ms (the
        # benchmark's p99 at c=16: ~140 ms -> ~35 ms).
        gc.collect()
        gc.freeze()
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=int(settings.drain_seconds))
    finally:
        listener.stop()  # writes out what is queued
    return 0
