"""HTTP for tests and the benchmark: JSON requests to the front door, with the status and headers."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from typing import Any


def _request(
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url: {url!r} is not an http(s) URL")
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls) as response:  # noqa: S310
            return response.status, _lowered(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lowered(error.headers), error.read()


def _lowered(headers: Any) -> dict[str, str]:
    """Header names in lower case, as HTTP/2 has them (HTTP/1.1 servers may capitalise them)."""
    return {name.lower(): value for name, value in headers.items()}


def http_bytes(method: str, url: str, **options: Any) -> tuple[int, dict[str, str], bytes]:
    """(status, response headers, body) of an HTTP request whose answer need not be JSON (options:
    as _request)."""
    return _request(method, url, **options)


async def http_full(
    method: str, url: str, body: Any = None, **options: Any
) -> tuple[int, dict[str, str], Any]:
    """(status, response headers, parsed JSON body) of an HTTP request (raw, headers, tls: as
    _request); the body is None when empty."""
    status, response_headers, payload = await asyncio.to_thread(_request, method, url, body, **options)
    if not payload:
        return status, response_headers, None
    content_type = response_headers.get("content-type", "")
    assert content_type.startswith("application/json"), (status, response_headers, payload[:200])
    return status, response_headers, json.loads(payload)


async def http(method: str, url: str, body: Any = None, **options: Any) -> tuple[int, Any]:
    """(status, parsed JSON body) of an HTTP request (raw, headers, tls: as _request)."""
    status, _, parsed = await http_full(method, url, body, **options)
    return status, parsed
