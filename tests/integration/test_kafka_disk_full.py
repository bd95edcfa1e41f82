"""Kafka's log disk full under load: the broker stops (Kafka halts when its only log directory
fails), the receiver refuses with UNAVAILABLE and says NOT_SERVING, and nothing it acknowledged is
lost: once there is room again and the broker is back, every acknowledged reading is in the topic.

The broker is a private one (single node, PLAINTEXT, on its own ports) whose log directory is a
small tmpfs, and a private receiver writes to it; the test fills the tmpfs with a file while the
load goes on, and deletes the file before starting the broker again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import records
from stack import prepare
from stack import settings as stack_settings
from tests.disks import fill, mount_tmpfs, unmount
from tests.helpers import eventually
from tests.services import ROOT, free_port, serving, start_service, stop_service

pytestmark = pytest.mark.alone

SETTINGS = stack_settings.load()
TMPFS_MB = 64
PARTITIONS = 4
SENSORS = 8
BATCH = 500
BROKER = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=4194304
log.index.size.max.bytes=1048576
message.max.bytes=67108864
"""


@dataclass
class Broker:
    folder: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        libs = prepare.paths(SETTINGS).kafka_libs
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["java", "-Xms256m", "-Xmx256m", *prepare.kafka_java_options(libs), "kafka.Kafka",
                 str(self.folder / "server.properties")],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A private broker whose log directory is a tmpfs of TMPFS_MB, with the metrics and devices
    topics; stopped and its tmpfs gone afterwards."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root")
    data = tmp_path / "kafka-logs"
    await asyncio.to_thread(mount_tmpfs, data, TMPFS_MB)
    port, controller_port = free_port(), free_port()
    broker = Broker(tmp_path, port, tmp_path / "kafka.log")
    try:
        properties = tmp_path / "server.properties"
        properties.write_text(BROKER.format(port=port, controller_port=controller_port, data=data))
        await asyncio.to_thread(_format, properties)
        broker.start()
        await eventually(lambda: _topics(broker), timeout=60, what="the private broker")
        yield broker
    finally:
        broker.stop()
        await asyncio.to_thread(unmount, data)


def _format(properties: Path) -> None:
    libs = prepare.paths(SETTINGS).kafka_libs
    subprocess.run(
        ["java", *prepare.kafka_java_options(libs), "kafka.tools.StorageTool", "format",
         "--cluster-id", prepare.kafka_cluster_id(), "--config", str(properties)],
        check=True, capture_output=True,
    )  # fmt: skip


async def _topics(broker: Broker) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        await admin.start()
        existing = await admin.list_topics()
        wanted = [
            NewTopic("metrics", PARTITIONS, 1),
            NewTopic("devices", 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ]
        await admin.create_topics([t for t in wanted if t.name not in existing])
    except Exception as error:
        raise AssertionError(f"the private broker: {error!r}") from None
    finally:
        await admin.close()


@dataclass
class Load:
    """SENSORS sensors, each sending batches of BATCH readings with times, in order, again and
    again until acknowledged, until `until` is set."""

    until: asyncio.Event
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acked: dict[str, int] = field(default_factory=dict)  # batches acknowledged, per sensor
    refused: dict[str, int] = field(default_factory=dict)  # by status
    first_refused_at: float = 0.0

    def request(self, sensor: str, b: int) -> receiver_service_pb2.PushMetricsRequest:
        metrics = []
        for i in range(b * BATCH, (b + 1) * BATCH):
            metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=i * 0.37 % 97)
            metric.reading_time.FromMicroseconds(1_700_000_000_000_000 + i)
            metrics.append(metric)
        return receiver_service_pb2.PushMetricsRequest(metrics=metrics)

    async def send(self, stub: ReceiverServiceStub, sensor: str) -> None:
        b = 0
        while not self.until.is_set():
            try:
                await stub.PushMetrics(self.request(sensor, b), timeout=10)
            except grpc.aio.AioRpcError as error:
                self.refused[error.code().name] = self.refused.get(error.code().name, 0) + 1
                self.first_refused_at = self.first_refused_at or time.monotonic()
                await asyncio.sleep(0.2)
                continue
            b += 1
            self.acked[sensor] = b

    @property
    def total(self) -> int:
        return sum(self.acked.values())


