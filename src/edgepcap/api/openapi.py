"""The OpenAPI document as the API behaves: Cloudflare's two ways to authenticate, and
validation errors as the 400s the API answers (FastAPI documents them as 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

# Cloudflare's names for the schemes, so its documents and ours read alike.
SECURITY_SCHEMES = {
    "api_token": {"type": "http", "scheme": "bearer"},
    "api_email": {"type": "apiKey", "in": "header", "name": "X-Auth-Email"},
    "api_key": {"type": "apiKey", "in": "header", "name": "X-Auth-Key"},
}
# A token alone, or an email and a key together.
SECURITY = [{"api_token": []}, {"api_email": [], "api_key": []}]


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = SECURITY_SCHEMES
        for name in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(name, None)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if "{account_id}" in path:
                    operation["security"] = SECURITY
        app.openapi_schema = schema
    return app.openapi_schema
