"""Fail fast when the Hugging Face hub cannot be reached.

Unreachable, ``huggingface_hub`` retries each request for about a minute before it gives up.
cellbench checks once (a 2 s TCP connect) and, offline, switches the hub libraries to their
offline mode for the duration of the call, so a cached file still loads and a missing one fails
at once with an error the caller turns into a one-line message.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse


def _endpoint_host() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    return parsed.hostname or "huggingface.co", parsed.port or (
        443 if parsed.scheme == "https" else 80
    )


def _offline_by_env() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(var, "").strip().lower() in truthy
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub endpoint accepts a TCP connection and offline mode is not forced."""
    if _offline_by_env():
        return False
    try:
        with socket.create_connection(_endpoint_host(), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_hub_if_unreachable() -> Iterator[bool]:
    """Yield True when online; offline, patch the hub libraries' offline flags for the block."""
    if hub_reachable():
        yield True
        return
    import huggingface_hub.constants as hub_constants

    patched = [(hub_constants, "HF_HUB_OFFLINE")]
    try:
        import datasets.config as datasets_config

        patched.append((datasets_config, "HF_HUB_OFFLINE"))
    except ImportError:  # datasets is a core dependency; stay correct without it anyway
        pass
    saved = [(mod, name, getattr(mod, name)) for mod, name in patched]
    try:
        for mod, name in patched:
            setattr(mod, name, True)
        yield False
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)
