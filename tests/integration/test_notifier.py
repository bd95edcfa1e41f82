"""The notifier through the front door: subscriptions over HTTP/JSON, events raised by readings
through Envoy (the default rule: temperature >= 95, three in a row), and a webhook receiver in the
test that checks every signature. Delivery in order per sensor, retries after failures, a failing
subscription dead-lettered while another keeps receiving, a kill -9 mid-delivery, the filters."""

from __future__ import annotations

import asyncio
import calendar
import os
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf import timestamp_pb2

from metrics.v1 import event_pb2, notifier_service_pb2, notifier_service_pb2_grpc, subscription_pb2
from runtime import kafka
from runtime.kafka import client_options
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from testkit.http import http
from testkit.webhooks import Received, Webhook, webhook
from tests import front_door
from tests.helpers import eventually
from tests.services import free_port, in_place_of_the_stack_s
from tests.target import Target

SECRET = "a-secret-of-the-test-0123456789"
# A reading below the threshold, then three at or above it: one event, at the third.
ONE_EVENT = (10.0, 100.0, 97.0, 99.0)


class Readings:
    """Readings of the test's sensors, pushed through Envoy with increasing times."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.next_us = (time.time_ns() // 1000) - 120_000_000

    async def raise_events(self, sensor: str, count: int = 1) -> None:
        """Pushes the readings that raise `count` events of `sensor`, in one batch."""
        metrics = []
        for value in ONE_EVENT * count:
            self.next_us += 1000
            reading_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.next_us // 1_000_000))
            reading_time += f".{self.next_us % 1_000_000:06d}Z"
            metrics.append({"sensorId": sensor, "metricType": "temperature", "value": value,
                            "readingTime": reading_time})  # fmt: skip
        status, reply = await http("POST", f"{self.target.envoy_url}/v1/metrics:push", {"metrics": metrics})
        assert status == 200, reply


@pytest.fixture
def readings(target: Target) -> Readings:
    return Readings(target)


@pytest.fixture
def run() -> str:
    """A sensor-id prefix of this test's own."""
    return f"notify-{uuid.uuid4().hex[:10]}-"


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with webhook() as receiver:
        yield receiver


Subscribe = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def subscribe(target: Target) -> AsyncIterator[Subscribe]:
    """Creates subscriptions over HTTP through Envoy; deletes them after the test."""
    made: list[str] = []

    async def create(url: str, **fields: Any) -> dict[str, Any]:
        status, reply = await http(
            "POST", f"{target.envoy_url}/v1/subscriptions", {"url": url, "secret": SECRET, **fields}
        )
        assert status == 200, reply
        made.append(reply["subscription"]["subscriptionId"])
        return dict(reply["subscription"])

    yield create
    for subscription_id in made:
        await http("DELETE", f"{target.envoy_url}/v1/subscriptions/{subscription_id}")


async def get(target: Target, subscription_id: str) -> dict[str, Any]:
    status, reply = await http("GET", f"{target.envoy_url}/v1/subscriptions/{subscription_id}")
    assert status == 200, reply
    return dict(reply["subscription"])


async def stored_events(db: asyncpg.Pool, sensor: str, count: int) -> list[str]:
    """The ids of a sensor's events as the saver stored them, in reading order, once there are `count`."""

    async def all_stored() -> list[str]:
        rows = await db.fetch(
            "SELECT event_id FROM events WHERE sensor_id = $1 ORDER BY reading_time", sensor
        )
        assert len(rows) == count, f"{sensor}: {len(rows)} events stored, not {count}"
        return [r["event_id"].hex for r in rows]

    return await eventually(all_stored, timeout=30, what=f"{sensor}'s events stored")


async def received(hook: Webhook, path: str, count: int, timeout: float = 30) -> list[Received]:
    """The requests to `path` answered 200, once there are `count`."""

    async def arrived() -> list[Received]:
        done = hook.on(path)
        assert len(done) >= count, f"{path}: {len(done)} delivered, not {count}"
        return done

    return await eventually(arrived, timeout=timeout, what=f"{count} deliveries to {path}")


