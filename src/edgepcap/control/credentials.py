"""Minting and hashing of API tokens, API keys and agent keys, and the files that hold them."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


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


def write_secret_file(path: Path, text: str) -> None:
    """Write a new file (it must not exist) that only its owner can read, from its
    creation on: a secret is never readable, even for a moment, with the umask's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
