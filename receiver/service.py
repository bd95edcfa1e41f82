"""The receiver's gRPC service and its process: validate, write to Kafka, acknowledge."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc

from metrics.v1 import metric_pb2, receiver_service_pb2, receiver_service_pb2_grpc
from receiver import instruments, remote_write
from receiver.admission import Admission
from receiver.budgets import StreamBudgets
from receiver.encoded import Encoder, Readings
from receiver.line_reader import LineReader
from receiver.settings import ReceiverSettings
from runtime import kafka, line_protocol, settings, workers
from runtime.devices import Devices
from runtime.errors import (
    InvalidArgument,
    ServiceError,
    Unavailable,
    Violation,
    grpc_errors,
    grpc_stream_errors,
    status_of,
)
from runtime.grpc_server import GrpcServer, add_servicer
from runtime.identity import Identity
from runtime.identity import caller as caller_of
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging
from runtime.validation import LEGACY_METRIC_TYPE, ArrivalClock, Limits, check_batch
from runtime.writer import KafkaWatch, MetricsWriter, ProducerSlot

log = logging.getLogger(__name__)

SERVICE = receiver_service_pb2.DESCRIPTOR.services_by_name["ReceiverService"]

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
# The batches of one stream that may wait for Kafka at once (the admission bounds all streams).
STREAM_WINDOW = 64
BatchRequest = (
    receiver_service_pb2.PushMetricsRequest
    | receiver_service_pb2.StreamMetricsRequest
    | receiver_service_pb2.SyncMetricsRequest
)


class Receiver(receiver_service_pb2_grpc.ReceiverServiceServicer):
    def __init__(
        self,
        writer: MetricsWriter,
        admission: Admission,
        limits: Limits,
        clock: ArrivalClock,
        devices: Devices,
        strict: bool = False,
        line_sensor_tags: tuple[str, ...] = ("sensor", "host"),
        prometheus_sensor_labels: tuple[str, ...] = ("sensor", "instance"),
        remote_write_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._writer = writer
        self._admission = admission
        self._limits = limits
        self._clock = clock
        self._devices = devices
        self._strict = strict  # every sensor must be covered by an enabled registered device
        self._budgets = StreamBudgets()
        # Remote write: the most a body may decompress to.
        self._remote_write_max_bytes = remote_write_max_bytes
        # The bulk doors (line protocol, remote write) check and encode readings themselves.
        self._encoder = Encoder(limits, clock)
        self._series_reader = remote_write.SeriesReader(self._encoder, prometheus_sensor_labels)
        self._line_reader = LineReader(self._encoder, line_sensor_tags)
        # Done when the receiver stops: its streams stop reading and end (see _batches).
        self._leaving: asyncio.Future[None] | None = None

    def leave(self) -> None:
        """Ends every stream at its next batch boundary: what was read is acknowledged, the rest
        is for the client to send again, to another receiver (called before the server stops)."""
        self._leaving_future().set_result(None)

    def _leaving_future(self) -> asyncio.Future[None]:
        if self._leaving is None:
            self._leaving = asyncio.get_running_loop().create_future()
        return self._leaving

    async def _batches(self, requests: AsyncIterator[T]) -> AsyncIterator[T]:
        """A stream's batches until the client ends it; Leaving when the receiver stops first."""
        leaving = self._leaving_future()
        batches = aiter(requests)
        while not leaving.done():
            read = asyncio.ensure_future(anext(batches, None))
            await asyncio.wait((read, leaving), return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            if (request := read.result()) is None:
                return
            yield request
        raise Leaving()

    async def _accept(self, request: BatchRequest, caller: Identity | None) -> int:
        """Validates and writes one batch; returns once Kafka has all of it."""
        began = time.perf_counter()
        n = len(request.metrics)
        try:
            await self._admit_and_write(request, n, caller)
        except Exception as exc:
            _counted(began, n, exc)
            raise
        _counted(began, n)
        return n

    async def _admit_and_write(
        self, request: BatchRequest, n: int, caller: Identity | None, field: str = "metrics"
    ) -> None:
        # Room first: a batch refused for want of it costs no validation.
        await self._admission.acquire(n)
        await self._write_admitted(request, n, caller, field)

    def _start(
        self, request: BatchRequest, caller: Identity | None, field: str = "metrics"
    ) -> asyncio.Future[Any]:
        """A stream's batch, like _accept without waiting or counting: the future is done once
        Kafka has the batch, or failed. Only a batch that must wait for room costs a task. The
        batch counts against the caller's rate (Envoy counted the stream's opening)."""
        try:
            self._take_budget(caller)
            n = len(request.metrics)
            if not self._admission.try_acquire(n):
                return asyncio.ensure_future(self._admit_and_write(request, n, caller, field))
            return self._write_admitted(request, n, caller, field)
        except Exception as exc:  # noqa: BLE001 - told to the client in the batch's acknowledgement
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    def _write_admitted(
        self, request: BatchRequest, n: int, caller: Identity | None, field: str = "metrics"
    ) -> asyncio.Future[Any]:
        """Checks and submits a batch whose `n` readings hold room; the room is given back when
        Kafka has them, or when the batch fails (also if it raises here)."""
        try:
            sensors = check_batch(request.metrics, self._limits, self._clock, field=field)
            self._authorize(sensors, caller, field)
            written = self._writer.submit(request.metrics, sensors, _as_batch(request, sensors))
        except BaseException:
            self._admission.release(n)
            raise
        written.add_done_callback(lambda _: self._admission.release(n))
        return written

    @grpc_errors
    async def PushMetrics(
        self, request: receiver_service_pb2.PushMetricsRequest, context: Context
    ) -> receiver_service_pb2.PushMetricsResponse:
        caller = _ingest_caller(context)
        return receiver_service_pb2.PushMetricsResponse(accepted_count=await self._accept(request, caller))

    @grpc_errors
    async def StreamMetrics(
        self, request_iterator: AsyncIterator[receiver_service_pb2.StreamMetricsRequest], context: Context
    ) -> receiver_service_pb2.StreamMetricsResponse:
        # Batches are written as they arrive, up to STREAM_WINDOW of them waiting for Kafka at once
        # (so a stream goes as fast as the receiver, not one Kafka round trip per batch); the answer
        # waits for all of them. The first batch that fails, in order, ends the stream with its error.
        caller = _ingest_caller(context)
        pending: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()
        accepted = batches = 0
        try:
            async for request in self._batches(request_iterator):
                began = time.perf_counter()
                written = self._start(request, caller, field=f"[{batches}].metrics")
                _count_when_done(written, began, len(request.metrics))
                pending.append((len(request.metrics), written))
                if written.done() and written.exception():  # refused on reading: read no further
                    break
                batches += 1
                accepted += await _settle(pending, keep=STREAM_WINDOW - 1)
            accepted += await _settle(pending, keep=0)
        except Leaving as leaving:
            accepted += await _settle(pending, keep=0)
            raise Leaving(f"{batches} batches of this stream are written; send the rest again") from leaving
        return receiver_service_pb2.StreamMetricsResponse(accepted_count=accepted, batch_count=batches)

    @grpc_stream_errors
    async def SyncMetrics(
        self, request_iterator: AsyncIterator[receiver_service_pb2.SyncMetricsRequest], context: Context
    ) -> AsyncIterator[receiver_service_pb2.SyncMetricsResponse]:
        # One acknowledgement per batch, in order. Writes are pipelined: the next batch is read and
        # sent to Kafka while earlier ones wait for their acknowledgement.
        caller = _ingest_caller(context)
        pending: asyncio.Queue[tuple[int, int, float, asyncio.Future[Any]] | None] = asyncio.Queue(
            maxsize=STREAM_WINDOW
        )

        async def read() -> None:
            try:
                async for request in self._batches(request_iterator):
                    began = time.perf_counter()
                    written = self._start(request, caller)
                    await pending.put((request.sequence, len(request.metrics), began, written))
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await pending.get()) is not None:
                yield await _acknowledge(*item)
            await reader  # raises Leaving after the acknowledgements of what was read
        finally:
            reader.cancel()

    @grpc_errors
    async def RecordLegacyMeasurement(
        self, request: receiver_service_pb2.RecordLegacyMeasurementRequest, context: Context
    ) -> receiver_service_pb2.RecordLegacyMeasurementResponse:
        began = time.perf_counter()
        caller = _ingest_caller(context)
        try:
            metric = _legacy_metric(request, caller)
        except ServiceError as exc:  # refused before it is a batch: counted here, as _accept would
            _counted(began, 1, exc)
            raise
        try:
            await self._accept(receiver_service_pb2.PushMetricsRequest(metrics=[metric]), caller)
        except InvalidArgument as exc:
            raise InvalidArgument([_legacy_violation(v) for v in exc.violations]) from None
        return receiver_service_pb2.RecordLegacyMeasurementResponse(result=True, response="OK")

    @grpc_errors
    async def WriteLineProtocol(
        self, request: receiver_service_pb2.WriteLineProtocolRequest, context: Context
    ) -> receiver_service_pb2.WriteLineProtocolResponse:
        caller = _ingest_caller(context)
        precision = request.precision or "ns"
        if precision not in line_protocol.PRECISIONS:
            raise InvalidArgument([Violation("precision", f"{precision!r} is not one of ns, us, ms, s")])
        try:
            text = request.lines.data.decode()
        except UnicodeDecodeError:
            raise InvalidArgument([Violation("lines", "are not UTF-8")]) from None
        found = self._line_reader.read(text, precision)
        if not found.lines and not found.refused:
            raise InvalidArgument([Violation("lines", "hold no line of line protocol")])
        await self._write_encoded(found.readings, caller, "lines")
        _refuse_partly(found.refused, found.lines, "lines")
        return receiver_service_pb2.WriteLineProtocolResponse(
            accepted_count=found.readings.count, line_count=found.lines
        )

    @grpc_errors
    async def WritePrometheus(
        self, request: receiver_service_pb2.WritePrometheusRequest, context: Context
    ) -> receiver_service_pb2.WritePrometheusResponse:
        caller = _ingest_caller(context)
        try:
            write = remote_write.decode(request.body.data, self._remote_write_max_bytes)
        except ValueError as why:
            raise InvalidArgument([Violation("body", str(why))]) from None
        found = self._series_reader.read(write)
        await self._write_encoded(found.readings, caller, "timeseries")
        instruments.STALE_MARKERS.inc(found.stale)
        _refuse_partly(
            [Violation(f"timeseries[{i}]", why) for i, why in found.refused], found.series, "series"
        )
        return receiver_service_pb2.WritePrometheusResponse(
            accepted_count=found.readings.count, stale_count=found.stale
        )

    async def _write_encoded(self, readings: Readings, caller: Identity | None, field: str) -> None:
        """Writes readings the bulk doors checked and encoded (receiver/encoded.py); returns once Kafka
        has them all. The caller must cover every sensor of them, or none is written."""
        n = readings.count
        if not n:
            return
        began = time.perf_counter()
        try:
            await self._admission.acquire(n)
            try:
                sensors = set(readings.by_sensor)
                self._authorize(sensors, caller, field)
                written = self._writer.submit_batches(readings.batches(self._limits.max_batch_readings))
            except BaseException:
                self._admission.release(n)
                raise
            written.add_done_callback(lambda _: self._admission.release(n))
            await written
        except Exception as exc:
            _counted(began, n, exc)
            raise
        _counted(began, n)

    def _authorize(self, sensors: set[str], caller: Identity | None, field: str) -> None:
        """Refuses readings of sensors the caller may not write, or (strict) that no device covers."""
        if caller is not None:
            caller.require_sensors(sensors, field)
            if caller.device:  # each batch: a stream is cut within 100 ms of its device's disabling
                self._devices.check(caller.device, caller.token_id, sensors, field)
        if self._strict:
            self._devices.require_covered(sensors, field)

    def _take_budget(self, caller: Identity | None) -> None:
        if caller is not None:
            self._budgets.take(caller)


