"""The registry (DevicesService through Envoy): devices created one by one or 10,000 at once (all or
none), found by id prefix, labels and state, changed under optimistic concurrency, disabled and
enabled, deleted; each change on the compacted devices topic; bad requests refused naming the field;
the admin scope to change a device on the TLS port."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography import x509
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2, status_pb2

from metrics.v1 import device_pb2, devices_service_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import kafka
from testkit.devices import delete_devices
from testkit.http import http
from testkit.mqtt import SUCCESS, Device, Refused
from tests import front_door
from tests.helpers import eventually
from tests.target import Target

pb = devices_service_pb2
ENABLED, DISABLED = device_pb2.DEVICE_STATE_ENABLED, device_pb2.DEVICE_STATE_DISABLED
# A device's disabling reaches every receiver within this long of its acknowledgement (docs/devices.md).
REFUSED_WITHIN_S = 1.0


@pytest.fixture
async def devices(envoy_channel: grpc.aio.Channel) -> DevicesServiceStub:
    return DevicesServiceStub(envoy_channel)


@pytest.fixture
def fleet() -> str:
    """A device id prefix no other test uses."""
    return f"dev-{uuid.uuid4().hex[:12]}-"


@pytest.fixture
async def cleanup(devices: DevicesServiceStub, fleet: str) -> AsyncIterator[None]:
    """Deletes the test's devices afterwards, many at once."""
    yield
    await delete_devices(devices, fleet)


def new(device_id: str, **fields: Any) -> pb.CreateDeviceRequest:
    return pb.CreateDeviceRequest(device_id=device_id, device=device_pb2.Device(**fields))


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The field violations of an INVALID_ARGUMENT status."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(details, bytes), error
    found = []
    for detail in status_pb2.Status.FromString(details).details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            found += [(v.field, v.description) for v in request.field_violations]
    return found


