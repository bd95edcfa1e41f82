"""Protobuf's wire format by hand, where building messages object by object costs too much: the
receiver's readings straight into MetricBatch bytes (receiver/encoded.py), the assessor's remote read
answers (assessor/remote_read.py)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """A non-negative integer as a varint; the lengths of times (seconds, nanoseconds) unrolled."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 0x800000000:
        return bytes(
            (n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80, n >> 28)
        )
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag, its length as a varint, the payload."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