async def test_a_delivery_is_the_signed_event_with_its_id_as_idempotency_key(
    target: Target, db: asyncpg.Pool, hook: Webhook, subscribe: Subscribe, readings: Readings, run: str
) -> None:
    created = await subscribe(hook.url("/hooks/a"), sensorIdPrefix=run)
    assert "secret" not in created  # never returned, not even empty
    assert created["delivery"]["state"] == "DELIVERY_STATE_HEALTHY"
    sensor = run + "1"
    await readings.raise_events(sensor)
    (event_id,) = await stored_events(db, sensor, 1)
    (delivery,) = await received(hook, "/hooks/a", 1)
    assert delivery.signed_with(SECRET)
    assert not delivery.signed_with(SECRET + "x")
    assert delivery.headers["idempotency-key"] == event_id
    assert delivery.headers["content-type"] == "application/json"
    notification = delivery.notification
    assert notification["subscriptionId"] == created["subscriptionId"]
    assert notification["attempt"] == 1
    event = notification["event"]
    assert (event["eventId"], event["sensorId"], event["kind"], event["value"]) == (
        event_id, sensor, "EVENT_KIND_THRESHOLD_EXCEEDED", 99.0,
    )  # fmt: skip
    # The time it was sent is signed with the rest: within moments of its arrival.
    sent = calendar.timegm(time.strptime(notification["sendTime"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(sent - delivery.time) < 5

    async def healthy_and_counted() -> dict[str, Any]:
        found = await get(target, created["subscriptionId"])
        assert found["delivery"]["deliveredCount"] == "1", found
        return found

    found = await eventually(healthy_and_counted, timeout=10)
    assert found["delivery"]["state"] == "DELIVERY_STATE_HEALTHY" and "secret" not in found
    assert found["delivery"]["pendingCount"] == 0 and "lastSuccessTime" in found["delivery"]


async def test_each_sensors_events_arrive_in_order_also_around_a_retry(
    db: asyncpg.Pool, hook: Webhook, subscribe: Subscribe, readings: Readings, run: str
) -> None:
    await subscribe(hook.url("/ordered"), sensorIdPrefix=run)
    # The first attempt of the first event fails: that sensor's later events wait behind it.
    hook.script["/ordered"] = [500]
    sensors = [run + "a", run + "b", run + "c"]
    for sensor in sensors:
        await readings.raise_events(sensor, 5)
    expected = {sensor: await stored_events(db, sensor, 5) for sensor in sensors}
    await received(hook, "/ordered", 15)
    arrived: dict[str, list[str]] = {}
    for delivery in hook.on("/ordered"):
        arrived.setdefault(delivery.notification["event"]["sensorId"], []).append(delivery.event_id)
    assert arrived == expected
    assert len(hook.on("/ordered", 500)) == 1


async def test_a_failed_delivery_is_tried_again_with_the_same_event_id(
    target: Target, db: asyncpg.Pool, hook: Webhook, subscribe: Subscribe, readings: Readings, run: str
) -> None:
    created = await subscribe(hook.url("/flaky"), sensorIdPrefix=run)
    hook.script["/flaky"] = [500, 503]
    sensor = run + "1"
    await readings.raise_events(sensor)
    (event_id,) = await stored_events(db, sensor, 1)
    (delivered,) = await received(hook, "/flaky", 1)
    attempts = hook.on("/flaky", None)
    assert [(r.status, r.event_id, r.headers["idempotency-key"], r.notification["attempt"]) for r in attempts] == [
        (500, event_id, event_id, 1), (503, event_id, event_id, 2), (200, event_id, event_id, 3),
    ]  # fmt: skip
    assert all(r.signed_with(SECRET) for r in attempts)
    assert delivered.notification["event"] == attempts[0].notification["event"]

    async def healthy_again() -> None:
        found = (await get(target, created["subscriptionId"]))["delivery"]
        assert (found["state"], found["consecutiveFailures"], found["deliveredCount"]) == (
            "DELIVERY_STATE_HEALTHY", 0, "1",
        ), found  # fmt: skip
        assert found["lastError"] == "HTTP 503" and "lastFailureTime" in found

    await eventually(healthy_again, timeout=10)


async def produce_events(target: Target, events: list[event_pb2.Event]) -> None:
    """Events written straight to the events topic, as any producer may (the rules that raise the
    other kinds and severities are not needed to test the filters)."""
    producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send(target.events_topic, event.SerializeToString(), key=event.sensor_id.encode(),
                                headers=kafka.headers(kafka.EVENT_TYPE))  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()


def an_event(sensor: str, kind: int, severity: int) -> event_pb2.Event:
    event = event_pb2.Event(event_id=uuid.uuid4().hex, kind=kind, sensor_id=sensor, metric_type="temperature",
                            value=99.0, threshold=95.0, count=3, severity=severity)  # fmt: skip
    event.reading_time.GetCurrentTime()
    event.detect_time.GetCurrentTime()
    return event


async def test_filters_by_sensor_prefix_kind_and_minimum_severity(
    target: Target, hook: Webhook, subscribe: Subscribe, run: str
) -> None:
    raised, cleared, acknowledged = (event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, event_pb2.EVENT_KIND_ALARM_CLEARED,
                                     event_pb2.EVENT_KIND_ALARM_ACKNOWLEDGED)  # fmt: skip
    critical, major, minor, warning = (event_pb2.SEVERITY_CRITICAL, event_pb2.SEVERITY_MAJOR,
                                       event_pb2.SEVERITY_MINOR, event_pb2.SEVERITY_WARNING)  # fmt: skip
    events = [
        an_event(run + "plant-1", raised, critical), an_event(run + "plant-2", raised, major),
        an_event(run + "plant-1", cleared, minor), an_event(run + "yard-1", acknowledged, warning),
        an_event(run + "yard-2", raised, event_pb2.SEVERITY_UNSPECIFIED), an_event(run + "yard-1", raised, minor),
    ]  # fmt: skip
    filters = {
        "/all": {"sensorIdPrefix": run},
        "/plant": {"sensorIdPrefix": run + "plant-"},
        "/raised-or-cleared": {"sensorIdPrefix": run, "kinds": ["EVENT_KIND_THRESHOLD_EXCEEDED",
                                                                "EVENT_KIND_ALARM_CLEARED"]},
        "/major-or-worse": {"sensorIdPrefix": run, "minimumSeverity": "SEVERITY_MAJOR"},
        "/yard-warnings": {"sensorIdPrefix": run + "yard-", "minimumSeverity": "SEVERITY_WARNING",
                           "kinds": ["EVENT_KIND_THRESHOLD_EXCEEDED"]},
    }  # fmt: skip
    for path, fields in filters.items():
        await subscribe(hook.url(path), **fields)
    await produce_events(target, events)
    # An event without a severity (the original rules') matches no minimum, not even the lowest.
    expected = {
        "/all": [0, 1, 2, 3, 4, 5], "/plant": [0, 1, 2], "/raised-or-cleared": [0, 1, 2, 4, 5],
        "/major-or-worse": [0, 1], "/yard-warnings": [5],
    }  # fmt: skip
    for path, indexes in expected.items():
        await received(hook, path, len(indexes))
    await received(hook, "/all", 6)  # the last of all: the others had time to show extras
    for path, indexes in expected.items():
        got = sorted(r.event_id for r in hook.on(path))
        assert got == sorted(events[i].event_id for i in indexes), path


async def test_validation_errors_name_the_field_over_http(target: Target) -> None:
    url = f"{target.envoy_url}/v1/subscriptions"
    good = {"url": "http://127.0.0.1:9/hook", "secret": SECRET}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**good, "url": "http://10.0.0.1/hook"}, "subscription.url", "10.0.0.1"),
        (
            {**good, "url": "http://169.254.169.254/latest/meta-data/"},
            "subscription.url",
            "outside what the notifier may deliver to",
        ),
        ({**good, "url": "ftp://127.0.0.1/x"}, "subscription.url", "http or https"),
        ({**good, "url": "http://user:pw@127.0.0.1/"}, "subscription.url", "user name"),
        ({**good, "secret": "short"}, "subscription.secret", "16 to 256"),
        ({"url": good["url"]}, "subscription.secret", "is required"),
        ({**good, "sensorIdPrefix": "no spaces"}, "subscription.sensor_id_prefix", "characters"),
        ({**good, "kinds": ["EVENT_KIND_UNSPECIFIED"]}, "subscription.kinds[0]", "not a kind"),
    ]
    for body, field, words in cases:
        status, reply = await http("POST", url, body)
        assert status == 400, (body, reply)
        (details,) = reply["details"]
        fields = {v["field"]: v["description"] for v in details["fieldViolations"]}
        assert field in fields and words in fields[field], (body, reply)
    status, reply = await http("GET", f"{url}/not-an-id")
    assert status == 400 and reply["details"][0]["fieldViolations"][0]["field"] == "subscription_id", reply
    unknown = uuid.uuid4().hex
    for method in ("GET", "DELETE"):
        status, reply = await http(method, f"{url}/{unknown}")
        assert (status, reply["code"]) == (404, 5), reply
    status, reply = await http("POST", f"{url}/{unknown}:resume", {})
    assert status == 404, reply
    status, reply = await http("GET", f"{url}?pageToken=bogus")
    assert status == 400 and "page_token" in reply["message"], reply


