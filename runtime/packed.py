"""Readings of one series packed into bytes: the format of readings_packed (saver/compaction.py
writes it, the assessor reads it).

Times, values and attributes ids are three arrays, each compressed by pcodec (a lossless codec of
numeric arrays with a documented, stable format). Values are packed as integers, value·10^k for the
smallest k ≤ 9 that gives every value back bit for bit (sensors report a few decimals: their
differences are small integers), else as doubles; -0.0, which an integer cannot hold, is listed
by position. Measured on this machine: ~0.15-2.1 bytes a reading for an hour of a 1 Hz sensor
(7.5 for full-precision random doubles), 0.1-0.3 µs a reading to pack, 0.6 ms to unpack a day.

Layout: format (1 byte), k (1 byte, 255: doubles), the byte lengths of the times and attributes
parts (4 bytes each, little-endian), the times, the attributes, then for integers the count of -0.0
positions (4 bytes) and the positions (4 bytes each), then the values.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
from pcodec import ChunkConfig, DeltaSpec, standalone

FORMAT = 1
# A packed row holds at most an hour of one series (readings_packed.hour).
HOUR_US = 3_600_000_000
DOUBLES = 255
MAX_DECIMALS = 9
HEADER = struct.Struct("<BBII")
COUNT = struct.Struct("<I")
_AUTOMATIC = ChunkConfig()
# Decimal integers: first differences always (pcodec's own choice sometimes keeps none: 15-90% larger).
_DIFFERENCES = ChunkConfig(delta_spec=DeltaSpec.try_consecutive(1))
_NEGATIVE_ZERO = np.uint64(0x8000_0000_0000_0000)
_LIMIT = 2.0**62  # integers beyond this are not exact in a double's arithmetic here


class Readings(NamedTuple):
    """Readings of one series in time order: µs since 1970 (int64), values (float64), the ids of
    their attributes (int64)."""

    times: np.ndarray
    values: np.ndarray
    attributes: np.ndarray

    def __len__(self) -> int:
        return len(self.times)


def readings(times: list[int], values: list[float], attributes: list[int]) -> Readings:
    return Readings(np.array(times, np.int64), np.array(values, np.float64), np.array(attributes, np.int64))


def pack(found: Readings) -> bytes:
    """The bytes of readings (at least one, times strictly increasing)."""
    times = np.ascontiguousarray(found.times, np.int64)
    values = np.ascontiguousarray(found.values, np.float64)
    attributes = np.ascontiguousarray(found.attributes, np.int64)
    if times.ndim != 1 or not times.size or values.shape != times.shape or attributes.shape != times.shape:
        raise ValueError("pack: times, values and attributes must be 1-D arrays of one length, not empty")
    if (np.diff(times) <= 0).any():
        raise ValueError("pack: times must be strictly increasing")
    times_part = standalone.simple_compress(times, _AUTOMATIC)
    attributes_part = standalone.simple_compress(attributes, _DIFFERENCES)
    decimal = _decimals(values)
    if decimal is None:
        head = HEADER.pack(FORMAT, DOUBLES, len(times_part), len(attributes_part))
        return b"".join((head, times_part, attributes_part, standalone.simple_compress(values, _AUTOMATIC)))
    k, integers, negative_zeros = decimal
    return b"".join((
        HEADER.pack(FORMAT, k, len(times_part), len(attributes_part)), times_part, attributes_part,
        COUNT.pack(negative_zeros.size), negative_zeros.astype("<u4").tobytes(),
        standalone.simple_compress(integers, _DIFFERENCES),
    ))  # fmt: skip


def unpack(blob: bytes) -> Readings:
    form, k, times_length, attributes_length = HEADER.unpack_from(blob)
    if form != FORMAT:
        raise ValueError(f"unpack: format {form} is not one this version reads ({FORMAT})")
    view = memoryview(blob)
    at = HEADER.size
    times = standalone.simple_decompress(bytes(view[at : at + times_length]))
    at += times_length
    attributes = standalone.simple_decompress(bytes(view[at : at + attributes_length]))
    at += attributes_length
    if k == DOUBLES:
        return Readings(times, standalone.simple_decompress(bytes(view[at:])), attributes)
    (count,) = COUNT.unpack_from(blob, at)
    negative_zeros = np.frombuffer(blob, "<u4", count, at + COUNT.size)
    values = standalone.simple_decompress(bytes(view[at + COUNT.size + 4 * count :])).astype(np.float64)
    values /= 10.0**k
    values[negative_zeros] = -0.0
    return Readings(times, values, attributes)


def merge(kept: Readings, more: Readings) -> Readings:
    """Both, in time order; of two readings at one time, the one in `kept` (as storing a reading
    twice keeps the first). `more` need not be sorted."""
    order = np.argsort(more.times, kind="stable")
    more = Readings(more.times[order], more.values[order], more.attributes[order])
    if len(more) > 1:
        first = np.concatenate(([True], np.diff(more.times) != 0))
        more = Readings(more.times[first], more.values[first], more.attributes[first])
    new = ~np.isin(more.times, kept.times, assume_unique=True)
    times = np.concatenate((kept.times, more.times[new]))
    order = np.argsort(times, kind="stable")
    return Readings(
        times[order],
        np.concatenate((kept.values, more.values[new]))[order],
        np.concatenate((kept.attributes, more.attributes[new]))[order],
    )


def _decimals(values: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(k, values·10^k as int64, positions of -0.0) when the integers divided by 10^k give back every
    value bit for bit (but -0.0, listed); None when no k ≤ MAX_DECIMALS does."""
    if not np.isfinite(values).all() or np.abs(values).max() >= _LIMIT:
        return None
    bits = values.view(np.uint64)
    negative_zero = bits == _NEGATIVE_ZERO
    with np.errstate(all="ignore"):
        for k in range(MAX_DECIMALS + 1):
            scaled = np.rint(values * 10.0**k)
            if np.abs(scaled).max() >= _LIMIT:
                return None
            integers = scaled.astype(np.int64)
            wrong = (integers.astype(np.float64) / 10.0**k).view(np.uint64) != bits
            if not (wrong & ~negative_zero).any():
                return k, integers, np.flatnonzero(negative_zero & wrong).astype(np.uint32)
    return None
