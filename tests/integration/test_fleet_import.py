"""make devices ARGS="import fleet.csv": a fleet registered from a CSV file in batches, with progress;
each device's token written to a file of its own, and usable at once; an import run again registers
nothing twice; a bad file is refused naming its line and field, with nothing of its batch registered."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from metrics.v1 import device_pb2, devices_service_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from testkit.devices import delete_devices, listed
from tests import front_door
from tests.services import ROOT
from tests.target import Target

pb = devices_service_pb2
FLEET_SIZE = 2_500  # three batches of the importer's 1,000, the last one short


@pytest.fixture
def fleet() -> str:
    return f"imp-{uuid.uuid4().hex[:10]}-"


@pytest.fixture
async def devices(envoy_channel: grpc.aio.Channel, fleet: str) -> AsyncIterator[DevicesServiceStub]:
    stub = DevicesServiceStub(envoy_channel)
    yield stub
    await delete_devices(stub, fleet)


def run_import(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack.devices", "import", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


async def test_a_fleet_is_registered_from_a_csv_file_once_however_often_it_is_imported(
    devices: DevicesServiceStub, fleet: str, tmp_path: Path
) -> None:
    csv_file = tmp_path / "fleet.csv"
    lines = ["device_id,sensor_id_prefix,display_name,tier,labels"]
    lines += [f"{fleet}{i},{fleet}{i}-,Meter {i},{'gateway' if i % 10 == 0 else ''},site=s{i % 3};kind=meter"
              for i in range(FLEET_SIZE)]  # fmt: skip
    csv_file.write_text("\n".join(lines) + "\n")

    began = time.monotonic()
    first = run_import(str(csv_file))
    print(f"{FLEET_SIZE} devices imported in {time.monotonic() - began:.2f} s (the tool's start included)")
    assert first.returncode == 0, first.stderr
    assert "registered 1,000 of 2,500 devices" in first.stderr + first.stdout
    assert f"{FLEET_SIZE:,} registered, 0 already were" in first.stderr + first.stdout

    found = {d.device_id: d for d in await listed(devices, fleet)}
    assert len(found) == FLEET_SIZE
    sample = found[f"{fleet}20"]
    assert (sample.sensor_id_prefix, sample.display_name, sample.tier, dict(sample.labels)) == (
        f"{fleet}20-", "Meter 20", device_pb2.DEVICE_TIER_GATEWAY, {"site": "s2", "kind": "meter"},
    )  # fmt: skip
    assert found[f"{fleet}21"].tier == device_pb2.DEVICE_TIER_DEVICE

    # Run again with more devices: the new ones are registered, the others left as they are.
    csv_file.write_text("\n".join([*lines, f"{fleet}extra,,,,"]) + "\n")
    again = run_import(str(csv_file))
    assert again.returncode == 0, again.stderr
    assert f"1 registered, {FLEET_SIZE:,} already were" in again.stderr + again.stdout
    assert len(await listed(devices, fleet)) == FLEET_SIZE + 1
    assert (await devices.GetDevice(pb.GetDeviceRequest(device_id=f"{fleet}20"))).version == sample.version


async def test_each_device_gets_a_token_file_that_writes_its_sensors(
    devices: DevicesServiceStub, fleet: str, target: Target, tmp_path: Path
) -> None:
    csv_file = tmp_path / "fleet.csv"
    csv_file.write_text(f"device_id,sensor_id_prefix\n{fleet}a,{fleet}a-\n{fleet}b,{fleet}b-\n")
    folder = tmp_path / "tokens"
    done = run_import(str(csv_file), "--tokens", str(folder), "--ttl", "2h")
    assert done.returncode == 0, done.stderr
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{fleet}a.token", f"{fleet}b.token"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)

    device = await devices.GetDevice(pb.GetDeviceRequest(device_id=f"{fleet}a"))
    [credential] = device.credentials
    assert credential.expire_time.seconds - credential.create_time.seconds == 7200
    token = files[0].read_text().strip()
    async with front_door.channel(target) as channel:
        receiver = ReceiverServiceStub(channel)
        request = receiver_service_pb2.PushMetricsRequest(
            metrics=[metric_pb2.Metric(sensor_id=f"{fleet}a-1", metric_type="temperature", value=1.0)]
        )
        reply = await receiver.PushMetrics(request, metadata=front_door.bearer(token), timeout=10)
        assert reply.accepted_count == 1
        foreign = receiver_service_pb2.PushMetricsRequest(
            metrics=[metric_pb2.Metric(sensor_id=f"{fleet}b-1", metric_type="temperature", value=1.0)]
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await receiver.PushMetrics(foreign, metadata=front_door.bearer(token), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_bad_file_is_refused_by_line_and_field_and_its_batch_is_not_registered(
    devices: DevicesServiceStub, fleet: str, tmp_path: Path
) -> None:
    columns = tmp_path / "columns.csv"
    columns.write_text("device_id,colour\nx,red\n")
    refused = run_import(str(columns))
    assert refused.returncode == 1
    assert f"{columns}:1: unknown column(s) 'colour'" in refused.stderr

    fields = tmp_path / "fields.csv"
    fields.write_text(f"device_id,tier,labels\n{fleet}ok,,a=b\n{fleet}x,huge,nolabel\n")
    refused = run_import(str(fields))
    assert refused.returncode == 1
    assert f"{fields}:3: tier: 'huge' is not device or gateway" in refused.stderr
    assert f"{fields}:3: labels: 'nolabel' is not key=value" in refused.stderr

    # What only the registry checks, named by the line it came from.
    ids = tmp_path / "ids.csv"
    ids.write_text(f"device_id\n{fleet}ok\n{fleet}bad id\n")
    refused = run_import(str(ids))
    assert refused.returncode == 1
    assert f"{ids}:3: device_id: '{fleet}bad id' has characters other than" in refused.stderr
    assert await listed(devices, fleet) == []
