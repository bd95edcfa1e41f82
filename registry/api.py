"""DevicesService: the registry of the fleet's devices (routed by Envoy to here)."""

from __future__ import annotations

import datetime
import re
import secrets
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf import empty_pb2

from metrics.v1 import device_pb2, devices_service_pb2, devices_service_pb2_grpc
from registry import checks
from registry.mqtt_accounts import MqttAccounts, has_password
from registry.store import MUTABLE, DeviceStore
from runtime import paging, tokens
from runtime.certificates import CertificateAuthority
from runtime.errors import FailedPrecondition, InvalidArgument, Violation, grpc_errors
from runtime.identity import REGISTERED_DEVICE_URI_PREFIX, caller
from runtime.validation import MAX_VIOLATIONS

SERVICE = devices_service_pb2.DESCRIPTOR.services_by_name["DevicesService"]
Context = grpc.aio.ServicerContext[Any, Any]
MAX_BATCH = 10_000
STATES = (device_pb2.DEVICE_STATE_ENABLED, device_pb2.DEVICE_STATE_DISABLED)
# A device's tier as a token names it (runtime/identity.py's TIERS).
TIER_NAMES = {device_pb2.DEVICE_TIER_DEVICE: "device", device_pb2.DEVICE_TIER_GATEWAY: "gateway"}
MIN_TTL_S, DEFAULT_TTL_S, MAX_TTL_S = 60, 3600, 366 * 86_400
DEFAULT_CERTIFICATE_TTL_S = MAX_TTL_S  # a device's certificate is installed once, not fetched hourly
MQTT_PASSWORD = re.compile(r"[!-~]{16,128}")