async def test_subscriptions_are_listed_in_pages(target: Target, subscribe: Subscribe) -> None:
    made = [(await subscribe("http://127.0.0.1:9/page"))["subscriptionId"] for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        status, reply = await http("GET", f"{target.envoy_url}/v1/subscriptions?pageSize=2&pageToken={token}")
        assert status == 200 and len(reply["subscriptions"]) <= 2, reply
        seen += [s["subscriptionId"] for s in reply["subscriptions"]]
        assert all("secret" not in s for s in reply["subscriptions"])
        token = reply["nextPageToken"]
        if not token:
            break
    assert [s for s in seen if s in made] == made  # oldest first, each once
    assert len(seen) == len(set(seen))


async def test_on_the_tls_port_subscriptions_need_an_admin_token(target: Target) -> None:
    url = f"{target.envoy_tls_url}/v1/subscriptions"
    tls = front_door.tls_context(target)
    reader = front_door.token(target, scopes=("ingest", "read"))
    status, reply = await http("GET", url, headers=front_door.auth(reader), tls=tls)
    assert status == 403 and "admin" in reply["message"], reply
    status, reply = await http("POST", url, {"url": "http://127.0.0.1:9/x", "secret": SECRET},
                               headers=front_door.auth(reader), tls=tls)  # fmt: skip
    assert status == 403, reply
    admin = front_door.token(target, scopes=("admin",))
    status, reply = await http("GET", url, headers=front_door.auth(admin), tls=tls)
    assert status == 200 and "subscriptions" in reply, reply
    status, reply = await http("GET", url, tls=tls)
    assert status == 401, reply


# --- faults: these stop or kill the local stack's notifier ----------------------------------------


def notifier_pid() -> int:
    with Supervisor(stack_settings.load()) as supervisor:
        return int(supervisor.processes()["notifier"]["pid"])


async def notifier_serving(target: Target) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    try:
        async with grpc.aio.insecure_channel(target.services["notifier"]) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    except grpc.aio.AioRpcError as error:
        raise AssertionError(f"notifier: {error.code().name}") from error
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.local_stack
async def test_a_kill_9_mid_delivery_delivers_afterwards_with_the_same_ids(
    target: Target, db: asyncpg.Pool, hook: Webhook, subscribe: Subscribe, readings: Readings, run: str
) -> None:
    created = await subscribe(hook.url("/held"), sensorIdPrefix=run)
    hook.hold["/held"] = asyncio.Event()  # no answer: the attempts stay under way
    sensors = [run + str(i) for i in range(3)]
    for sensor in sensors:
        await readings.raise_events(sensor, 2)
    expected = {event_id for sensor in sensors for event_id in await stored_events(db, sensor, 2)}

    async def three_under_way() -> None:
        assert len(hook.on("/held", None)) == 3  # each sensor's first event; its second waits

    await eventually(three_under_way, timeout=30)
    victim = notifier_pid()
    os.kill(victim, signal.SIGKILL)
    hook.hold["/held"].set()  # from now on the receiver answers at once
    await eventually(lambda: notifier_serving(target), timeout=60)
    assert notifier_pid() != victim

    async def all_delivered() -> None:
        found = (await get(target, created["subscriptionId"]))["delivery"]
        assert (found["deliveredCount"], found["pendingCount"]) == ("6", 0), found

    # The attempts cut short are tried again once their leases (time limit + 5 s) run out.
    await eventually(all_delivered, timeout=60)
    attempts = hook.on("/held", None)
    assert {r.event_id for r in attempts} == expected
    assert all(r.headers["idempotency-key"] == r.event_id and r.signed_with(SECRET) for r in attempts)
    by_id: dict[str, list[Received]] = {}
    for attempt in attempts:
        by_id.setdefault(attempt.event_id, []).append(attempt)
    # Duplicates, with the same id and event: the three that were under way when it died.
    assert sorted(len(v) for v in by_id.values()) == [1, 1, 1, 2, 2, 2], {k: len(v) for k, v in by_id.items()}
    for copies in by_id.values():
        assert len({str(c.notification["event"]) for c in copies}) == 1
    # Each sensor's events still in order (the first copy of each).
    for sensor in sensors:
        firsts = [r.event_id for r in attempts if r.notification["event"]["sensorId"] == sensor]
        assert list(dict.fromkeys(firsts)) == await stored_events(db, sensor, 2)


@pytest.mark.local_stack
async def test_a_failing_subscription_is_dead_lettered_while_another_keeps_receiving(
    target: Target, db: asyncpg.Pool, hook: Webhook, readings: Readings, run: str, tmp_path: Path
) -> None:
    # The stack's notifier gives way to one that gives up after 4 failures within a second.
    log = tmp_path / "notifier.log"
    quick = {**GIVES_UP_AFTER_4, "METRICS_NOTIFIER_CONSUMER_GROUP": target.notifier_group}
    async with in_place_of_the_stack_s(target, "notifier", quick, log, port=free_port()) as channel:
        await dead_letters_and_resumes(channel, db, hook, readings, run, log)


# A notifier that tries again within a fraction of a second and gives up after 4 failures in a row.
GIVES_UP_AFTER_4 = {
    "METRICS_NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8", "METRICS_NOTIFIER_RETRY_BASE_S": "0.05",
    "METRICS_NOTIFIER_RETRY_MAX_S": "0.2", "METRICS_NOTIFIER_DEAD_LETTER_AFTER": "4",
}  # fmt: skip


async def dead_letters_and_resumes(
    channel: grpc.aio.Channel, db: asyncpg.Pool, hook: Webhook, readings: Readings, run: str, log: Path
) -> None:
    stub = notifier_service_pb2_grpc.SubscriptionsServiceStub(channel)
    made: list[str] = []
    try:

        async def assigned() -> None:
            text = await asyncio.to_thread(log.read_text)
            assert "partitions assigned: events[" in text, text[-2000:]

        await eventually(assigned, timeout=60)

        async def create(path: str) -> str:
            reply = await stub.CreateSubscription(notifier_service_pb2.CreateSubscriptionRequest(
                subscription=subscription_pb2.Subscription(url=hook.url(path), secret=SECRET, sensor_id_prefix=run)
            ), timeout=10)  # fmt: skip
            made.append(reply.subscription.subscription_id)
            return reply.subscription.subscription_id

        failing, healthy = await create("/down"), await create("/up")
        hook.always["/down"] = 500
        sensor = run + "1"
        await readings.raise_events(sensor, 3)
        first = await stored_events(db, sensor, 3)
        await received(hook, "/up", 3)

        async def state_of(subscription_id: str) -> subscription_pb2.DeliveryStatus:
            request = notifier_service_pb2.GetSubscriptionRequest(subscription_id=subscription_id)
            return (await stub.GetSubscription(request, timeout=10)).subscription.delivery

        async def dead_lettered() -> subscription_pb2.DeliveryStatus:
            found = await state_of(failing)
            assert found.state == subscription_pb2.DELIVERY_STATE_DEAD_LETTERED, found
            return found

        found = await eventually(dead_lettered, timeout=30)
        assert (found.consecutive_failures, found.last_error, found.dead_lettered_count, found.pending_count) == (
            4, "HTTP 500", 3, 0,
        )  # fmt: skip
        assert found.HasField("dead_letter_time")
        assert len(hook.on("/down", 500)) == 4  # its head only: the other events waited behind it

        async def deliveries(subscription_id: str, outcome: int = 0, size: int = 0, token: str = "") -> Any:
            request = notifier_service_pb2.ListDeliveriesRequest(
                subscription_id=subscription_id, outcome=outcome, page_size=size, page_token=token
            )
            return await stub.ListDeliveries(request, timeout=10)

        given_up = (await deliveries(failing)).deliveries
        assert [d.event.event_id for d in given_up] == first[::-1], "the most recently read first"
        assert {d.outcome for d in given_up} == {subscription_pb2.DELIVERY_OUTCOME_DEAD_LETTERED}
        assert [(d.attempts, d.last_error) for d in given_up] == [(0, ""), (0, ""), (4, "HTTP 500")]
        page = await deliveries(failing, size=2)
        rest = await deliveries(failing, size=2, token=page.next_page_token)
        assert [d.event.event_id for d in [*page.deliveries, *rest.deliveries]] == first[::-1]
        assert rest.next_page_token == ""
        assert (await deliveries(failing, subscription_pb2.DELIVERY_OUTCOME_DELIVERED)).deliveries == []
        # Events from now on: the healthy one receives them, the dead-lettered one takes none.
        await readings.raise_events(sensor, 2)
        later = (await stored_events(db, sensor, 5))[3:]
        await received(hook, "/up", 5)
        assert [r.event_id for r in hook.on("/up")] == first + later
        found = await state_of(failing)
        assert (found.dead_lettered_count, found.pending_count, len(hook.on("/down", 500))) == (3, 0, 4)
        assert (await state_of(healthy)).state == subscription_pb2.DELIVERY_STATE_HEALTHY
        # Resumed (its receiver fixed): the events it was given up on, in order, and no others.
        hook.always["/down"] = 200
        resumed = await stub.ResumeSubscription(
            notifier_service_pb2.ResumeSubscriptionRequest(subscription_id=failing), timeout=10
        )
        assert resumed.subscription.delivery.state == subscription_pb2.DELIVERY_STATE_HEALTHY
        await received(hook, "/down", 3)
        assert [r.event_id for r in hook.on("/down")] == first

        async def all_delivered() -> None:
            found = await state_of(failing)
            assert (found.delivered_count, found.dead_lettered_count, found.pending_count) == (3, 0, 0), found

        await eventually(all_delivered, timeout=10)
        delivered = (await deliveries(failing, subscription_pb2.DELIVERY_OUTCOME_DELIVERED)).deliveries
        assert [d.event.event_id for d in delivered] == first[::-1]
        assert all(d.HasField("deliver_time") and not d.HasField("next_attempt_time") for d in delivered)
        assert [d.event.event_id for d in (await deliveries(healthy)).deliveries] == (first + later)[::-1]
    finally:
        for subscription_id in made:
            await stub.DeleteSubscription(
                notifier_service_pb2.DeleteSubscriptionRequest(subscription_id=subscription_id), timeout=10
            )


async def test_notification_latency(
    hook: Webhook, subscribe: Subscribe, readings: Readings, run: str
) -> None:
    """Not a limit: prints how long from an event raised (its detect_time) to its webhook's arrival."""
    await subscribe(hook.url("/latency"), sensorIdPrefix=run)
    count = 40
    for i in range(count):
        await readings.raise_events(f"{run}{i}")
        await asyncio.sleep(0.05)  # one event at a time, as a fleet raises them (a pace, not a wait)
    arrived = await received(hook, "/latency", count)
    latencies = []
    for delivery in arrived:
        detected = timestamp_pb2.Timestamp()
        detected.FromJsonString(delivery.notification["event"]["detectTime"])
        latencies.append((delivery.time - detected.ToNanoseconds() / 1e9) * 1000)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))]
    print(
        f"notification latency over {count} events: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
    )