def _refuse_partly(refused: list[Violation], written: int, what: str) -> None:
    """As InfluxDB and Prometheus answer a partial write: the parts not written (the others are)."""
    if refused:
        message = f"partial write: {len(refused)} of {len(refused) + written} {what} not written"
        raise InvalidArgument(refused, message)


def _legacy_metric(
    request: receiver_service_pb2.RecordLegacyMeasurementRequest, caller: Identity | None
) -> metric_pb2.Metric:
    """The reading of a legacy request, or why it cannot be one (named as the legacy route names it)."""
    if caller is not None:
        caller.require_sensors([request.sensor_uuid], "sensor_uuid")
    if not request.HasField("temperature"):
        raise InvalidArgument([Violation("temperature", "is required: a number")])
    metric = metric_pb2.Metric(
        sensor_id=request.sensor_uuid, metric_type=LEGACY_METRIC_TYPE, value=request.temperature
    )
    if request.HasField("at"):
        if request.at < 0:
            raise InvalidArgument([Violation("at", "must be milliseconds since 1970-01-01, not negative")])
        # Not FromMilliseconds: past year 9999 it raises ValueError; check_batch refuses such a
        # time (and anything too far ahead) naming the field.
        metric.reading_time.seconds, millis = divmod(request.at, 1000)
        metric.reading_time.nanos = millis * 1_000_000
    return metric