class DevicesApi(devices_service_pb2_grpc.DevicesServiceServicer):
    """`token_keys`: the folder of the keys that sign tokens, `ca` the CA that signs certificates
    (registry/settings.py); None: none."""

    def __init__(
        self,
        store: DeviceStore,
        token_keys: Path | None,
        ca: CertificateAuthority | None = None,
        mqtt: MqttAccounts | None = None,
    ) -> None:
        self._store = store
        self._token_keys = token_keys
        self._ca = ca
        self._mqtt = mqtt or MqttAccounts([])

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
        silent_since = (
            request.silent_since_time.ToMicroseconds() if request.HasField("silent_since_time") else None
        )
        digest = paging.filters_digest(
            "devices", request.device_id_prefix, sorted(labels.items()), request.state,
            *(() if silent_since is None else (silent_since,)),
        )  # fmt: skip
        position = paging.decode(request.page_token, digest, 1)
        devices = await self._store.page(
            request.device_id_prefix, labels, request.state, position[0] if position else None, size + 1,
            silent_since,
        )  # fmt: skip
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
        updated = await self._store.update(device_id, changes, device.version)
        if "sensor_id_prefix" in changes and has_password(updated):
            await self._mqtt.follow(device_id, updated, roles=True)
        return updated

    @grpc_errors
    async def DeleteDevice(
        self, request: devices_service_pb2.DeleteDeviceRequest, context: Context
    ) -> empty_pb2.Empty:
        _admin(context)
        device_id = _device_id(request.device_id)
        if device_pb2.CREDENTIAL_KIND_MQTT_PASSWORD in await self._store.delete(device_id):
            await self._mqtt.follow(device_id, None)  # the account deleted: disconnected
        return empty_pb2.Empty()

    @grpc_errors
    async def DisableDevice(
        self, request: devices_service_pb2.DisableDeviceRequest, context: Context
    ) -> device_pb2.Device:
        _admin(context)
        device = await self._store.set_state(_device_id(request.device_id), device_pb2.DEVICE_STATE_DISABLED)
        if has_password(device):
            await self._mqtt.follow(device.device_id, device)  # disconnected at once
        return device

    @grpc_errors
    async def EnableDevice(
        self, request: devices_service_pb2.EnableDeviceRequest, context: Context
    ) -> device_pb2.Device:
        _admin(context)
        device = await self._store.set_state(_device_id(request.device_id), device_pb2.DEVICE_STATE_ENABLED)
        if has_password(device):
            await self._mqtt.follow(device.device_id, device)
        return device

    @grpc_errors
    async def IssueToken(
        self, request: devices_service_pb2.IssueTokenRequest, context: Context
    ) -> devices_service_pb2.IssueTokenResponse:
        _admin(context)
        device_id = _device_id(request.device_id)
        ttl_s = _ttl_s(request)
        key, kid = self._signing_key()
        device, credential_id = await self._store.issue(
            device_id, device_pb2.CREDENTIAL_KIND_TOKEN, ttl_s * 1_000_000
        )
        [credential] = [c for c in device.credentials if c.credential_id == credential_id]
        token = tokens.mint(
            key, kid, scopes=["ingest"], sensors=[device.sensor_id_prefix or device_id], ttl_s=ttl_s,
            tier=TIER_NAMES[device.tier], subject=f"device:{device_id}", device=device_id,
            token_id=credential_id,
        )  # fmt: skip
        return devices_service_pb2.IssueTokenResponse(token=token, credential=credential)

    @grpc_errors
    async def IssueCertificate(
        self, request: devices_service_pb2.IssueCertificateRequest, context: Context
    ) -> devices_service_pb2.IssueCertificateResponse:
        _admin(context)
        device_id = _device_id(request.device_id)
        ttl_s = _ttl_s(request, DEFAULT_CERTIFICATE_TTL_S)
        if self._ca is None:
            raise FailedPrecondition(
                "this registry has no CA to sign certificates with (METRICS_REGISTRY_CA_CERTIFICATE_FILE "
                "and METRICS_REGISTRY_CA_PRIVATE_KEY_FILE)"
            )
        device, credential_id = await self._store.issue(
            device_id, device_pb2.CREDENTIAL_KIND_CERTIFICATE, ttl_s * 1_000_000
        )
        [credential] = [c for c in device.credentials if c.credential_id == credential_id]
        # The URI names the device and the credential (runtime/identity.py reads it through Envoy).
        uri = x509.UniformResourceIdentifier(f"{REGISTERED_DEVICE_URI_PREFIX}{device_id}/{credential_id}")
        certificate, key = self._ca.issue(
            f"device {device_id}", [uri], ExtendedKeyUsageOID.CLIENT_AUTH, datetime.timedelta(seconds=ttl_s)
        )
        return devices_service_pb2.IssueCertificateResponse(
            certificate=certificate.decode(), private_key=key.decode(),
            ca_certificate=self._ca.certificate_pem.decode(), credential=credential,
        )  # fmt: skip

    @grpc_errors
    async def DeleteCredential(
        self, request: devices_service_pb2.DeleteCredentialRequest, context: Context
    ) -> empty_pb2.Empty:
        _admin(context)
        if not request.credential_id:
            raise InvalidArgument([Violation("credential_id", "is required, e.g. c-0123456789abcdef")])
        device, kind = await self._store.revoke(_device_id(request.device_id), request.credential_id)
        if kind == device_pb2.CREDENTIAL_KIND_MQTT_PASSWORD:
            await self._mqtt.follow(device.device_id, device)  # the account deleted: disconnected
        return empty_pb2.Empty()

    @grpc_errors
    async def SetMqttPassword(
        self, request: devices_service_pb2.SetMqttPasswordRequest, context: Context
    ) -> devices_service_pb2.SetMqttPasswordResponse:
        _admin(context)
        device_id = _device_id(request.device_id)
        password = request.password or secrets.token_urlsafe(24)
        if not MQTT_PASSWORD.fullmatch(password):
            raise InvalidArgument(
                [Violation("password", "must be 16 to 128 printable ASCII characters without spaces")]
            )
        if not self._mqtt.configured:
            raise FailedPrecondition("this registry knows no MQTT broker (METRICS_REGISTRY_MQTT_BROKERS)")
        device = await self._store.get(device_id)
        # The brokers first: a password the registry lists works. (Should storing it fail after, the
        # account without a live password is deleted at the next start.)
        await self._mqtt.set_password(device, password)
        device, credential_id = await self._store.issue(
            device_id, device_pb2.CREDENTIAL_KIND_MQTT_PASSWORD, None, replace=True
        )
        [credential] = [c for c in device.credentials if c.credential_id == credential_id]
        return devices_service_pb2.SetMqttPasswordResponse(
            username=device_id, password=password, credential=credential
        )

    def _signing_key(self) -> tuple[Path, str]:
        """The newest key of the folder, and its id."""
        keys = sorted(self._token_keys.glob("*.pem")) if self._token_keys is not None else []
        if not keys:
            raise FailedPrecondition(
                "this registry has no key to sign tokens with (METRICS_REGISTRY_TOKEN_KEYS_DIR)"
            )
        return keys[-1], keys[-1].stem


def _ttl_s(
    request: devices_service_pb2.IssueTokenRequest | devices_service_pb2.IssueCertificateRequest,
    default: int = DEFAULT_TTL_S,
) -> int:
    if not request.HasField("ttl"):
        return default
    ttl = request.ttl
    if ttl.nanos or not MIN_TTL_S <= ttl.seconds <= MAX_TTL_S:
        raise InvalidArgument(
            [Violation("ttl", f"must be whole seconds from {MIN_TTL_S}s to {MAX_TTL_S}s (366 days)")]
        )
    return int(ttl.seconds)


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
