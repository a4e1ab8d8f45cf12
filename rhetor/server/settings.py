"""Server settings from the environment (read once at start; never module globals).

| variable | meaning |
|---|---|
| `RHETOR_API_KEY` | one key; when set (or a keys file is), every endpoint but `/health` needs it |
| `RHETOR_API_KEYS_FILE` | YAML `keys: [{component: ergon, key: env:VAR or sha256:<hex>}]`, per-component keys |
| `RHETOR_CORS_ORIGINS` | comma-separated allowed origins for browsers (`*` for any); unset: no CORS |
| `RHETOR_MAX_BODY_BYTES` | largest request body accepted (default 8 MiB) |
| `RHETOR_DRAIN_SECONDS` | grace period for open streams at shutdown (default 10) |
| `HERMES_API_URL` | Hermes registry (default http://localhost:8100); `RHETOR_REGISTER=0` disables registration |
| `RHETOR_PUBLIC_URL` | URL announced to Hermes (default http://localhost:<port>) |
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rhetor.config.diagnostics import Diagnostic
from rhetor.errors import ConfigError

__all__ = ["ApiKey", "ServerSettings"]


@dataclass(frozen=True)
class ApiKey:
    digest: bytes = field(repr=False)
    """sha256 of the key; the key itself is never kept."""
    component: str | None = None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _keys_file(path: Path, env: Mapping[str, str]) -> list[ApiKey]:
    shown = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([Diagnostic(shown, 1, 1, "unreadable-file", f"cannot read the API keys file: {exc}")]) \
            from None
    keys = []
    for i, entry in enumerate(data.get("keys", []) if isinstance(data, dict) else []):
        ref = str(entry.get("key", "")) if isinstance(entry, dict) else ""
        component = entry.get("component") if isinstance(entry, dict) else None
        if ref.startswith("env:") and env.get(ref[4:]):
            keys.append(ApiKey(_digest(env[ref[4:]]), component))
        elif ref.startswith("sha256:") and len(ref) == 71:
            keys.append(ApiKey(bytes.fromhex(ref[7:]), component))
        else:
            raise ConfigError([Diagnostic(shown, 1, 1, "bad-value",
                                          f"keys[{i}].key must be `env:VAR` (set) or `sha256:<64 hex>`",
                                          path=f"keys[{i}].key")])
    return keys


@dataclass(frozen=True)
class ServerSettings:
    api_keys: tuple[ApiKey, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    drain_seconds: float = 10.0
    hermes_url: str | None = None
    public_url: str = "http://localhost:8300"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, port: int = 8300) -> ServerSettings:
        env = os.environ if env is None else env
        keys: list[ApiKey] = []
        if env.get("RHETOR_API_KEY"):
            keys.append(ApiKey(_digest(env["RHETOR_API_KEY"])))
        if env.get("RHETOR_API_KEYS_FILE"):
            keys += _keys_file(Path(env["RHETOR_API_KEYS_FILE"]), env)
        origins = tuple(o.strip() for o in env.get("RHETOR_CORS_ORIGINS", "").split(",") if o.strip())
        register = env.get("RHETOR_REGISTER", "1").lower() not in ("0", "false", "no", "off")
        return cls(
            api_keys=tuple(keys),
            cors_origins=origins,
            max_body_bytes=int(env.get("RHETOR_MAX_BODY_BYTES", 8 * 1024 * 1024)),
            drain_seconds=float(env.get("RHETOR_DRAIN_SECONDS", 10)),
            hermes_url=(env.get("HERMES_API_URL") or "http://localhost:8100") if register else None,
            public_url=env.get("RHETOR_PUBLIC_URL") or f"http://localhost:{port}",
        )
