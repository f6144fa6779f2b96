"""Where the CLI finds the service and its key: ``--url``/``--api-key`` options, then the
``UNLEARN_URL``/``UNLEARN_API_KEY`` variables, then the file ``login`` wrote
(``$XDG_CONFIG_HOME/unlearn/config.json``, else ``~/.config/unlearn/config.json``).

The file holds a secret: it is written with mode 0600 (its folder 0700), and written whole to a
temporary file that replaces the old one, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "unlearn" / "config.json"


@dataclass(frozen=True)
class Credentials:
    url: str | None
    api_key: str | None


def load() -> Credentials:
    path = config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Credentials(None, None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    url, key = raw.get("url"), raw.get("api_key")
    return Credentials(url if isinstance(url, str) else None, key if isinstance(key, str) else None)


def save(credentials: Credentials) -> Path:
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"url": credentials.url, "api_key": credentials.api_key}, indent=2) + "\n"
    # mkstemp creates the file with mode 0600: the key is never readable by others, not even
    # for the moment between creating and renaming it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove() -> bool:
    path = config_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def resolve(url: str | None, api_key: str | None) -> Credentials:
    """Options first, then the environment, then the file."""
    stored = load()
    return Credentials(
        url or os.environ.get("UNLEARN_URL") or stored.url,
        api_key or os.environ.get("UNLEARN_API_KEY") or stored.api_key,
    )


class ConfigError(Exception):
    """The CLI does not know where the service is, or its config file is unreadable."""