class Leaving(Unavailable):
    """The receiver stops (a restart, an upgrade): the stream ends, another receiver takes it."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("the receiver is stopping: reconnect" + (f"; {detail}" if detail else ""))


def _ingest_caller(context: Context) -> Identity | None:
    """The caller, who must hold the ingest scope; None on the trusted inside."""
    return caller_of(context.invocation_metadata(), "ingest")


async def _settle(pending: collections.deque[tuple[int, asyncio.Future[Any]]], keep: int) -> int:
    """Takes the stream's first batches off `pending` while Kafka has them, waiting for them while
    more than `keep` are pending; returns their readings, or raises the first one's failure."""
    written_readings = 0
    while pending and (pending[0][1].done() or len(pending) > keep):
        readings, written = pending[0]
        await asyncio.wait((written,))  # not cancelled with the call: the batch goes on by itself
        pending.popleft()
        written.result()
        written_readings += readings
    return written_readings


def _count_when_done(written: asyncio.Future[Any], began: float, readings: int) -> None:
    def count(done: asyncio.Future[Any]) -> None:
        _counted(began, readings, asyncio.CancelledError() if done.cancelled() else done.exception())

    written.add_done_callback(count)


async def _acknowledge(
    sequence: int, readings: int, began: float, written: asyncio.Future[Any]
) -> receiver_service_pb2.SyncMetricsResponse:
    try:
        await written
    except Exception as exc:
        _counted(began, readings, exc)
        if not isinstance(exc, ServiceError):
            log.exception("batch %d failed", sequence)
        return receiver_service_pb2.SyncMetricsResponse(sequence=sequence, status=status_of(exc))
    _counted(began, readings)
    return receiver_service_pb2.SyncMetricsResponse(sequence=sequence, accepted_count=readings)


