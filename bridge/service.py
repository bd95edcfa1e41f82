"""The bridge's process: a persistent MQTT 5 session at each broker, subscribed to the devices'
topics through a shared subscription, and each message's readings written to Kafka before the
message is acknowledged (PUBACK) to the broker.

What that promises (docs/mqtt.md): a message the broker accepted is in Kafka before the broker lets
go of it, however the bridge stops. Killed in between, the bridge's session keeps the message at the
broker, which sends it again (DUP) when the bridge is back; its readings carry the same times as the
first time (arrival stamps: bridge/stamps.py), so they are stored once. A message that is not
readings (a bad topic or payload) is dead-lettered with the reason, then acknowledged: the device's
next messages flow. While Kafka does not answer, nothing is acknowledged; the broker's window
(receive_maximum) bounds what waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from bridge import instruments, payloads
from bridge.settings import BridgeSettings
from bridge.stamps import Stamps
from metrics.v1 import metric_pb2
from runtime import kafka, settings
from runtime.dead_letters import DeadLetters
from runtime.devices import Devices
from runtime.errors import InvalidArgument, ServiceError
from runtime.grpc_server import GrpcServer
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging
from runtime.records import Unusable
from runtime.validation import ArrivalClock, Limits, check_batch
from runtime.writer import KafkaWatch, MetricsWriter, ProducerSlot

log = logging.getLogger(__name__)
# gmqtt tells of every packet at INFO: its warnings and errors only.
GMQTT_LOG = logging.getLogger("bridge.gmqtt")
GMQTT_LOG.setLevel(logging.WARNING)

# A PUBACK of reason code 0: its type, remaining length and packet id.
PUBACK = struct.Struct("!BBH")
# The broker's figures ($SYS/broker/...) passed on to Prometheus.
SYS_FIGURES = (
    "clients/connected", "clients/total", "load/messages/received/1min", "load/messages/sent/1min",
    "load/publish/dropped/1min", "messages/stored", "store/messages/count", "subscriptions/count",
)  # fmt: skip
# Most messages handed to the bridge together (a batch window ends early with this many).
BATCH_MESSAGES = 5_000
# The wait before connecting again to a broker that went away.
RECONNECT_S = 0.5
# After Kafka refused or did not answer a write, the wait before the next attempt.
RETRY_S = 0.5


@dataclass(slots=True)
class Message:
    """A message from a broker, and its readings once read."""

    topic: str
    payload: bytes
    packet_id: int | None  # None at QoS 0
    dup: bool
    metrics: list[metric_pb2.Metric] = field(default_factory=list)


class Bridge:
    """Turns each message into readings in Kafka, then lets it be acknowledged."""

    def __init__(
        self,
        writer: MetricsWriter,
        dead_letters: DeadLetters,
        limits: Limits,
        clock: ArrivalClock,
        max_payload_bytes: int,
        stop: asyncio.Event,
        devices: Devices | None = None,
    ) -> None:
        self._writer = writer
        # Strict mode: the registered devices, whose coverage each message's sensors need.
        self._devices = devices
        self._max_payload_bytes = max_payload_bytes
        self._dead_letters = dead_letters
        self._limits = limits
        self._clock = clock
        self._stop = stop
        self._in_flight = 0
        self._failing = False
        self._tasks: set[asyncio.Future[None]] = set()
        # Cleared while Kafka does not answer (kafka_changed): the messages in hand wait for it.
        self.kafka_up = asyncio.Event()
        self.kafka_up.set()
        # Set while no message is in hand (a stop waits for it).
        self.idle = asyncio.Event()
        self.idle.set()

    def messages(
        self, broker: str, batch: list[Message], stamps: Stamps, done: Callable[[list[int]], None]
    ) -> None:
        """Takes the messages of one turn of the event loop: their readings go to Kafka in one
        submission (or a message is dead-lettered), then `done(packet ids)` acknowledges them to the
        broker. The common case costs no task: a callback on the writer's future; a failure or a
        dead letter goes on in a task of its own."""
        began = time.perf_counter()
        self._in_flight += len(batch)
        self.idle.clear()

        def finish(unit: list[Message]) -> Callable[[], None]:
            def finished() -> None:
                self._in_flight -= len(unit)
                if not self._in_flight:
                    self.idle.set()
                instruments.ACK_SECONDS.observe(time.perf_counter() - began)
                done([m.packet_id for m in unit if m.packet_id is not None])

            return finished

        good: list[Message] = []
        for message in batch:
            try:
                message.metrics = self._readings(message, stamps)
            except Unusable as why:
                self._later(self._dead_letter(broker, message, why), finish([message]))
            else:
                good.append(message)
        if good:
            self._write(broker, good, finish(good))

    def _write(self, broker: str, unit: list[Message], finish: Callable[[], None]) -> None:
        metrics = [m for message in unit for m in message.metrics]
        try:
            written = (
                self._writer.submit(metrics, {m.sensor_id for m in metrics})
                if self.kafka_up.is_set()
                else None
            )
        except ServiceError:
            written = None
        if written is None:
            self._later(self._write_again(broker, unit), finish)
            return

        def written_or_again(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                self._later(self._write_again(broker, unit), finish)
            else:
                instruments.READINGS.inc(len(metrics))
                finish()

        written.add_done_callback(written_or_again)

    def _later(self, work: Awaitable[None], finish: Callable[[], None]) -> None:
        """Runs `work` in a task, then `finish` (unless the bridge stops meanwhile: the broker keeps
        the message for the next bridge)."""

        async def run() -> None:
            try:
                await work
            except Stopped:
                return
            finish()

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _readings(self, message: Message, stamps: Stamps) -> list[metric_pb2.Metric]:
        """The message's readings, checked, those without a time stamped on arrival (the same
        stamps as the first time for a message the broker sends again)."""
        topic, payload = message.topic, message.payload
        if len(payload) > self._max_payload_bytes:
            raise Unusable(f"payload: {len(payload)} bytes, more than {self._max_payload_bytes}", "size")
        metrics = payloads.readings(topic, payload)
        unstamped = [m for m in metrics if not m.HasField("reading_time")]
        if unstamped:
            first, step = self._clock.reserve(len(unstamped))
            if message.packet_id is not None:
                stamped = stamps.stamp(message.packet_id, message.dup, topic, payload, first)
                if message.dup:
                    instruments.REDELIVERED.labels("kept" if stamped != first else "new").inc()
                first = stamped
            for i, metric in enumerate(unstamped):
                metric.reading_time.FromMicroseconds(first + i * step)
        try:
            sensors = check_batch(metrics, self._limits, self._clock)
        except InvalidArgument as exc:
            raise Unusable("; ".join(f"{v.field}: {v.description}" for v in exc.violations)) from None
        if self._devices is not None:
            try:
                self._devices.require_covered(sensors)
            except ServiceError as exc:
                raise Unusable(str(exc), "unregistered") from None
        return metrics

    async def _write_again(self, broker: str, unit: list[Message]) -> None:
        """Until Kafka has the messages' readings: the broker keeps the messages meanwhile. While
        Kafka does not answer, every message waits for it to answer again (the writer's watch says
        when), rather than each trying on its own."""
        instruments.WRITES_RETRIED.inc()
        metrics = [m for message in unit for m in message.metrics]
        while True:
            if self._stop.is_set():
                raise Stopped("the bridge is stopping: the broker keeps the messages")
            await self.kafka_up.wait()
            try:
                await self._writer.submit(metrics, {m.sensor_id for m in metrics})
            except InvalidArgument as exc:  # larger than Kafka takes in one record
                if len(unit) == 1:
                    await self._dead_letter(broker, unit[0], Unusable(str(exc), "size"))
                    return
                for message in unit:  # one message at a time, then
                    await self._write_again(broker, [message])
                return
            except ServiceError as exc:
                if not self._failing:
                    log.warning("readings not written to Kafka (%s); the messages wait", exc)
                self._failing = True
            else:
                self._failing = False
                instruments.READINGS.inc(len(metrics))
                return
            await asyncio.sleep(RETRY_S)

    async def kafka_changed(self, up: bool) -> None:
        """The writer's watch: Kafka answers again, or stopped answering."""
        if up:
            self.kafka_up.set()
        else:
            self.kafka_up.clear()

    async def _dead_letter(self, broker: str, message: Message, why: Unusable) -> None:
        instruments.DEAD_LETTERED.labels(why.kind).inc()
        source = f"mqtt://{broker}/{message.topic}"
        await retry_until_stopped(
            "Kafka (dead letters)",
            lambda: self._dead_letters.send_payloads([(message.payload, None, source, [], why)]),
            self._stop,
        )


