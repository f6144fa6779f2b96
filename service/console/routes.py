"""``GET /console`` (the page) and ``GET /console/static/{path}`` (its files).

No authentication here: these are the same public files for everyone, and every piece of data the
page shows comes from the JSON API with the user's own key. The routes stay out of the OpenAPI
document, which describes the API clients are written against.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from service.console.assets import Asset, load_assets
from service.errors import not_found

# Only this origin may supply scripts, styles, images and API calls; nothing may frame the page
# (clickjacking), plugins are off, and no form may submit anywhere: the key form is handled in
# JavaScript, so a form submission that slipped through could only leak the key into a URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    # The console's URLs carry no secret, but the pages it links to need not learn them either.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # No build step means no content-hashed file names: revalidate every time (ETag → 304).
    "Cache-Control": "no-cache",
}

ASSETS = load_assets()
router = APIRouter(prefix="/console", include_in_schema=False)

IfNoneMatch = Annotated[str | None, Header()]


def _serve(asset: Asset, if_none_match: str | None) -> Response:
    headers = {**_HEADERS, "ETag": asset.etag}
    if if_none_match is not None and asset.etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("")
@router.get("/")
def index(if_none_match: IfNoneMatch = None) -> Response:
    return _serve(ASSETS["index.html"], if_none_match)


@router.get("/static/{path:path}")
def static_file(path: str, if_none_match: IfNoneMatch = None) -> Response:
    asset = ASSETS.get(path)
    if asset is None:
        raise not_found("console file", path)
    return _serve(asset, if_none_match)