async def _sample(admission: Admission, interval_s: float = 1.0) -> None:
    """The admission's gauges, set now and then rather than on every call."""
    while True:
        instruments.IN_FLIGHT.set(admission.in_flight)
        instruments.WAITING.set(admission.waiting)
        await asyncio.sleep(interval_s)


def _counted(began: float, readings: int, refused: BaseException | None = None) -> None:
    """A batch acknowledged or refused: its readings by outcome, and how long it took."""
    instruments.ACK_SECONDS.observe(time.perf_counter() - began)
    if refused is None:
        instruments.ACCEPTED.inc(readings)
    else:
        instruments.refused(readings, refused)


def _as_batch(request: BatchRequest, sensors: set[str]) -> bytes | None:
    """For a one-sensor batch of a request whose only field, 1, is the readings, the request
    serialized: the bytes of a MetricBatch, without a copy of the readings. None otherwise."""
    if len(sensors) != 1 or isinstance(request, receiver_service_pb2.SyncMetricsRequest):
        return None
    request.DiscardUnknownFields()
    return request.SerializeToString()


def _legacy_violation(violation: Violation) -> Violation:
    """Names a reading's field as the legacy request does: metrics[0].value is "temperature"."""
    names = {
        "sensor_id": "sensor_uuid",
        "value": "temperature",
        "reading_time": "at",
        "metric_type": "temperature",
    }
    field = violation.field.removeprefix("metrics[0].")
    return Violation(names.get(field, field), violation.description)


async def main(stop: asyncio.Event) -> None:
    config = settings.load(ReceiverSettings, "receiver")
    index = workers.worker_index()
    setup_logging("receiver" if index is None else f"receiver[{index}]", config.log_level)
    log.info("starting: %s", settings.describe(config))
    limits = Limits(config.max_batch_readings, config.max_future_skew_s, frozenset(config.metric_types))
    clock = ArrivalClock(index or 0, workers.worker_count())
    producer = ProducerSlot(lambda: kafka.make_producer(config, "receiver"))
    admission = Admission(config.max_in_flight_readings, config.admission_wait_s)
    watch = KafkaWatch(producer)
    writer = MetricsWriter(
        producer, config.metrics_topic, watch, config.kafka_ack_timeout_s, instruments.PRODUCE_SECONDS,
        linger_s=config.linger_ms / 1000,
    )  # fmt: skip
    devices = Devices(config)
    receiver = Receiver(
        writer,
        admission,
        limits,
        clock,
        devices,
        config.require_registered_devices,
        config.line_protocol_sensor_tags,
        config.prometheus_sensor_labels,
        config.remote_write_max_bytes,
    )
    server = GrpcServer(
        config.grpc_address,
        [SERVICE.full_name],
        [lambda s: add_servicer(s, SERVICE, receiver, shed=admission.full)],
        max_message_bytes=config.max_message_bytes,
        reuse_port=index is not None,
        metrics_port=config.metrics_port,
    )
    await server.start()
    try:
        await retry_until_stopped("Kafka", producer.start, stop)
        await retry_until_stopped("Kafka (the devices topic)", devices.follower.start, stop)
        following = asyncio.create_task(devices.follower.follow())
        # Not serving (for health checks and load balancers) while Kafka does not answer.
        watch.on_change(server.set_serving)
        watching = asyncio.create_task(watch.run())
        sampling = asyncio.create_task(_sample(admission))
        await server.set_serving()
        log.info("serving")
        await stop.wait()
        watching.cancel()
        sampling.cancel()
        following.cancel()
    except Stopped:
        pass
    finally:
        # End the streams, stop intake, let running calls finish (they wait for Kafka), then flush
        # and close.
        receiver.leave()
        await shut_down(server, config.shutdown_grace_s, producer.stop, devices.follower.stop)
