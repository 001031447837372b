"""The page for people: `/` and its static assets, built only on the public JSON API.

The page is plain HTML, CSS and JavaScript in `server/static/` with no build step, so what
is in the repository is exactly what the browser runs. It calls the same routes as any
other client (`/samples`, `/predict`, `/models`) and does no image preprocessing of its
own: drawings and uploads go to `/predict` as images, and the server prepares them.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC_DIR = Path(__file__).resolve().parent / "static"

# "/ui" rather than "/static": the app's own static route may exist too, and two rules for
# one URL would make it depend on registration order which of them answers.
bp = Blueprint("web", __name__, static_folder=str(STATIC_DIR), static_url_path="/ui")

# The page promises to work offline; the browser enforces it. Everything comes from this
# origin; data: and blob: images are the canvas export and the preview of an upload.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "style-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@bp.get("/")
def index() -> Response:
    response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
