"""``rhetor serve``: load and compile the configuration, then serve it with uvicorn on one port."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from rhetor.engine.engine import load_engine
from rhetor.server.app import create_app

__all__ = ["serve"]


def serve(config_dir: Path, *, host: str, port: int) -> int:
    """Serve until interrupted; a configuration that does not validate is reported and not served."""
    engine, diags = load_engine(config_dir)
    if engine is None:
        for d in diags:
            print(d.render(), file=sys.stderr)
        print(f"rhetor: not serving: the configuration in {config_dir} has errors", file=sys.stderr)
        return 1
    print(f"rhetor: config version {engine.version}, pipelines {', '.join(sorted(engine.pipelines))}; "
          f"serving on http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(engine), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=10)
    return 0
