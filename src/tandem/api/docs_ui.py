"""The interactive API docs served from this install: Swagger UI's assets come from
the ``swagger-ui-bundle`` package, so ``/docs`` works on a network with no way out
(no CDN, no validator badge, no remote favicon)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve ``/docs`` and its assets locally. FastAPI's own CDN-backed ``/docs`` and
    ``/redoc`` must be turned off on ``app`` (``docs_url=None, redoc_url=None``)."""
    from swagger_ui_bundle import swagger_ui_path

    openapi_url = app.openapi_url or "/openapi.json"

    async def docs(_request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            # validatorUrl null: the UI never asks validator.swagger.io about the spec.
            swagger_ui_parameters={"validatorUrl": None},
        )

    # Plain routes, not API routes: the docs page is not part of the API it documents.
    app.add_route(DOCS_PATH, docs, include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
