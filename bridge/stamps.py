"""Arrival stamps that survive the bridge: a message redelivered after a crash gets the time it got
the first time, so its readings are stored once, not again under a new time.

The broker numbers the messages it sends a session (packet ids 1-65,535, one after the other, so an
id comes back only after 65,535 other messages) and at most `receive_maximum` of them await their
acknowledgement at a time. When the session's client comes back after a crash, the broker sends again
those whose acknowledgement it did not get, with the same packet ids and the DUP flag: among the
last `receive_maximum` it had sent, whatever the client did with them (an acknowledgement still in
a killed process's socket is lost with it).

This table keeps, per packet id, the stamp given to the message that last had it, a digest of that
message (topic and payload) and its place in the order of arrival. It is a file mapped into memory:
writing a slot is a store to memory, no system call, and what the process wrote is in the page cache
for the next one even after a kill -9. (A crash of the machine can lose it; the broker's own loss
window is larger then, docs/mqtt.md.)

A message with DUP set gets its slot's stamp back if the slot holds its digest and was written among
the last few windows of arrivals (a slot older than that held an earlier message with the id, which
the broker had been acknowledged). Any other message gets a fresh stamp. The stamp is written before
the readings go to Kafka, so a crash between the two only means the redelivered message is written
with the stamp it would have had.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from pathlib import Path

SLOTS = 65_536  # MQTT packet ids are 16 bits
# The header: how many messages arrived so far, in the file's life.
HEADER = struct.Struct("<Q")
# A slot: the stamp (µs since 1970), the message's CRC-32, the low 32 bits of its arrival number.
SLOT = struct.Struct("<qII")
HEADER_BYTES = 16


class Stamps:
    def __init__(self, path: Path, window: int) -> None:
        """`window`: how many arrivals back a redelivered message can have arrived first (a few
        times the broker's window of unacknowledged messages, far below 65,535)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        size = HEADER_BYTES + SLOTS * SLOT.size
        with path.open("a+b") as f:
            if f.seek(0, 2) != size:
                f.truncate(0)  # new, or made for another layout: every slot empty
                f.truncate(size)
            self._map = mmap.mmap(f.fileno(), size)
        self._window = window
        (self._arrivals,) = HEADER.unpack_from(self._map, 0)

    def stamp(self, packet_id: int, dup: bool, topic: str, payload: bytes, fresh_us: int) -> int:
        """The arrival time (µs) of a message: its earlier stamp if it is a redelivery of a message
        this session stamped recently, else `fresh_us`, which is then recorded."""
        digest = zlib.crc32(payload, zlib.crc32(topic.encode()))
        offset = HEADER_BYTES + packet_id * SLOT.size
        if dup:
            stamped, kept, arrival = SLOT.unpack_from(self._map, offset)
            if stamped and kept == digest and (self._arrivals - arrival) % 2**32 <= self._window:
                return int(stamped)
        self._arrivals += 1
        HEADER.pack_into(self._map, 0, self._arrivals)
        SLOT.pack_into(self._map, offset, fresh_us, digest, self._arrivals % 2**32)
        return fresh_us

    def close(self) -> None:
        self._map.close()
