"""Registration with Hermes, Tekton's service registry, at start: retried with backoff, never blocking.

``POST {HERMES_API_URL}/api/register`` with the payload the implementation summary documents (id, name,
description, version, url, capabilities, endpoints). While Hermes is down Rhetor serves normally and keeps
retrying (1 s, 2 s, 4 s … up to 60 s between tries) until it succeeds or the server stops.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING, Any

import rhetor

if TYPE_CHECKING:
    import httpx

__all__ = ["register_forever", "registration_payload"]

log = logging.getLogger("rhetor.hermes")


def registration_payload(public_url: str) -> dict[str, Any]:
    ws_url = public_url.replace("https://", "wss://").replace("http://", "ws://")
    return {
        "id": "rhetor",
        "name": "Rhetor",
        "description": "LLM Management System for Tekton",
        "version": rhetor.__version__,
        "url": public_url,
        "capabilities": ["llm_management", "prompt_engineering", "context_management", "model_selection"],
        "endpoints": {"http": public_url, "ws": f"{ws_url}/ws"},
    }


async def register_forever(hermes_url: str, public_url: str, *, first_delay: float = 1.0,
                           max_delay: float = 60.0) -> bool:
    """Register until Hermes accepts (returns True); cancelled with the server."""
    url = hermes_url.rstrip("/") + "/api/register"
    payload = registration_payload(public_url)
    delay = first_delay
    # imported here, off the event loop: a server that does not register never loads httpx (several MB)
    httpx_mod: Any = await asyncio.to_thread(importlib.import_module, "httpx")
    client: httpx.AsyncClient
    async with httpx_mod.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                response = await client.post(url, json=payload)
                if response.status_code < 300:
                    log.info("registered with Hermes", extra={"fields": {"hermes": hermes_url}})
                    return True
                reason = f"HTTP {response.status_code}"
            except httpx_mod.HTTPError as exc:
                reason = type(exc).__name__
            log.warning("Hermes registration failed; retrying",
                        extra={"fields": {"hermes": hermes_url, "reason": reason, "retry_in_s": delay}})
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)
