"""What browsers get besides the API: security headers on every answer, the docs page.

One policy for every page and answer: scripts, styles, images and requests from this
server only (no inline script or style, no third-party origin), no framing. The dashboard
and the API docs are built to need nothing more; JSON answers carry it too, so that one
opened in a browser runs nothing either.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS = Path(__file__).resolve().parent / "docs"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # frame-ancestors says it to today's browsers; this to those that predate it.
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP answer (refusals of the request guard too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_docs(app: FastAPI, prefix: str) -> None:
    """Swagger UI at PREFIX/docs, its files served from the package (api/docs/)."""
    app.mount(f"{prefix}/docs/assets", StaticFiles(directory=DOCS), name="docs-assets")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(DOCS / "docs.html")
