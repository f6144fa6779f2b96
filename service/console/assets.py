"""The console's static files, read once at import: a closed set served by exact name.

Serving from an in-memory table, not from the file system per request, means no request path can
reach a file outside ``static/`` (no traversal to normalise away) and no unexpected file type is
served: only the extensions below are taken in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")

# text/javascript is the type the HTML standard requires for module scripts under nosniff.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str  # a strong validator: the sha256 of the bytes, quoted


def load_assets(root: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file under ``root`` with a known extension, by its POSIX path relative to ``root``."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest() + '"'
        assets[path.relative_to(root).as_posix()] = Asset(body, media_type, etag)
    return assets
