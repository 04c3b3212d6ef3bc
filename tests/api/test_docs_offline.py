"""/docs works on an air-gapped network: the page names no external URL and every
asset it loads is served by the app itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi.testclient import TestClient


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.refs.append(value)


def test_docs_page_loads_only_local_assets(http: TestClient) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), html
    assert "cdn" not in html.lower()
    assert "validatorUrl" in html  # no badge fetched from validator.swagger.io
    parser = _Refs()
    parser.feed(html)
    assert len(parser.refs) >= 3  # stylesheet, favicon, script
    for ref in parser.refs:
        assert ref.startswith("/"), ref
        asset = http.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 100, ref
    script = http.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in script.text
    spec_url = re.search(r"url: '([^']+)'", html)
    assert spec_url is not None
    assert http.get(spec_url.group(1)).status_code == 200


def test_cdn_backed_pages_are_gone(http: TestClient) -> None:
    assert http.get("/redoc").status_code == 404
    assert http.get("/docs/assets/no-such-file.js").status_code == 404


def test_docs_are_not_an_api_route(http: TestClient) -> None:
    paths = set(http.get("/openapi.json").json()["paths"])
    assert not any(p.startswith("/docs") for p in paths)
