"""The dashboard page: ``GET /`` and its static files under ``/static`` (shipped in the package,
no build step).

The page is public: it holds no data. Everything it shows comes from the API under ``/api``
with the same bearer tokens as any client, read by the browser from the URL fragment
(``#token=...``, which browsers never send to a server) and kept in ``sessionStorage``. The
``Content-Security-Policy`` allows scripts, styles and connections to this origin only, so even a
payload that slipped into the page as markup could not run or send anything elsewhere (the
scripts insert user data as text anyway).
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

# Windows takes MIME types from its registry, where .js is sometimes text/plain: browsers refuse
# to run module scripts served so.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_dashboard(app: FastAPI, *, api_prefix: str) -> None:
    """Serve the page at ``/`` (it calls the API under ``api_prefix``) and ``/static/...``."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{API_PREFIX}}", html.escape(api_prefix or "/", quote=True))
    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers=HEADERS)
