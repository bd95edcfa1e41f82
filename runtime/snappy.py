"""Snappy's block format, as Prometheus's remote write and remote read compress their bodies, with a
bound on what a body may decompress to (its length is read before anything is inflated)."""

from __future__ import annotations

import cramjam


class SnappyError(ValueError):
    """A body that is not snappy's block format, or that decompresses to more than allowed."""


def decoded_length(data: bytes) -> int:
    """The length the block says it decompresses to: its preamble, a varint of at most 32 bits."""
    length = shift = 0
    for i, byte in enumerate(data[:5]):
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length if i < 4 or byte < 0x10 else _corrupt()
        shift += 7
    return _corrupt()


def decompress(data: bytes, limit: int) -> bytes:
    length = decoded_length(data)
    if length > limit:
        raise SnappyError(f"decompresses to {length:,} bytes, more than the limit of {limit:,}")
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise SnappyError(f"is not snappy-compressed (the block format): {exc}") from None


def compress(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def _corrupt() -> int:
    raise SnappyError("is not snappy-compressed (the block format): no valid length at its start")