async def topic_records(target: Target) -> list[tuple[str, bytes | None, list[tuple[str, bytes]]]]:
    """Every record of the devices topic, as a reader of it sees them: key, value, headers."""
    consumer = AIOKafkaConsumer(
        **kafka.client_options(target.kafka()), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition("devices", 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        records = []
        while await consumer.position(partition) < end:
            for batch in (await consumer.getmany(partition, timeout_ms=1000)).values():
                records += [(r.key.decode(), r.value, list(r.headers)) for r in batch if r.key is not None]
        return records
    finally:
        await consumer.stop()


def latest(
    records: list[tuple[str, bytes | None, list[tuple[str, bytes]]]], key: str
) -> device_pb2.Device | None:
    """The device the topic holds for `key` now (None: deleted, or never there)."""
    values = [value for k, value, _ in records if k == key]
    assert values, f"no record of {key} on the devices topic"
    return None if values[-1] is None else device_pb2.Device.FromString(values[-1])


@pytest.mark.usefixtures("cleanup")
async def test_a_device_is_created_found_changed_disabled_and_deleted_and_the_topic_follows(
    target: Target, devices: DevicesServiceStub, fleet: str
) -> None:
    device_id = f"{fleet}boiler-1"
    created = await devices.CreateDevice(
        new(
            device_id,
            display_name="Boiler 1",
            sensor_id_prefix=f"{fleet}boiler-1-",
            labels={"site": "plant-7"},
        )
    )
    assert (created.device_id, created.state, created.tier, created.version) == (
        device_id, ENABLED, device_pb2.DEVICE_TIER_DEVICE, 1,
    )  # fmt: skip
    assert created.create_time == created.update_time and created.create_time.seconds > time.time() - 60
    assert await devices.GetDevice(pb.GetDeviceRequest(device_id=device_id)) == created

    # Only the fields of the mask change; a version that is no longer current is refused.
    changed = await devices.UpdateDevice(pb.UpdateDeviceRequest(
        device_id=device_id, device=device_pb2.Device(labels={"site": "plant-8"}, display_name="ignored", version=1),
        update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
    ))  # fmt: skip
    assert (dict(changed.labels), changed.display_name, changed.version) == (
        {"site": "plant-8"},
        "Boiler 1",
        2,
    )
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await devices.UpdateDevice(pb.UpdateDeviceRequest(
            device_id=device_id, device=device_pb2.Device(display_name="Boiler one", version=1)
        ))  # fmt: skip
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert "version 2, not 1" in (stale.value.details() or "")

    disabled = await devices.DisableDevice(pb.DisableDeviceRequest(device_id=device_id))
    assert (disabled.state, disabled.version) == (DISABLED, 3)
    again = await devices.DisableDevice(pb.DisableDeviceRequest(device_id=device_id))
    assert again == disabled, "disabling a disabled device changes nothing"
    enabled = await devices.EnableDevice(pb.EnableDeviceRequest(device_id=device_id))
    assert (enabled.state, enabled.version) == (ENABLED, 4)

    records = await topic_records(target)
    assert latest(records, device_id) == enabled
    assert [value for key, value, _ in records if key == device_id] == [
        d.SerializeToString() for d in (created, changed, disabled, enabled)
    ], "each change once, in order"
    assert all(
        headers == [("message-type", b"metrics.v1.Device")] for key, _, headers in records if key == device_id
    )

    await devices.DeleteDevice(pb.DeleteDeviceRequest(device_id=device_id))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await devices.GetDevice(pb.GetDeviceRequest(device_id=device_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert latest(await topic_records(target), device_id) is None, "a deletion is a record without a value"
    # Its id may be given to a new device.
    reborn = await devices.CreateDevice(new(device_id))
    assert (reborn.state, reborn.display_name, dict(reborn.labels)) == (ENABLED, "", {})
    assert latest(await topic_records(target), device_id) == reborn


@pytest.mark.usefixtures("cleanup")
async def test_devices_are_listed_by_id_prefix_labels_and_state_in_pages(
    devices: DevicesServiceStub, fleet: str
) -> None:
    made = await devices.BatchCreateDevices(pb.BatchCreateDevicesRequest(requests=[
        new(f"{fleet}{i:02d}", labels={"site": f"plant-{i % 2}", "kind": "boiler" if i % 3 == 0 else "pump"})
        for i in range(10)
    ]))  # fmt: skip
    assert [d.device_id for d in made.devices] == [f"{fleet}{i:02d}" for i in range(10)]
    for i in (1, 4):
        await devices.DisableDevice(pb.DisableDeviceRequest(device_id=f"{fleet}{i:02d}"))

    async def listed(**filters: Any) -> list[str]:
        ids, token = [], ""
        while True:
            page = await devices.ListDevices(
                pb.ListDevicesRequest(device_id_prefix=fleet, page_size=3, page_token=token, **filters)
            )
            assert len(page.devices) <= 3
            ids += [d.device_id for d in page.devices]
            if not (token := page.next_page_token):
                return ids

    assert await listed() == [f"{fleet}{i:02d}" for i in range(10)]
    assert await listed(labels=["site=plant-0"]) == [f"{fleet}{i:02d}" for i in (0, 2, 4, 6, 8)]
    assert await listed(labels=["site=plant-0", "kind=boiler"]) == [f"{fleet}{i:02d}" for i in (0, 6)]
    assert await listed(state=DISABLED) == [f"{fleet}01", f"{fleet}04"]
    assert await listed(labels=["site=plant-1"], state=ENABLED) == [f"{fleet}{i:02d}" for i in (3, 5, 7, 9)]
    # A token of other filters is refused rather than giving a wrong page.
    first = await devices.ListDevices(pb.ListDevicesRequest(device_id_prefix=fleet, page_size=3))
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await devices.ListDevices(pb.ListDevicesRequest(device_id_prefix=fleet, state=DISABLED,
                                                        page_token=first.next_page_token))  # fmt: skip
    assert violations(other.value)[0][0] == "page_token"


@pytest.mark.usefixtures("cleanup")
async def test_a_batch_is_created_whole_or_not_at_all(
    target: Target, devices: DevicesServiceStub, fleet: str
) -> None:
    await devices.CreateDevice(new(f"{fleet}taken"))
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await devices.CreateDevice(new(f"{fleet}taken"))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(grpc.aio.AioRpcError) as batch:
        await devices.BatchCreateDevices(pb.BatchCreateDevicesRequest(
            requests=[new(f"{fleet}a"), new(f"{fleet}taken"), new(f"{fleet}b")]
        ))  # fmt: skip
    assert batch.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"'{fleet}taken'" in (batch.value.details() or "") and "nothing was created" in (
        batch.value.details() or ""
    )
    listed = await devices.ListDevices(pb.ListDevicesRequest(device_id_prefix=fleet))
    assert [d.device_id for d in listed.devices] == [f"{fleet}taken"]
    records = await topic_records(target)
    assert not [k for k, _, _ in records if k in (f"{fleet}a", f"{fleet}b")], (
        "nothing of a refused batch published"
    )

    # 10,000 at once.
    began = time.perf_counter()
    many = await devices.BatchCreateDevices(
        pb.BatchCreateDevicesRequest(
            requests=[new(f"{fleet}m{i:05d}", labels={"batch": "1"}) for i in range(10_000)]
        ),
        timeout=120,
    )
    print(f"\n10,000 devices created in {time.perf_counter() - began:.2f} s")
    assert len(many.devices) == 10_000 and {d.version for d in many.devices} == {1}
    records = await topic_records(target)
    assert len({k for k, v, _ in records if k.startswith(f"{fleet}m") and v is not None}) == 10_000


async def test_bad_requests_are_refused_naming_the_field(devices: DevicesServiceStub, fleet: str) -> None:
    cases = [
        (new(""), "device_id", "is required"),
        (new("no spaces"), "device_id", "has characters other than"),
        (new("x" * 129), "device_id", "more than 128"),
        (
            new(f"{fleet}1", sensor_id_prefix="bad prefix"),
            "device.sensor_id_prefix",
            "has characters other than",
        ),
        (new(f"{fleet}1", display_name="n" * 201), "device.display_name", "more than 200"),
        (new(f"{fleet}1", labels={"a=b": "c"}), "device.labels['a=b']", 'must not contain "="'),
        (new(f"{fleet}1", labels={f"k{i}": "v" for i in range(17)}), "device.labels", "more than 16"),
        (new(f"{fleet}1", tier=7), "device.tier", "not a DeviceTier"),  # type: ignore[arg-type]
    ]
    for request, field, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await devices.CreateDevice(request)
        found = violations(error.value)
        assert any(f == field and words in d for f, d in found), (field, found)
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await devices.BatchCreateDevices(
            pb.BatchCreateDevicesRequest(requests=[new(f"{fleet}1"), new(f"{fleet}1")])
        )
    assert violations(twice.value) == [("requests[1].device_id", f"'{fleet}1' is requests[0]'s too")]
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await devices.BatchCreateDevices(pb.BatchCreateDevicesRequest())
    assert violations(empty.value)[0][0] == "requests"
    with pytest.raises(grpc.aio.AioRpcError) as label:
        await devices.ListDevices(pb.ListDevicesRequest(labels=["site"]))
    assert violations(label.value) == [("labels[0]", "'site' is not key=value, e.g. site=plant-7")]
    with pytest.raises(grpc.aio.AioRpcError) as mask:
        await devices.UpdateDevice(pb.UpdateDeviceRequest(
            device_id=f"{fleet}1", device=device_pb2.Device(), update_mask=field_mask_pb2.FieldMask(paths=["state"])
        ))  # fmt: skip
    assert violations(mask.value)[0][0] == "update_mask"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await devices.DisableDevice(pb.DisableDeviceRequest(device_id=f"{fleet}none"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.usefixtures("cleanup")
async def test_http_json_routes_through_envoy(target: Target, fleet: str) -> None:
    url = f"{target.envoy_url}/v1/devices"
    status, body = await http("POST", f"{url}?deviceId={fleet}http-1", {
        "displayName": "Pump", "labels": {"site": "plant-7"}, "tier": "DEVICE_TIER_GATEWAY",
    })  # fmt: skip
    assert status == 200, body
    assert (body["deviceId"], body["state"], body["tier"], body["version"]) == (
        f"{fleet}http-1", "DEVICE_STATE_ENABLED", "DEVICE_TIER_GATEWAY", "1",
    )  # fmt: skip
    status, body = await http("POST", f"{url}:batchCreate", {"requests": [
        {"deviceId": f"{fleet}http-2", "device": {"labels": {"site": "plant-7"}}},
        {"deviceId": f"{fleet}http-3", "device": {"labels": {"site": "plant-9"}}},
    ]})  # fmt: skip
    assert status == 200, body
    status, body = await http("GET", f"{url}?deviceIdPrefix={fleet}&labels=site%3Dplant-7")
    assert status == 200, body
    assert [d["deviceId"] for d in body["devices"]] == [f"{fleet}http-1", f"{fleet}http-2"]
    status, body = await http("POST", f"{url}/{fleet}http-2:disable", {})
    assert (status, body["state"]) == (200, "DEVICE_STATE_DISABLED"), body
    status, body = await http("PATCH", f"{url}/{fleet}http-2?updateMask=displayName", {"displayName": "Two"})
    assert (status, body["displayName"], body["version"]) == (200, "Two", "3"), body
    status, body = await http("POST", f"{url}?deviceId={fleet}http-1", {})
    assert status == 409, body
    status, body = await http("POST", f"{url}?deviceId=bad%20id", {})
    assert status == 400, body
    assert any(v["field"] == "device_id" for d in body["details"] for v in d.get("fieldViolations", [])), body
    status, body = await http("DELETE", f"{url}/{fleet}http-3")
    assert status == 200, body
    status, body = await http("GET", f"{url}/{fleet}http-3")
    assert status == 404, body


@pytest.mark.usefixtures("cleanup")
async def test_changing_a_device_takes_the_admin_scope_on_the_tls_port(target: Target, fleet: str) -> None:
    reader = front_door.bearer(front_door.token(target, scopes=("read",)))
    admin = front_door.bearer(front_door.token(target, scopes=("admin", "read")))
    async with front_door.channel(target) as channel:
        stub = DevicesServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateDevice(new(f"{fleet}tls"), metadata=reader)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        created = await stub.CreateDevice(new(f"{fleet}tls"), metadata=admin)
        assert (
            await stub.GetDevice(pb.GetDeviceRequest(device_id=created.device_id), metadata=reader) == created
        )
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ListDevices(pb.ListDevicesRequest())
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.usefixtures("cleanup")
async def test_a_device_s_token_is_refused_within_a_second_of_its_disabling_or_revocation(
    target: Target, devices: DevicesServiceStub, fleet: str, db: Any
) -> None:
    device_id, sensor = f"{fleet}meter", f"{fleet}meter-1"
    await devices.CreateDevice(new(device_id, sensor_id_prefix=f"{fleet}meter-"))
    issued = await devices.IssueToken(
        pb.IssueTokenRequest(device_id=device_id, ttl=duration_pb2.Duration(seconds=600))
    )
    spare = await devices.IssueToken(pb.IssueTokenRequest(device_id=device_id))
    listed = await devices.GetDevice(pb.GetDeviceRequest(device_id=device_id))
    assert [c.credential_id for c in listed.credentials] == [
        issued.credential.credential_id,
        spare.credential.credential_id,
    ]
    assert issued.credential.kind == device_pb2.CREDENTIAL_KIND_TOKEN
    assert issued.credential.expire_time.seconds - issued.credential.create_time.seconds == 600
    assert spare.credential.expire_time.seconds - spare.credential.create_time.seconds == 3600
    assert issued.token.encode() not in listed.SerializeToString(), "a token is shown once, never listed"
    metadata, spare_metadata = front_door.bearer(issued.token), front_door.bearer(spare.token)

    def reading(value: float, sensor_id: str = sensor) -> metric_pb2.Metric:
        return metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=value)

    async def http_push(value: float) -> tuple[int, Any]:
        body = {"metrics": [{"sensorId": sensor, "metricType": "temperature", "value": value}]}
        return await http("POST", f"{target.envoy_tls_url}/v1/metrics:push", body,
                          headers=front_door.auth(issued.token), tls=front_door.tls_context(target))  # fmt: skip

    async def when_applied(acknowledged: float) -> None:
        """The documented bound of a change: waited out, then what it promises is checked."""
        await asyncio.sleep(max(0.0, acknowledged + REFUSED_WITHIN_S - time.monotonic()))

    async with front_door.channel(target) as channel:
        receiver = ReceiverServiceStub(channel)

        async def push(value: float, sensor_id: str = sensor, token: Any = metadata) -> int:
            request = receiver_service_pb2.PushMetricsRequest(metrics=[reading(value, sensor_id)])
            return (await receiver.PushMetrics(request, metadata=token, timeout=10)).accepted_count

        assert await push(1.0) == 1
        assert await http_push(1.1) == (200, {"acceptedCount": 1})
        stream = receiver.SyncMetrics(metadata=metadata, timeout=30)
        await stream.write(receiver_service_pb2.SyncMetricsRequest(sequence=1, metrics=[reading(1.2)]))
        assert (await stream.read()).accepted_count == 1
        # The device's sensors are the registry's to say, whatever its token names.
        await devices.UpdateDevice(pb.UpdateDeviceRequest(
            device_id=device_id, device=device_pb2.Device(sensor_id_prefix=sensor)
        ))  # fmt: skip
        await when_applied(time.monotonic())
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await push(9.0, f"{fleet}meter-2")
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"device '{device_id}' may not write sensor '{fleet}meter-2'" in (
            foreign.value.details() or ""
        )

        await devices.DisableDevice(pb.DisableDeviceRequest(device_id=device_id))
        await when_applied(time.monotonic())
        disabled = f"device '{device_id}' is disabled: its credentials are refused"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await push(3.0)
        assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, disabled)
        status, body = await http_push(3.1)
        assert (status, body["message"]) == (401, disabled)
        # The stream opened before: its next batch is refused, the stream stays open.
        await stream.write(receiver_service_pb2.SyncMetricsRequest(sequence=2, metrics=[reading(3.2)]))
        answer = await stream.read()
        assert (answer.sequence, answer.accepted_count, answer.status.message) == (2, 0, disabled)

        await devices.EnableDevice(pb.EnableDeviceRequest(device_id=device_id))
        await when_applied(time.monotonic())
        assert await push(2.0) == 1
        await stream.write(receiver_service_pb2.SyncMetricsRequest(sequence=3, metrics=[reading(2.1)]))
        assert (await stream.read()).accepted_count == 1

        # One credential revoked: it is refused, the device's other one is not.
        await devices.DeleteCredential(pb.DeleteCredentialRequest(
            device_id=device_id, credential_id=issued.credential.credential_id
        ))  # fmt: skip
        await when_applied(time.monotonic())
        revoked = (
            f"credential '{issued.credential.credential_id}' of device '{device_id}' is revoked or expired"
        )
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await push(4.0)
        assert (gone.value.code(), gone.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, revoked)
        await stream.write(receiver_service_pb2.SyncMetricsRequest(sequence=4, metrics=[reading(4.1)]))
        assert (await stream.read()).status.message == revoked
        await stream.done_writing()
        assert await push(2.2, token=spare_metadata) == 1
        with pytest.raises(grpc.aio.AioRpcError) as twice:
            await devices.DeleteCredential(pb.DeleteCredentialRequest(
                device_id=device_id, credential_id=issued.credential.credential_id
            ))  # fmt: skip
        assert twice.value.code() == grpc.StatusCode.NOT_FOUND

        # Deleted: every credential of the device refused.
        await devices.DeleteDevice(pb.DeleteDeviceRequest(device_id=device_id))
        await when_applied(time.monotonic())
        with pytest.raises(grpc.aio.AioRpcError) as deleted:
            await push(5.0, token=spare_metadata)
        assert deleted.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "is not registered" in (deleted.value.details() or "")

    async def stored() -> None:
        values = await db.fetch("SELECT value FROM readings WHERE sensor_id = $1 ORDER BY value", sensor)
        assert [r["value"] for r in values] == [1.0, 1.1, 1.2, 2.0, 2.1, 2.2]

    await eventually(stored, what="the accepted readings, and none of the refused")


async def test_a_token_is_issued_only_for_a_device_and_a_ttl_in_range(
    devices: DevicesServiceStub, fleet: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await devices.IssueToken(pb.IssueTokenRequest(device_id=f"{fleet}none"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for seconds in (59, 366 * 86_400 + 1):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await devices.IssueToken(
                pb.IssueTokenRequest(device_id=f"{fleet}none", ttl=duration_pb2.Duration(seconds=seconds))
            )
        assert violations(bad.value)[0][0] == "ttl"


async def test_a_device_s_certificate_writes_its_sensors_until_it_is_revoked(
    target: Target, devices: DevicesServiceStub, fleet: str, tmp_path: Path
) -> None:
    device_id, sensor = f"{fleet}valve", f"{fleet}valve-1"
    await devices.CreateDevice(new(device_id, sensor_id_prefix=f"{fleet}valve-"))
    issued = await devices.IssueCertificate(
        pb.IssueCertificateRequest(device_id=device_id, ttl=duration_pb2.Duration(seconds=86_400))
    )
    certificate = x509.load_pem_x509_certificate(issued.certificate.encode())
    [uri] = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uri == f"urn:metrics:device:{device_id}/{issued.credential.credential_id}"
    assert issued.credential.kind == device_pb2.CREDENTIAL_KIND_CERTIFICATE
    assert issued.credential.expire_time.seconds - issued.credential.create_time.seconds == 86_400
    assert issued.ca_certificate.encode() == front_door.ca_file(target).read_bytes()
    listed = await devices.GetDevice(pb.GetDeviceRequest(device_id=device_id))
    assert [c.credential_id for c in listed.credentials] == [issued.credential.credential_id]
    assert issued.private_key.encode() not in listed.SerializeToString(), "a key is shown once, never listed"
    cert, key = tmp_path / "valve.pem", tmp_path / "valve-key.pem"
    cert.write_text(issued.certificate)
    key.write_text(issued.private_key)

    def batch(sensor_id: str) -> receiver_service_pb2.PushMetricsRequest:
        return receiver_service_pb2.PushMetricsRequest(
            metrics=[metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=1.0)]
        )

    async with front_door.device_channel(target, cert, key) as channel:
        receiver = ReceiverServiceStub(channel)
        assert (await receiver.PushMetrics(batch(sensor), timeout=10)).accepted_count == 1
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await receiver.PushMetrics(batch(f"{fleet}pump-1"), timeout=10)
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED

        await devices.DeleteCredential(
            pb.DeleteCredentialRequest(device_id=device_id, credential_id=issued.credential.credential_id)
        )
        revoked = time.monotonic()
        await asyncio.sleep(max(0.0, revoked + REFUSED_WITHIN_S - time.monotonic()))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await receiver.PushMetrics(batch(sensor), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert f"credential '{issued.credential.credential_id}' of device '{device_id}' is revoked" in (
            refused.value.details() or ""
        )
    # Over HTTP/JSON too, with curl's own TLS.
    curl = await asyncio.create_subprocess_exec(
        "curl", "-s", "--cacert", str(front_door.ca_file(target)), "--cert", str(cert), "--key", str(key),
        f"{target.envoy_tls_url}/v1/metrics:push", "-d",
        json.dumps({"metrics": [{"sensorId": sensor, "metricType": "temperature", "value": 2}]}),
        "-w", "\n%{http_code}", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(curl.communicate(), 30)
    body, status = out.decode().rsplit("\n", 1)
    assert status == "401", out
    assert "is revoked or expired" in json.loads(body)["message"]


async def test_a_certificate_is_issued_only_for_a_device_and_a_ttl_in_range(
    devices: DevicesServiceStub, fleet: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await devices.IssueCertificate(pb.IssueCertificateRequest(device_id=f"{fleet}none"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await devices.IssueCertificate(
            pb.IssueCertificateRequest(device_id=f"{fleet}none", ttl=duration_pb2.Duration(seconds=59))
        )
    assert violations(bad.value)[0][0] == "ttl"


async def test_a_device_s_mqtt_account_is_cut_off_within_a_second_of_its_disabling_or_revocation(
    target: Target, devices: DevicesServiceStub, fleet: str
) -> None:
    device_id = f"{fleet}meter"  # no prefix: it publishes its own sensor, metrics/v1/<its id>
    await devices.CreateDevice(new(device_id))
    ca = front_door.ca_file(target)
    made = await devices.SetMqttPassword(pb.SetMqttPasswordRequest(device_id=device_id))
    assert (made.username, len(made.password)) == (device_id, 32)
    assert made.credential.kind == device_pb2.CREDENTIAL_KIND_MQTT_PASSWORD
    listed = await devices.GetDevice(pb.GetDeviceRequest(device_id=device_id))
    assert [c.credential_id for c in listed.credentials] == [made.credential.credential_id]
    assert made.password.encode() not in listed.SerializeToString(), "a password is shown once, never listed"

    async def connected(password: str) -> Device:
        device = Device(target.mqtt_tls_port, device_id, password, ca)
        await device.connect()
        return device

    async def cut_off(device: Device, acknowledged: float) -> None:
        """The connection ends within the documented bound of the acknowledgement."""
        assert await asyncio.to_thread(device.disconnected.wait, REFUSED_WITHIN_S), "still connected"
        print(f"disconnected {time.monotonic() - acknowledged:.3f} s after the acknowledgement")
        await device.close()

    async def refused(password: str) -> None:
        with pytest.raises(Refused, match=r"^Not authorized$"):
            await (await connected(password)).close()

    meter = await connected(made.password)
    assert await meter.publish(f"metrics/v1/{device_id}", '{"temperature": 1}') == SUCCESS
    await devices.DisableDevice(pb.DisableDeviceRequest(device_id=device_id))
    await cut_off(meter, time.monotonic())
    await refused(made.password)

    await devices.EnableDevice(pb.EnableDeviceRequest(device_id=device_id))
    meter = await connected(made.password)
    assert await meter.publish(f"metrics/v1/{device_id}", '{"temperature": 2}') == SUCCESS
    await meter.close()

    # A new password replaces the old one: one MQTT credential at a time.
    chosen = "correct-horse-battery-staple-7"
    renewed = await devices.SetMqttPassword(pb.SetMqttPasswordRequest(device_id=device_id, password=chosen))
    assert renewed.password == chosen
    listed = await devices.GetDevice(pb.GetDeviceRequest(device_id=device_id))
    assert [c.credential_id for c in listed.credentials] == [renewed.credential.credential_id]
    await refused(made.password)
    meter = await connected(chosen)
    await devices.DeleteCredential(
        pb.DeleteCredentialRequest(device_id=device_id, credential_id=renewed.credential.credential_id)
    )
    await cut_off(meter, time.monotonic())
    await refused(chosen)

    with pytest.raises(grpc.aio.AioRpcError) as short:
        await devices.SetMqttPassword(pb.SetMqttPasswordRequest(device_id=device_id, password="too short"))
    assert violations(short.value) == [
        ("password", "must be 16 to 128 printable ASCII characters without spaces")
    ]


@pytest.mark.usefixtures("cleanup")
async def test_a_device_s_last_reading_and_mqtt_connection_are_on_it_and_silent_ones_are_found(
    target: Target, devices: DevicesServiceStub, envoy_channel: grpc.aio.Channel, fleet: str
) -> None:
    meter, gateway = f"{fleet}meter", f"{fleet}gw"
    await devices.CreateDevice(new(meter))
    await devices.CreateDevice(new(gateway, sensor_id_prefix=f"{fleet}gw-"))
    found = await devices.GetDevice(pb.GetDeviceRequest(device_id=meter))
    assert not found.HasField("last_seen_time") and not found.mqtt_connected

    async def silent_since(seconds: float) -> list[str]:
        request = pb.ListDevicesRequest(device_id_prefix=fleet)
        request.silent_since_time.FromMicroseconds(int(seconds * 1_000_000))
        return [d.device_id for d in (await devices.ListDevices(request)).devices]

    began = time.time()
    assert await silent_since(began) == [gateway, meter], "never heard: silent since any time"

    # The gateway's sensors report an hour ago: its last reading's time, whichever sensor sent it.
    hour_ago_us = int((began - 3600) * 1_000_000)
    push = receiver_service_pb2.PushMetricsRequest()
    for n, sensor in enumerate((f"{fleet}gw-1", f"{fleet}gw-2")):
        metric = push.metrics.add(sensor_id=sensor, metric_type="temperature", value=n)
        metric.reading_time.FromMicroseconds(hour_ago_us + n * 1_000_000)
    assert (await ReceiverServiceStub(envoy_channel).PushMetrics(push, timeout=10)).accepted_count == 2

    async def gateway_heard() -> None:
        heard = await devices.GetDevice(pb.GetDeviceRequest(device_id=gateway))
        assert heard.last_seen_time.ToMicroseconds() == hour_ago_us + 1_000_000

    await eventually(gateway_heard, what="the gateway's last reading on it")

    # The meter connects over MQTT and reports now.
    made = await devices.SetMqttPassword(pb.SetMqttPasswordRequest(device_id=meter))
    device = Device(target.mqtt_tls_port, meter, made.password, front_door.ca_file(target))
    await device.connect()

    async def meter_connected() -> device_pb2.Device:
        found = await devices.GetDevice(pb.GetDeviceRequest(device_id=meter))
        assert found.mqtt_connected and found.mqtt_connect_time.ToMicroseconds() >= int(began * 1_000_000)
        return found

    await eventually(meter_connected, what="the meter's MQTT connection on it")
    listed = await devices.ListDevices(pb.ListDevicesRequest(device_id_prefix=fleet))
    assert [(d.device_id, d.mqtt_connected) for d in listed.devices] == [(gateway, False), (meter, True)]
    assert await device.publish(f"metrics/v1/{meter}", '{"temperature": 21.5}') == SUCCESS

    async def meter_heard() -> None:
        heard = await devices.GetDevice(pb.GetDeviceRequest(device_id=meter))
        assert heard.last_seen_time.ToMicroseconds() >= int(began * 1_000_000)

    await eventually(meter_heard, what="the meter's MQTT reading on it")
    assert await silent_since(began) == [gateway]
    assert await silent_since(began - 1800) == [gateway]
    assert await silent_since(began - 7200) == []
    # A device's record on the devices topic has none of it: it changes with every reading.
    assert not latest(await topic_records(target), meter).HasField("last_seen_time")

    # Gone however it goes: closed by the device, or cut off by the broker when it is disabled.
    await device.close()

    async def meter_gone() -> None:
        assert not (await devices.GetDevice(pb.GetDeviceRequest(device_id=meter))).mqtt_connected

    await eventually(meter_gone, what="the meter's closed connection off it")
    device = Device(target.mqtt_tls_port, meter, made.password, front_door.ca_file(target))
    await device.connect()
    await eventually(meter_connected, what="the meter's new MQTT connection on it")
    await devices.DisableDevice(pb.DisableDeviceRequest(device_id=meter))
    assert await asyncio.to_thread(device.disconnected.wait, 10), "the broker did not cut the meter off"
    await device.close()
    await eventually(meter_gone, what="the cut-off connection off it")
