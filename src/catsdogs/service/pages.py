"""The HTML side of the service: the page at `/`, its files under `/static/`, and `/docs`.

The page's files (index.html, page.js, cards.js, input.js, page.css) live in `static/`; the page
loads nothing from other origins and runs no inline script, so it works
offline and under `Content-Security-Policy: default-src 'self'`, which
`middleware.ServiceMiddleware` adds to every HTML response. `/docs` is
FastAPI's Swagger UI, which comes from a CDN and starts with one inline
script; it gets its own policy that allows exactly that CDN and that script
(by its SHA-256), and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.staticfiles import StaticFiles

from catsdogs.service.errors import ServiceError

INDEX_FILE = "index.html"
_SWAGGER_CDN = "https://cdn.jsdelivr.net"
_SWAGGER_ICON = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def add_pages(app: FastAPI, static_dir: Path) -> None:
    """Add `GET /`, the `/static/` files and `GET /docs` to the app.

    Args:
        app: the service's application.
        static_dir: the folder holding index.html and the files it loads.
    """

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        index = static_dir / INDEX_FILE
        if not index.is_file():
            raise ServiceError(
                404,
                "not_found",
                "The page's files are not installed with this server; the API still works (see /docs).",
                received={"static_dir": static_dir.name},
            )
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    # A server without the page's files still serves the API; /static/... then answers 404.
    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        html = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API")
        return HTMLResponse(
            html.body, headers={"Content-Security-Policy": docs_content_security_policy(html.body.decode())}
        )


def docs_content_security_policy(html: str) -> str:
    """A policy for the Swagger UI page: its CDN, its inline scripts by SHA-256, and nothing else."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {_SWAGGER_CDN} {hashes}; style-src 'self' {_SWAGGER_CDN}; "
        f"img-src 'self' data: {_SWAGGER_ICON}; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
    )
