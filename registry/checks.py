"""What a device may be: the problems of a request's device, each naming its field."""

from __future__ import annotations

from metrics.v1 import device_pb2
from runtime.errors import Violation
from runtime.validation import SENSOR_ID, describe_id, label_problems

MAX_DISPLAY_NAME = 200
ID_CHARACTERS = "A-Z a-z 0-9 . _ : -"
TIERS = (device_pb2.DEVICE_TIER_DEVICE, device_pb2.DEVICE_TIER_GATEWAY)


def device_id_problems(device_id: str, field: str) -> list[Violation]:
    if SENSOR_ID.fullmatch(device_id) is None:
        return [Violation(field, describe_id(device_id, 128, ID_CHARACTERS))]
    return []


def violations(device: device_pb2.Device, prefix: str = "device.") -> list[Violation]:
    """The problems of the fields a client sets (its id, state and times are the server's)."""
    problems: list[Violation] = []
    prefix_id = device.sensor_id_prefix
    if prefix_id and SENSOR_ID.fullmatch(prefix_id) is None:
        problems.append(Violation(f"{prefix}sensor_id_prefix", describe_id(prefix_id, 128, ID_CHARACTERS)))
    name = device.display_name
    if len(name) > MAX_DISPLAY_NAME:
        problems.append(
            Violation(f"{prefix}display_name", f"is {len(name)} characters, more than {MAX_DISPLAY_NAME}")
        )
    if "\x00" in name:
        problems.append(Violation(f"{prefix}display_name", "must not contain the NUL character (\\x00)"))
    problems += [Violation(f"{prefix}{field}", text) for field, text in label_problems(device.labels)]
    problems += [
        Violation(f"{prefix}labels[{key[:64]!r}]", 'key must not contain "="')
        for key in device.labels
        if "=" in key
    ]
    if device.tier and device.tier not in TIERS:
        problems.append(Violation(f"{prefix}tier", f"{device.tier} is not a DeviceTier"))
    if device.version < 0:
        problems.append(Violation(f"{prefix}version", f"must not be negative, got {device.version}"))
    return problems
