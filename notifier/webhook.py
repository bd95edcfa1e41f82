"""One attempt at a delivery: the signed JSON body, POSTed to the subscription's URL.

The body is a metrics.v1.Notification in protobuf's JSON mapping. Headers (subscription.proto says
the same to receivers):
  Idempotency-Key      the event's event_id, the same on every attempt
  X-Metrics-Signature  sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the secret>
The request goes to an address the URL's host resolved to and that Destinations allows, over a
connection of its own (Connection: close); a 2xx status line within the time limit is a delivery.
Redirects are not followed: a 3xx is a failure like any other status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import ssl

from google.protobuf import json_format, timestamp_pb2

from metrics.v1 import event_pb2, subscription_pb2
from notifier.destinations import Destinations, Refused, Url

SIGNATURE_HEADER = "X-Metrics-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "metrics-notifier/1"
# The status line must come within this many bytes (asyncio's stream limit is larger).
MAX_STATUS_LINE = 8192


def signature(secret: str, body: bytes) -> str:
    """The X-Metrics-Signature value of `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body(subscription_id: str, event: event_pb2.Event, attempt: int, send_time_ns: int) -> bytes:
    """The JSON body of an attempt: compact, UTF-8, every field (defaults too), lowerCamelCase."""
    send_time = timestamp_pb2.Timestamp()
    send_time.FromNanoseconds(send_time_ns)
    notification = subscription_pb2.Notification(
        subscription_id=subscription_id, event=event, send_time=send_time, attempt=attempt
    )
    fields = json_format.MessageToDict(notification, always_print_fields_with_no_presence=True)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


class AttemptFailed(Exception):
    """An attempt that did not deliver; the message is what the subscription's state shows, `kind`
    what it is counted as (metrics_notifier_attempts_failed_total)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Sender:
    """Sends attempts; `tls` is how https URLs are verified (the system's CAs)."""

    def __init__(self, destinations: Destinations, timeout_s: float, tls: ssl.SSLContext | None = None):
        self._destinations = destinations
        self._timeout_s = timeout_s
        self._tls = tls or ssl.create_default_context()

    async def post(self, url: Url, payload: bytes, headers: dict[str, str]) -> None:
        """POSTs `payload`; returns once a 2xx status line came back, raises AttemptFailed otherwise."""
        try:
            async with asyncio.timeout(self._timeout_s):
                status = await self._exchange(url, payload, headers)
        except TimeoutError:
            raise AttemptFailed(f"no answer within {self._timeout_s:g} s", "timeout") from None
        except Refused as exc:
            raise AttemptFailed(f"url: {exc}", "address") from None
        except ssl.SSLError as exc:
            raise AttemptFailed(f"TLS: {exc.reason or exc}", "connection") from None
        except OSError as exc:
            raise AttemptFailed(f"connection: {exc.strerror or exc}", "connection") from None
        if not 200 <= status < 300:
            raise AttemptFailed(f"HTTP {status}", "status")

    async def _exchange(self, url: Url, payload: bytes, headers: dict[str, str]) -> int:
        addresses = await self._destinations.resolve(url)
        reader, writer = await _connect(addresses, url, self._tls if url.tls else None)
        try:
            lines = [
                f"POST {url.target} HTTP/1.1",
                f"Host: {url.host_header}",
                f"User-Agent: {USER_AGENT}",
                "Content-Type: application/json",
                f"Content-Length: {len(payload)}",
                "Connection: close",
                *(f"{name}: {value}" for name, value in headers.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            await writer.drain()
            try:
                line = await reader.readline()
            except ValueError:  # no line end within MAX_STATUS_LINE bytes
                raise AttemptFailed("not an HTTP answer: an endless first line", "status") from None
            return _status(line)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _connect(
    addresses: list[str], url: Url, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of `addresses` that answers (TLS names the host, not the address)."""
    error: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(
                address, url.port, ssl=tls, server_hostname=url.host if tls else None,
                limit=MAX_STATUS_LINE,
            )  # fmt: skip
        except OSError as exc:
            error = exc
    assert error is not None  # resolve() returns at least one address
    raise error


def _status(line: bytes) -> int:
    """The status code of an HTTP/1.x status line."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        shown = line[:60].decode(errors="replace").strip() or "nothing"
        raise AttemptFailed(f"not an HTTP answer: {shown!r}", "status")
    return int(parts[1])
