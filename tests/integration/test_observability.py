"""What operators watch: every service's Prometheus series (docs/metrics-and-alerts.md) exist and move when
readings flow, by reason where they have one; Prometheus scrapes every part of the stack and has
loaded the pipeline's recording and alerting rules."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime.kafka import client_options
from testkit.http import http
from testkit.reported import Samples, scrape
from tests.helpers import eventually
from tests.target import Target

# The local stack runs Prometheus and serves the services' metrics; the compose deployment does not yet.
pytestmark = pytest.mark.local_stack


# What each service exports from the start (series with labels appear with their first value).
SERIES = {
    "receiver": {
        "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
        "metrics_receiver_readings_accepted_total", "metrics_receiver_readings_refused_total",
        "metrics_receiver_ack_seconds_bucket", "metrics_receiver_kafka_produce_seconds_bucket",
        "metrics_receiver_admission_wait_seconds_bucket", "metrics_receiver_readings_in_flight",
        "metrics_receiver_readings_waiting",
    },
    "processor": {
        "grpc_server_handled_total", "metrics_processor_readings_total", "metrics_processor_events_total",
        "metrics_processor_round_seconds_bucket", "metrics_consumer_lag",
    },
    "saver": {
        "grpc_server_handled_total", "metrics_saver_rows_total", "metrics_saver_transaction_seconds_bucket",
        "metrics_consumer_lag",
    },
    "assessor": {"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket"},
    "notifier": {
        "grpc_server_handled_total", "metrics_notifier_events_total", "metrics_notifier_deliveries_queued_total",
        "metrics_notifier_delivery_seconds_bucket", "metrics_notifier_retries_total",
        "metrics_notifier_pending_deliveries", "metrics_notifier_attempts_in_flight", "metrics_consumer_lag",
    },
    "registry": {"grpc_server_started_total", "grpc_server_handled_total"},
    "bridge": {
        "grpc_server_handled_total", "metrics_bridge_messages_in_flight", "metrics_bridge_writes_retried_total",
        "metrics_bridge_readings_total", "metrics_bridge_acknowledged_total", "metrics_bridge_ack_seconds_bucket",
        "metrics_mqtt_broker",
    },
}  # fmt: skip
JOBS = {"receiver", "processor", "saver", "assessor", "notifier", "bridge", "registry", "envoy", "kafka", "postgres",
        "redis", "prometheus"}  # fmt: skip
ALERTS = {
    "MetricsTargetDown",
    "MetricsRedisDown",
    "MetricsKafkaUnderMinIsr",
    "MetricsConsumerLagGrowing",
    "MetricsDeadLettersGrowing",
    "MetricsReceiverRefusing",
    "MetricsAckLatencyHigh",
    "MetricsWebhooksDeadLettered",
}
PUSH = {"grpc_service": "metrics.v1.ReceiverService", "grpc_method": "PushMetrics"}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` that have `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


async def query(target: Target, expression: str) -> list[dict[str, object]]:
    url = f"http://{target.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    status, body = await http("GET", url)
    assert status == 200, body
    return body["data"]["result"]  # type: ignore[no-any-return]


def readings(sensor: str, *values: float) -> receiver_service_pb2.PushMetricsRequest:
    return receiver_service_pb2.PushMetricsRequest(
        metrics=[metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=v) for v in values]
    )


async def test_every_service_exports_its_series(
    target: Target, receiver: ReceiverServiceStub, sensor_id: str
) -> None:
    await receiver.PushMetrics(readings(sensor_id, 20.0), timeout=30)
    for service, names in SERIES.items():
        # A call of each (labelled series appear with their first value), as a load balancer's.
        async with grpc.aio.insecure_channel(target.services[service]) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)

        async def exported(service: str = service, names: set[str] = names) -> None:
            present = {name for name, _ in await scrape(target.metrics[service])}
            assert names <= present, f"{service} lacks {sorted(names - present)}"

        # A consumer reports its lag once it holds partitions: seconds after a restart.
        await eventually(exported, timeout=15, what=f"{service}'s series")


async def test_counts_move_when_readings_flow(
    target: Target, receiver: ReceiverServiceStub, sensor_id: str
) -> None:
    before = {service: await scrape(address) for service, address in target.metrics.items()}
    # Five readings, the last three at or over the default rule's threshold: one event.
    await receiver.PushMetrics(readings(sensor_id, 20.0, 21.0, 95.0, 96.0, 97.0), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await receiver.PushMetrics(readings("", 20.0), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The original system's route refuses a reading of its own before it is a batch: counted too.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        legacy = receiver_service_pb2.RecordLegacyMeasurementRequest(
            sensor_uuid=sensor_id, temperature=1.0, at=-1
        )
        await receiver.RecordLegacyMeasurement(legacy, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def moved() -> None:
        now = {service: await scrape(address) for service, address in target.metrics.items()}

        def grew(service: str, name: str, **labels: str) -> float:
            return value(now[service], name, **labels) - value(before[service], name, **labels)

        assert grew("receiver", "metrics_receiver_readings_accepted_total") == 5
        assert grew("receiver", "metrics_receiver_readings_refused_total", reason="invalid") == 2
        assert grew("receiver", "grpc_server_handled_total", **PUSH, grpc_code="OK") == 1
        assert grew("receiver", "grpc_server_handled_total", **PUSH, grpc_code="INVALID_ARGUMENT") == 1
        assert grew("receiver", "metrics_receiver_ack_seconds_count") == 3
        assert grew("receiver", "metrics_receiver_kafka_produce_seconds_count") >= 1
        assert grew("processor", "metrics_processor_readings_total") >= 5
        assert grew("processor", "metrics_processor_events_total") >= 1
        assert grew("saver", "metrics_saver_rows_total", table="readings") >= 5
        assert grew("saver", "metrics_saver_rows_total", table="events") >= 1

    await eventually(moved, timeout=30, what="the counters to move")


async def test_streams_count_their_messages(
    target: Target, receiver: ReceiverServiceStub, sensor_id: str
) -> None:
    sync = {
        "grpc_service": "metrics.v1.ReceiverService",
        "grpc_method": "SyncMetrics",
        "grpc_type": "bidi_stream",
    }
    before = await scrape(target.metrics["receiver"])

    async def batches() -> AsyncIterator[receiver_service_pb2.SyncMetricsRequest]:
        for sequence in range(3):
            yield receiver_service_pb2.SyncMetricsRequest(
                sequence=sequence, metrics=readings(sensor_id, 1.0).metrics
            )

    acks = [ack async for ack in receiver.SyncMetrics(batches(), timeout=30)]
    assert [a.accepted_count for a in acks] == [1, 1, 1]
    after = await scrape(target.metrics["receiver"])
    for name, grew in [
        ("grpc_server_msg_received_total", 3),
        ("grpc_server_msg_sent_total", 3),
        ("grpc_server_started_total", 1),
        ("metrics_receiver_readings_accepted_total", 3),
    ]:
        labels = sync if name.startswith("grpc") else {}
        assert value(after, name, **labels) - value(before, name, **labels) == grew, name
    assert (
        value(after, "grpc_server_handled_total", **sync, grpc_code="OK")
        - value(before, "grpc_server_handled_total", **sync, grpc_code="OK")
        == 1
    )


async def test_dead_letters_are_counted_by_reason(target: Target, sensor_id: str) -> None:
    before = {s: await scrape(target.metrics[s]) for s in ("processor", "saver")}
    producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
    await producer.start()
    try:  # a reading without its message-type header: no consumer can tell what it is
        value_ = readings(sensor_id, 20.0).SerializeToString()
        await producer.send_and_wait(target.metrics_topic, value_, key=sensor_id.encode())
    finally:
        await producer.stop()

    async def counted() -> None:
        for service in ("processor", "saver"):
            now = await scrape(target.metrics[service])
            name, labels = "metrics_dead_letters_total", {"group": service, "reason": "wrong_type"}
            assert value(now, name, **labels) - value(before[service], name, **labels) == 1, service

    await eventually(counted, timeout=30, what="the dead letter to be counted")


async def test_consumer_lag_is_reported_for_every_partition_held(target: Target) -> None:
    async def reported() -> None:
        saver = await scrape(target.metrics["saver"])
        processor = await scrape(target.metrics["processor"])
        lags = {
            (dict(labels)["group"], dict(labels)["topic"])
            for samples in (saver, processor)
            for (name, labels) in samples
            if name == "metrics_consumer_lag"
        }
        assert lags == {
            ("processor", target.metrics_topic),
            ("saver", target.metrics_topic),
            ("saver", target.events_topic),
        }
        partitions = {dict(k[1])["partition"] for k in processor if k[0] == "metrics_consumer_lag"}
        assert len(partitions) == 8

    await eventually(reported, timeout=15, what="the lag of every partition")


async def test_prometheus_scrapes_every_part_and_loads_the_rules(target: Target) -> None:
    async def all_up() -> None:
        status, body = await http("GET", f"http://{target.prometheus}/api/v1/targets")
        assert status == 200
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in body["data"]["activeTargets"]}
        assert set(health) == JOBS
        down = {job: h for job, h in health.items() if h[0] != "up"}
        assert not down, down

    await eventually(all_up, timeout=30, what="every target up")

    async def rules_evaluated() -> None:
        status, body = await http("GET", f"http://{target.prometheus}/api/v1/rules")
        assert status == 200
        rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
        assert {r["name"] for r in rules if r["type"] == "alerting"} == ALERTS
        unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not unhealthy, unhealthy

    await eventually(rules_evaluated, timeout=30, what="the rules evaluated")


async def test_prometheus_sees_readings_flow(
    target: Target, receiver: ReceiverServiceStub, sensor_id: str
) -> None:
    total = "sum(metrics_receiver_readings_accepted_total)"

    async def scraped() -> float:
        result = await query(target, total)
        assert result, "no sample yet"
        return float(result[0]["value"][1])  # type: ignore[index]

    before = await eventually(scraped, timeout=30, what="a first scrape")
    await receiver.PushMetrics(readings(sensor_id, *[20.0] * 100), timeout=30)

    async def seen() -> None:
        assert await scraped() >= before + 100
        rate = await query(target, "metrics:readings_accepted:rate1m")
        assert rate and float(rate[0]["value"][1]) > 0  # type: ignore[index]

    await eventually(seen, timeout=30, what="Prometheus to see the readings")
