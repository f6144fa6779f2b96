"""Hugging Face architectures registered over the API: the config comes inline, never from a path
the caller picks.

An ``hf-*`` architecture may name a directory (``config.path``) whose ``config.json`` the engine
reads. Over the API that would let any ``models:write`` key read server directories, and the old
error ("is not a directory with a config.json") told it which ones exist. So a path is refused
unless it lies in a directory the operator allows (``UNLEARN_HF_CONFIG_DIRS``, none by default),
with one message whatever the reason; an allowed one is read once, here, and its config stored
inline with the model, so workers never need the directory.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.errors import Problem, unprocessable
from service.jsonbody import MAX_NESTING, nesting_depth
from unlearning.architectures import get_architecture
from unlearning.architectures.hf import HFConfig
from unlearning.errors import ArchitectureError

# A real config.json is a few KiB; a large HF config is large through its dimensions, not its text.
MAX_CONFIG_BYTES = 1024 * 1024


def _refused(allowed_dirs: Sequence[Path]) -> Problem:
    if not allowed_dirs:
        return unprocessable(
            "architecture.config.path: this service does not read Hugging Face configs from server "
            "paths; give the contents of config.json inline as architecture.config.hf_config"
        )
    return unprocessable(
        "architecture.config.path: not a readable config.json in a directory this service allows "
        "(UNLEARN_HF_CONFIG_DIRS); or give the config inline as architecture.config.hf_config"
    )


def _read_allowed(path: Any, allowed_dirs: Sequence[Path]) -> dict[str, Any] | None:
    """The config.json under ``path`` if it lies in an allowed directory, else None (any reason)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        return None
    # resolve() follows symlinks and "..", so a link inside an allowed directory cannot lead out.
    target = (Path(path) / "config.json").resolve()
    if not any(target.is_relative_to(d.resolve()) for d in allowed_dirs):
        return None
    try:
        # A regular file only: opening a FIFO or a device would block or never end.
        if not stat.S_ISREG(os.stat(target).st_mode):
            return None
        with open(target, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        fields = json.loads(raw) if len(raw) <= MAX_CONFIG_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) and nesting_depth(fields) <= MAX_NESTING else None


def inline_hf_config(architecture: dict[str, Any], allowed_dirs: Sequence[Path]) -> dict[str, Any]:
    """``architecture`` with an HF ``config.path`` replaced by the config it names (as
    ``config.hf_config``), or a 422 that says nothing about what exists on the server.

    Other architectures, and unknown names (the engine's check reports those), pass unchanged.
    """
    config = architecture.get("config")
    # Both or neither given: the engine refuses that itself, without reading anything.
    if not isinstance(config, dict) or config.get("path") is None or config.get("hf_config") is not None:
        return architecture
    try:
        arch = get_architecture(architecture.get("name"))  # type: ignore[arg-type]
    except ArchitectureError:
        return architecture
    if not issubclass(arch.config_model, HFConfig):
        return architecture
    if not allowed_dirs:
        raise _refused(allowed_dirs)
    fields = _read_allowed(config["path"], allowed_dirs)
    if fields is None:
        raise _refused(allowed_dirs)
    rest = {k: v for k, v in config.items() if k != "path"}
    return {**architecture, "config": {**rest, "hf_config": fields}}
