"""``rhetor serve``: load and compile the configuration, then serve it with uvicorn on one port."""

from __future__ import annotations

import logging
import os
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


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("rhetor")
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("RHETOR_LOG_LEVEL", "INFO").upper())
    root.propagate = False
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):  # one INFO line per upstream call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    _configure_logging()
    app = create_app(engine, settings=settings, config_dir=config_dir, env=dict(os.environ))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(settings.drain_seconds))
    return 0
