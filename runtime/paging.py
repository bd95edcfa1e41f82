"""Page tokens: opaque to clients, bound to the query they came from.

A token holds the sort key of the last row of its page (keyset pagination: rows inserted while a
client pages are neither skipped nor repeated) and a digest of the request's filters, so a token
used with other filters is an error rather than a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from runtime.errors import InvalidArgument, Violation

VERSION = 1


def filters_digest(*filters: object) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def encode(digest: str, *position: Any) -> str:
    payload = json.dumps([VERSION, digest, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode(token: str, digest: str, arity: int) -> list[Any] | None:
    """The position in a token made by `encode(digest, …)`; None for an empty token (first page)."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidArgument([Violation("page_token", "is not a page token of this API")]) from None
    if not isinstance(payload, list) or len(payload) != 2 + arity or payload[0] != VERSION:
        raise InvalidArgument([Violation("page_token", "is not a page token of this API")])
    if payload[1] != digest:
        raise InvalidArgument(
            [Violation("page_token", "was made for a request with other filters; send the same filters")]
        )
    return payload[2:]


def page_size(requested: int, default: int, maximum: int) -> int:
    """The page size to use: `default` for 0, at most `maximum` (a larger one is coerced to it, as
    Google's AIP-158 asks: a client asking for more simply gets full pages)."""
    if requested < 0:
        raise InvalidArgument(
            [
                Violation(
                    "page_size", f"must not be negative (0 for {default}, at most {maximum}), got {requested}"
                )
            ]
        )
    return min(requested, maximum) or default
