"""The registry's reading of Mosquitto's connection notices (registry/presence.py), on lines as
Mosquitto 2.0.11 writes them."""

from __future__ import annotations

import pytest

from registry.presence import Connected, Disconnected, parse, uptime_s

STAMP = "2026-12-05T08:58:11: "


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "New client connected from 127.0.0.1:54492 as plant-7 (p2, c1, k60, u'plant-7').",
            Connected("plant-7", "plant-7"),
        ),
        (
            "New client connected from 10.0.0.7:1883 as a client (p5, c0, k30, u'boiler 1').",
            Connected("a client", "boiler 1"),
        ),
        ("New client connected from ::1:40000 as anonymous (p2, c1, k1).", None),
        ("Client plant-7 disconnected.", Disconnected("plant-7")),
        ("Client raw-dev closed its connection.", Disconnected("raw-dev")),
        ("Client sleepy has exceeded timeout, disconnecting.", Disconnected("sleepy")),
        ("Client gone been disconnected by administrative action.", Disconnected("gone")),
        ("Client bad disconnected, not authorised.", Disconnected("bad")),
        ("Client odd disconnected due to protocol error.", Disconnected("odd")),
        ("Client odd disconnected: Connection reset by peer.", Disconnected("odd")),
        ("Socket error on client lost, disconnecting.", Disconnected("lost")),
        ("Bad socket read/write on client lost: Broken pipe", Disconnected("lost")),
        ("New connection from 127.0.0.1:54492 on port 8883.", None),
        ("Saving in-memory database to /var/lib/mosquitto/mosquitto.db.", None),
    ],
)
def test_notices(line: str, expected: object) -> None:
    assert parse(STAMP + line) == expected
    assert parse(line) == expected  # without a time stamp (log_timestamp false)


def test_uptime() -> None:
    assert uptime_s(b"4242 seconds") == 4242
    assert uptime_s(b"soon") is None
