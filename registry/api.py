"""DevicesService: the registry of the fleet's devices (routed by Envoy to here)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from metrics.v1 import device_pb2, devices_service_pb2, devices_service_pb2_grpc
from registry import checks
from registry.store import MUTABLE, DeviceStore
from runtime import paging
from runtime.errors import InvalidArgument, Violation, grpc_errors
from runtime.identity import caller
from runtime.validation import MAX_VIOLATIONS

SERVICE = devices_service_pb2.DESCRIPTOR.services_by_name["DevicesService"]
Context = grpc.aio.ServicerContext[Any, Any]
MAX_BATCH = 10_000
STATES = (device_pb2.DEVICE_STATE_ENABLED, device_pb2.DEVICE_STATE_DISABLED)


class DevicesApi(devices_service_pb2_grpc.DevicesServiceServicer):
    def __init__(self, store: DeviceStore) -> None:
        self._store = store

    @grpc_errors
    async def CreateDevice(
        self, request: devices_service_pb2.CreateDeviceRequest, context: Context
    ) -> device_pb2.Device:
        _admin(context)
        _check(_problems(request, ""))
        [created] = await self._store.create([_new(request)])
        return created

    @grpc_errors
    async def BatchCreateDevices(
        self, request: devices_service_pb2.BatchCreateDevicesRequest, context: Context
    ) -> devices_service_pb2.BatchCreateDevicesResponse:
        _admin(context)
        count = len(request.requests)
        if not 1 <= count <= MAX_BATCH:
            raise InvalidArgument(
                [Violation("requests", f"has {count} devices; 1 to {MAX_BATCH} may be created at once")]
            )
        problems: list[Violation] = []
        first: dict[str, int] = {}
        for i, one in enumerate(request.requests):
            problems += _problems(one, f"requests[{i}].")
            if (seen := first.setdefault(one.device_id, i)) != i:
                problems.append(
                    Violation(f"requests[{i}].device_id", f"{one.device_id!r} is requests[{seen}]'s too")
                )
            if len(problems) >= MAX_VIOLATIONS:
                break
        _check(problems)
        created = await self._store.create([_new(one) for one in request.requests])
        return devices_service_pb2.BatchCreateDevicesResponse(devices=created)

    @grpc_errors
    async def GetDevice(
        self, request: devices_service_pb2.GetDeviceRequest, context: Context
    ) -> device_pb2.Device:
        caller(context.invocation_metadata(), "read")
        return await self._store.get(_device_id(request.device_id))

    @grpc_errors
    async def ListDevices(
        self, request: devices_service_pb2.ListDevicesRequest, context: Context
    ) -> devices_service_pb2.ListDevicesResponse:
        caller(context.invocation_metadata(), "read")
        labels = _labels(request.labels)
        if request.state and request.state not in STATES:
            raise InvalidArgument([Violation("state", f"{request.state} is not a DeviceState")])
        size = paging.page_size(request.page_size, 100, 1_000)
        digest = paging.filters_digest(
            "devices", request.device_id_prefix, sorted(labels.items()), request.state
        )
        position = paging.decode(request.page_token, digest, 1)
        devices = await self._store.page(
            request.device_id_prefix, labels, request.state, position[0] if position else None, size + 1
        )
        response = devices_service_pb2.ListDevicesResponse(devices=devices[:size])
        if len(devices) > size:
            response.next_page_token = paging.encode(digest, devices[size - 1].device_id)
        return response

    @grpc_errors
    async def UpdateDevice(
        self, request: devices_service_pb2.UpdateDeviceRequest, context: Context
    ) -> device_pb2.Device:
        _admin(context)
        device_id = _device_id(request.device_id)
        device = request.device
        paths = list(request.update_mask.paths) or [
            f.name for f, _ in device.ListFields() if f.name in MUTABLE
        ]
        unknown = [p for p in paths if p not in MUTABLE]
        if unknown:
            raise InvalidArgument(
                [
                    Violation("update_mask", f"{p!r} cannot be changed; these can: {', '.join(MUTABLE)}")
                    for p in unknown
                ]
            )
        if not paths:
            raise InvalidArgument([Violation("device", "changes nothing: set the fields to change")])
        _check(
            [v for v in checks.violations(device) if v.field.removeprefix("device.").split("[")[0] in paths]
        )
        changes: dict[str, Any] = {
            path: dict(device.labels) if path == "labels" else getattr(device, path) for path in paths
        }
        if "tier" in changes:
            changes["tier"] = changes["tier"] or device_pb2.DEVICE_TIER_DEVICE
        return await self._store.update(device_id, changes, device.version)

    @grpc_errors
    async def DeleteDevice(
        self, request: devices_service_pb2.DeleteDeviceRequest, context: Context
    ) -> empty_pb2.Empty:
        _admin(context)
        await self._store.delete(_device_id(request.device_id))
        return empty_pb2.Empty()

    @grpc_errors
    async def DisableDevice(
        self, request: devices_service_pb2.DisableDeviceRequest, context: Context
    ) -> device_pb2.Device:
        _admin(context)
        return await self._store.set_state(_device_id(request.device_id), device_pb2.DEVICE_STATE_DISABLED)

    @grpc_errors
    async def EnableDevice(
        self, request: devices_service_pb2.EnableDeviceRequest, context: Context
    ) -> device_pb2.Device:
        _admin(context)
        return await self._store.set_state(_device_id(request.device_id), device_pb2.DEVICE_STATE_ENABLED)


def _admin(context: Context) -> None:
    # A device's record says what it may write: changing one is an operator's (admin) act.
    caller(context.invocation_metadata(), "admin")


def _problems(request: devices_service_pb2.CreateDeviceRequest, prefix: str) -> list[Violation]:
    return checks.device_id_problems(request.device_id, f"{prefix}device_id") + checks.violations(
        request.device, f"{prefix}device."
    )


def _check(problems: list[Violation]) -> None:
    if problems:
        raise InvalidArgument(problems[:MAX_VIOLATIONS])


def _new(request: devices_service_pb2.CreateDeviceRequest) -> device_pb2.Device:
    device = device_pb2.Device()
    device.CopyFrom(request.device)
    device.device_id = request.device_id
    device.tier = device.tier or device_pb2.DEVICE_TIER_DEVICE
    return device


def _device_id(device_id: str) -> str:
    if not device_id:
        raise InvalidArgument([Violation("device_id", "is required, e.g. plant-7-boiler-1")])
    return device_id


def _labels(pairs: list[str] | Any) -> dict[str, str]:
    """ListDevicesRequest.labels: "key=value" each."""
    labels: dict[str, str] = {}
    for i, pair in enumerate(pairs):
        key, equals, value = pair.partition("=")
        if not key or not equals:
            raise InvalidArgument(
                [Violation(f"labels[{i}]", f"{pair[:80]!r} is not key=value, e.g. site=plant-7")]
            )
        labels[key] = value
    return labels