class BrokerSession:
    """The bridge's session at one broker: connected, subscribed, and each message handed to the
    bridge; its acknowledgement sent once the bridge is done with it."""

    def __init__(self, address: str, bridge: Bridge, config: BridgeSettings) -> None:
        self.address = address
        self._bridge = bridge
        self._config = config
        # Packet ids are the session's: the arrival stamps of this session at this broker. A
        # redelivered message arrived among the last few windows of unacknowledged messages.
        file_name = f"{config.client_id}@{address.replace(':', '_')}.stamps"
        self.stamps = Stamps(config.state_dir / file_name, window=4 * config.receive_maximum)
        self.client = gmqtt.Client(
            config.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=config.session_expiry_s,
            receive_maximum=config.receive_maximum,
            logger=GMQTT_LOG,
        )
        self.client.set_auth_credentials(config.mqtt_username, config.mqtt_password or None)
        # Connect again at once, and for ever: while the bridges are away from a broker (restarted,
        # say), it answers devices "no matching subscribers" (0x10) and keeps nothing.
        self.client.set_config({"reconnect_retries": -1, "reconnect_delay": RECONNECT_S})
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message
        self._acks: list[int] = []
        self._batch: list[Message] = []
        self._batch_s = config.batch_ms / 1000
        self._handing_over: asyncio.TimerHandle | None = None
        self._messages = instruments.MESSAGES.labels(address)
        self._expose_packet_ids()

    def _expose_packet_ids(self) -> None:
        """gmqtt keeps a message's packet id to itself, which the arrival stamps and the
        acknowledgement need. (gmqtt 0.8: its handler's method, wrapped.)"""
        handler = self.client._package_handler
        receive = handler._handle_qos_1_publish_packet

        def received(mid: int, packet: bytes, topic: str, properties: dict[str, Any]) -> None:
            properties["packet_id"] = mid
            receive(mid, packet, topic, properties)

        handler._handle_qos_1_publish_packet = received

    def _acknowledge(self, packet_ids: list[int]) -> None:
        """Queues the PUBACKs of messages; those of one turn of the event loop go in one write."""
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._send_acks)
        self._acks += packet_ids

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, []
        connection = self.client._connection
        if connection is None or connection.is_closing():
            return  # the broker sends them again (DUP) to the session's next connection
        # MQTT 5 lets a PUBACK of reason code 0 without properties be its packet id alone.
        connection.send_package(b"".join(PUBACK.pack(0x40, 2, packet_id) for packet_id in acks))
        instruments.ACKNOWLEDGED.inc(len(acks))

    async def connect(self) -> None:
        host, _, port = self.address.rpartition(":")
        await self.client.connect(host, int(port), version=MQTTv50, keepalive=30)

    def _connected(self, client: gmqtt.Client, flags: int, rc: int, properties: dict[str, Any]) -> None:
        instruments.CONNECTED.labels(self.address).set(1)
        group, root = self._config.shared_group, payloads.TOPIC_ROOT
        client.subscribe(gmqtt.Subscription(f"$share/{group}/{root}#", qos=1))
        client.subscribe([gmqtt.Subscription(f"$SYS/broker/{figure}", qos=0) for figure in SYS_FIGURES])
        log.info("subscribed at %s (session present: %s)", self.address, bool(flags))

    def _disconnected(self, client: gmqtt.Client, packet: bytes, exc: Exception | None = None) -> None:
        instruments.CONNECTED.labels(self.address).set(0)
        log.warning("disconnected from %s (%s); reconnecting", self.address, exc or "by the broker")

    def _message(
        self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        """A plain function, not a coroutine: gmqtt then sends no acknowledgement of its own; the
        bridge's `done` does, once Kafka has the readings."""
        if topic.startswith("$SYS/broker/"):
            figure = topic.removeprefix("$SYS/broker/").replace("/", "_")
            with contextlib.suppress(ValueError):
                instruments.BROKER.labels(self.address, figure).set(float(payload))
            return
        self._messages.inc()
        if not self._batch:
            self._handing_over = asyncio.get_running_loop().call_later(self._batch_s, self._hand_over)
        self._batch.append(Message(topic, payload, properties.get("packet_id"), bool(properties.get("dup"))))
        if len(self._batch) >= BATCH_MESSAGES and self._handing_over is not None:
            self._handing_over.cancel()
            self._hand_over()

    def _hand_over(self) -> None:
        """The messages of a batch window to the bridge, together: per message, the writer's and
        Kafka's work is a share of one submission."""
        batch, self._batch = self._batch, []
        self._bridge.messages(self.address, batch, self.stamps, self._acknowledge)

    async def close(self, grace_s: float) -> None:
        """Lets the messages in hand finish (up to `grace_s`), then leaves; the session stays."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bridge.idle.wait(), grace_s)
        await self.client.disconnect()


async def main(stop: asyncio.Event) -> None:
    config = settings.load(BridgeSettings, "bridge")
    setup_logging("bridge", config.log_level)
    log.info("starting: %s", settings.describe(config))
    producers = ProducerSlot(lambda: kafka.make_producer(config, f"bridge-{config.client_id}"))
    dead_letter_producer = kafka.make_producer(config, f"bridge-{config.client_id}-dlq")
    watch = KafkaWatch(producers)
    writer = MetricsWriter(
        producers, config.metrics_topic, watch, config.kafka_ack_timeout_s, instruments.PRODUCE_SECONDS,
        linger_s=config.linger_ms / 1000,
    )  # fmt: skip
    limits = Limits(config.max_batch_readings, config.max_future_skew_s, frozenset(config.metric_types))
    dead_letters = DeadLetters(dead_letter_producer, config, "bridge")
    clock = ArrivalClock(config.arrival_slot, config.arrival_slots)
    devices = Devices(config) if config.require_registered_devices else None
    bridge = Bridge(writer, dead_letters, limits, clock, config.max_payload_bytes, stop, devices)
    watch.on_change(bridge.kafka_changed)
    instruments.IN_FLIGHT.set_function(lambda: bridge.in_flight)
    sessions = [BrokerSession(address, bridge, config) for address in config.brokers]
    server = GrpcServer(config.grpc_address, [], metrics_port=config.metrics_port)
    await server.start()
    watching: asyncio.Task[None] | None = None
    following: asyncio.Task[None] | None = None
    try:
        await retry_until_stopped("Kafka", producers.start, stop)
        await retry_until_stopped("Kafka (dead letters)", dead_letter_producer.start, stop)
        watching = asyncio.create_task(watch.run())
        if devices is not None:
            await retry_until_stopped("Kafka (the devices topic)", devices.follower.start, stop)
            following = asyncio.create_task(devices.follower.follow())
        for session in sessions:
            await retry_until_stopped(f"MQTT broker {session.address}", session.connect, stop)
        await server.set_serving()
        log.info("serving: %s", ", ".join(config.brokers))
        await stop.wait()
    except Stopped:
        pass
    finally:
        for task in (watching, following):
            if task is not None:
                task.cancel()
        grace = config.shutdown_grace_s
        closers = [*(lambda s=s: s.close(grace) for s in sessions), producers.stop, dead_letter_producer.stop]
        if devices is not None:
            closers.append(devices.follower.stop)
        await shut_down(server, grace, *closers)
        for session in sessions:
            session.stamps.close()
