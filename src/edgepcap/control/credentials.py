"""Minting and hashing of API tokens, API keys and agent keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_id() -> str:
    """A 32-hex-digit identifier, the shape Cloudflare uses for accounts and captures."""
    return secrets.token_hex(16)


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(30)}"


def hash_secret(secret: str) -> str:
    # The secrets we hash are 240-bit random strings, not passwords: a fast
    # hash is enough (no dictionary to attack) and keeps auth lookups indexable.
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
