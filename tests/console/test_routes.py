"""The console's files as the API serves them (no browser): types, headers, a closed file set."""

from __future__ import annotations

import re

from service.console.assets import STATIC_DIR, load_assets
from service.console.routes import CONTENT_SECURITY_POLICY
from tests.service_fixtures import ApiClient

# The only absolute URL a console file may hold: the SVG namespace, a name that is never fetched.
_ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def test_index_and_files_are_served_with_a_strict_csp(sqlite_api: ApiClient) -> None:
    client = sqlite_api.anonymous()  # the files are public; the data behind them need a key
    for path, media_type in (
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/static/js/app.js", "text/javascript"),
        ("/console/static/console.css", "text/css"),
        ("/console/static/favicon.svg", "image/svg+xml"),
    ):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith(media_type)
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        # Revalidated every time (no content-hashed names without a build step).
        assert r.headers["cache-control"] == "no-cache"
        again = client.get(path, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304


def test_only_the_files_of_the_static_folder_are_served(sqlite_api: ApiClient) -> None:
    client = sqlite_api.anonymous()
    for path in (
        "/console/static/missing.js",
        "/console/static/../routes.py",
        "/console/static/%2e%2e/routes.py",
        "/console/static/..%2froutes.py",
        "/console/static/js/../../routes.py",
        "/console/static/",
    ):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_the_console_is_not_part_of_the_api_contract(sqlite_api: ApiClient) -> None:
    paths = sqlite_api.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_the_files_fetch_nothing_from_outside_and_every_import_resolves() -> None:
    assets = load_assets()
    assert "index.html" in assets and "js/app.js" in assets
    for name, asset in assets.items():
        text = asset.body.decode()
        urls = set(re.findall(r"https?://[^\s\"'`)<>]+", text))
        assert urls <= _ALLOWED_URLS, (name, urls - _ALLOWED_URLS)
        if name.endswith(".js"):
            # Relative ES module imports: each names a file that is served.
            for target in re.findall(r'^import .* from "(\.{1,2}/[^"]+)";$', text, flags=re.M):
                resolved = (STATIC_DIR / name).parent.joinpath(target).resolve().relative_to(STATIC_DIR)
                assert resolved.as_posix() in assets, (name, target)
    index = assets["index.html"].body.decode()
    # No inline script or style: the CSP would refuse them.
    assert "<style" not in index and " style=" not in index
    assert not re.search(r"<script(?![^>]*\bsrc=)", index)
