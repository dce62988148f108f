"""What the customer routes share: the authenticated caller and the id check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from edgepcap.api.auth import Caller, caller
from edgepcap.api.errors import APIError, Code
from edgepcap.api.schemas import ID_PATTERN

# The caller a customer route serves, authenticated against its `account_id`.
Account = Annotated[Caller, Depends(caller)]


def check_id(value: str, what: str = "pcap_id") -> str:
    """`value` when it is an id of ours (32 lowercase hex digits), else a 400 naming `what`."""
    if not ID_PATTERN.match(value):
        raise APIError(
            400, Code.INVALID_IDENTIFIER, f"`{what}` must be 32 lowercase hexadecimal digits"
        )
    return value