async def test_kafka_disk_full_refuses_with_unavailable_and_loses_nothing_acknowledged(
    broker: Broker, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")} | {
        "METRICS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "METRICS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "METRICS_RECEIVER_GRPC_PORT": str(port),
        "METRICS_RECEIVER_METRICS_PORT": "0",
        "METRICS_RECEIVER_WORKERS": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
    }
    log = tmp_path / "receiver.log"
    receiver = await start_service("receiver", env, log)
    until = asyncio.Event()
    load = Load(until)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
            stub = ReceiverServiceStub(channel)
            sensors = [f"kafka-full-{load.run}-{i}" for i in range(SENSORS)]
            senders = asyncio.gather(*(load.send(stub, s) for s in sensors))
            try:
                await eventually(lambda: _at_least(load, 200), timeout=60, what="200 batches acknowledged")
                filler = await asyncio.to_thread(fill, broker.folder / "kafka-logs")
                full_at, filled = load.total, time.monotonic()
                assert broker.process is not None
                await eventually(
                    lambda: _exited(broker), timeout=60, what="the broker stopped on the full disk"
                )
                assert "No space left on device" in broker.log.read_text(errors="replace")
                await eventually(lambda: _refused(load), timeout=30, what="a batch refused")
                await eventually(lambda: _health(channel, health_pb2.HealthCheckResponse.NOT_SERVING),
                                 timeout=30, what="the receiver NOT_SERVING")  # fmt: skip
                stalled = load.total
                print(f"disk full after {full_at} batches; the broker stopped; acknowledged meanwhile "
                      f"{stalled - full_at}; the first refusal {load.first_refused_at - filled:.1f} s after "
                      f"the disk filled; refused {load.refused}")  # fmt: skip
                filler.unlink()
                began = time.monotonic()
                broker.start()
                await eventually(lambda: _at_least(load, stalled + 200), timeout=120, what="ingest again")
                print(
                    f"room again: acknowledging again {time.monotonic() - began:.1f} s after the broker's start"
                )
            finally:
                until.set()
                await senders
    finally:
        code = await stop_service(receiver)
    assert code == 0, log.read_text()[-3000:]
    assert set(load.refused) <= {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}, load.refused
    stored = await _readings_in_topic(broker)
    for sensor, batches in load.acked.items():
        acknowledged = {1_700_000_000_000_000 + i for i in range(batches * BATCH)}
        missing = acknowledged - stored.get(sensor, set())
        assert not missing, f"{sensor}: {len(missing)} acknowledged readings not in Kafka"


async def _at_least(load: Load, batches: int) -> None:
    assert load.total >= batches, load.total


async def _exited(broker: Broker) -> None:
    assert broker.process is not None and broker.process.poll() is not None


async def _refused(load: Load) -> None:
    assert load.refused.get("UNAVAILABLE"), load.refused


async def _health(channel: grpc.aio.Channel, status: int) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == status, reply


async def _readings_in_topic(broker: Broker) -> dict[str, set[int]]:
    """Each sensor's reading times (microseconds) in the private metrics topic."""
    # From the beginning as the consumer's own reset (a seek right after assign() can be undone by
    # the reset to the end that assign() started).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition("metrics", p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        found: dict[str, set[int]] = {}
        remaining = {tp for tp in partitions if end[tp]}
        while remaining:
            for tp, items in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for record in items:
                    for metric in records.read_metric_batch(record).metrics:
                        found.setdefault(metric.sensor_id, set()).add(metric.reading_time.ToMicroseconds())
                if items and items[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        return found
    finally:
        await consumer.stop()
