"""Which enabled registered devices cover each sensor (runtime/devices.py: strict mode, silence rules),
kept up to date as the devices topic changes, against a model that asks every device."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.v1 import device_pb2
from runtime.devices import Coverage

ENABLED, DISABLED = device_pb2.DEVICE_STATE_ENABLED, device_pb2.DEVICE_STATE_DISABLED


def followed(*changes: tuple[str, device_pb2.Device | None]) -> tuple[Coverage, dict[str, device_pb2.Device]]:
    """The coverage of a follower that took `changes` (key, latest record), and what it holds."""
    coverage, held = Coverage(), {}
    for key, device in changes:
        before = held.pop(key, None)
        if device is not None:
            held[key] = device
        coverage.changed(key, before, device)
    return coverage, held


def model_devices(held: dict[str, device_pb2.Device], sensor_id: str) -> frozenset[str]:
    return frozenset(
        d.device_id
        for d in held.values()
        if d.state == ENABLED
        and (sensor_id.startswith(d.sensor_id_prefix) if d.sensor_id_prefix else sensor_id == d.device_id)
    )


def test_a_sensor_is_covered_by_a_prefix_or_by_a_device_s_own_id() -> None:
    coverage, _ = followed(
        ("plant-7", device_pb2.Device(device_id="plant-7", sensor_id_prefix="plant-7-", state=ENABLED)),
        ("boiler", device_pb2.Device(device_id="boiler", state=ENABLED)),
        ("old", device_pb2.Device(device_id="old", sensor_id_prefix="old-", state=DISABLED)),
    )
    assert all(coverage.covers(s) for s in ("plant-7-a", "plant-7-", "boiler"))
    assert not any(coverage.covers(s) for s in ("plant-7", "boiler-2", "old-1", "plant-8-a"))


prefixes = st.sampled_from(["", "a", "a-", "a-b", "b", "ab"])
records = st.tuples(
    st.sampled_from(["d1", "d2", "d3", "a", "ab"]),
    st.none() | st.builds(lambda p, s: (p, s), prefixes, st.sampled_from([ENABLED, DISABLED])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=20))
def test_coverage_follows_every_change_as_a_model_would(changes: list) -> None:
    # Asked between changes too: remembered verdicts must be forgotten as the devices change.
    coverage, held = followed()
    for key, value in changes:
        device = (
            None
            if value is None
            else device_pb2.Device(device_id=key, sensor_id_prefix=value[0], state=value[1])
        )
        before = held.pop(key, None)
        if device is not None:
            held[key] = device
        coverage.changed(key, before, device)
        for sensor in ("a", "a-", "a-b-1", "ab", "b", "d1", "d2", "ab-x", "c"):
            assert coverage.devices_of(sensor) == model_devices(held, sensor), (sensor, held)
            assert coverage.covers(sensor) == bool(model_devices(held, sensor))
