"""Arrival stamps across a crash (bridge/stamps.py): a redelivered message gets its first stamp back."""

from __future__ import annotations

from pathlib import Path

from bridge.stamps import Stamps

TOPIC = "metrics/v1/s-1"


def test_a_redelivery_gets_its_first_stamp_in_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "bridge-1.stamps"
    first = Stamps(path, window=100)
    assert first.stamp(7, False, TOPIC, b'{"t": 1}', 1_000) == 1_000
    assert first.stamp(8, False, TOPIC, b'{"t": 2}', 1_001) == 1_001
    # The process dies here (what it wrote is in the mapped file), and the next one starts: the broker
    # sends again what it had no acknowledgement of, acknowledged or not (one lost with the socket).
    again = Stamps(path, window=100)
    assert again.stamp(7, True, TOPIC, b'{"t": 1}', 5_000) == 1_000
    assert again.stamp(8, True, TOPIC, b'{"t": 2}', 5_001) == 1_001
    assert again.stamp(9, True, TOPIC, b'{"t": 3}', 5_002) == 5_002  # never stamped: received, not handled


def test_only_the_same_recent_message_gets_the_stamp_back(tmp_path: Path) -> None:
    stamps = Stamps(tmp_path / "s", window=3)
    stamps.stamp(7, False, TOPIC, b'{"t": 1}', 1_000)
    assert stamps.stamp(7, True, TOPIC, b'{"t": 99}', 2_000) == 2_000  # another payload
    assert stamps.stamp(7, True, "metrics/v1/s-2", b'{"t": 99}', 3_000) == 3_000  # another topic
    # A packet id's earlier message, with the same topic and payload, but more than a window of
    # arrivals ago: the broker had its acknowledgement and gave the id to a new message.
    stamps.stamp(9, False, TOPIC, b'{"t": 5}', 4_000)
    for packet_id in (10, 11, 12, 13):
        stamps.stamp(packet_id, False, TOPIC, b"{}", 4_001)
    assert stamps.stamp(9, True, TOPIC, b'{"t": 5}', 6_000) == 6_000
