"""The registry's devices as the tests and the bench find and remove theirs (DevicesService)."""

from __future__ import annotations

import asyncio
from typing import Any

from metrics.v1 import device_pb2, devices_service_pb2

pb = devices_service_pb2


async def listed(stub: Any, prefix: str) -> list[device_pb2.Device]:
    """Every device whose id starts with `prefix`, page after page. `stub`: a DevicesServiceStub."""
    found: list[device_pb2.Device] = []
    token = ""
    while True:
        page = await stub.ListDevices(
            pb.ListDevicesRequest(device_id_prefix=prefix, page_size=1_000, page_token=token)
        )
        found += page.devices
        if not (token := page.next_page_token):
            return found


async def delete_devices(stub: Any, prefix: str, at_once: int = 100) -> int:
    """Deletes every device whose id starts with `prefix`, `at_once` calls in flight; how many."""
    ids = [device.device_id for device in await listed(stub, prefix)]
    for first in range(0, len(ids), at_once):
        await asyncio.gather(
            *(stub.DeleteDevice(pb.DeleteDeviceRequest(device_id=i)) for i in ids[first : first + at_once])
        )
    return len(ids)
