"""The gRPC server every service runs: its own services plus health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from metrics.v1 import (
    alarms_service_pb2,
    assessor_service_pb2,
    devices_service_pb2,
    notifier_service_pb2,
    receiver_service_pb2,
    rules_service_pb2,
)
from runtime import telemetry
from runtime.errors import ServiceError, Undecodable, Violation
from runtime.grpc_metrics import GrpcMetrics

log = logging.getLogger(__name__)

# Queries and answers; the receiver takes larger messages (its max_message_bytes setting).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# The public API: the services Envoy routes. Their modules are imported here, so the descriptors of
# both (and of every file they import) are in the pool that reflection reads, in every service.
PUBLIC_API = (
    receiver_service_pb2.DESCRIPTOR.services_by_name["ReceiverService"].full_name,
    assessor_service_pb2.DESCRIPTOR.services_by_name["AssessorService"].full_name,
    rules_service_pb2.DESCRIPTOR.services_by_name["RulesService"].full_name,
    alarms_service_pb2.DESCRIPTOR.services_by_name["AlarmsService"].full_name,
    notifier_service_pb2.DESCRIPTOR.services_by_name["SubscriptionsService"].full_name,
    devices_service_pb2.DESCRIPTOR.services_by_name["DevicesService"].full_name,
)
# Envoy sends this header, with this value, on the reflection requests that name no service
# (envoy/envoy.yaml): they ask what the front door serves, not what one service does.
FRONT_DOOR_HEADER = ("x-metrics-reflection", "front-door")


def add_servicer(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    servicer: object,
    shed: Callable[[], ServiceError | None] | None = None,
) -> None:
    """Serves `servicer`'s methods of `service`, with requests that fail to parse as Undecodable.

    `shed`, if given, is asked before a unary request is parsed; an error it returns answers the
    call, so an overloaded service spends nothing on requests it cannot take.
    """
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in service.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = kinds[(method.client_streaming, method.server_streaming)](
            getattr(servicer, method.name),
            request_deserializer=_tolerant(request_type, None if method.client_streaming else shed),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]  # not in the stubs yet


def _tolerant(
    message_type: type[Message], shed: Callable[[], ServiceError | None] | None
) -> Callable[[bytes], Message | Undecodable | ServiceError]:
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Undecodable | ServiceError:
        if shed is not None and (error := shed()) is not None:
            return error
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Undecodable(name, str(exc) or "malformed protobuf", _culprit(message_type, data))

    return parse


def _culprit(message_type: type[Message], data: bytes) -> Violation | None:
    """The field that made `data` fail to parse, where it can be told."""
    if (path := _bad_utf8_field(message_type, data)) is not None:
        return Violation(path, "is not valid UTF-8")
    if (path := _malformed_field(message_type.DESCRIPTOR, data, "")) is not None:
        return Violation(path, "is malformed (not what its type is encoded as)")
    return None


def _malformed_field(descriptor: Any, data: bytes, prefix: str) -> str | None:
    """Walks the wire format along the descriptor to the first field that does not decode."""
    seen: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            field = descriptor.fields_by_number.get(number)
            name = prefix + (field.name if field is not None else f"#{number}")
            if field is not None and field.is_repeated:
                name += f"[{seen.get(number, 0)}]"
                seen[number] = seen.get(number, 0) + 1
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                size, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + size], pos + size
                if len(chunk) < size:
                    return name
                if field is not None and field.message_type is not None:
                    inner = _malformed_field(field.message_type, chunk, name + ".")
                    if inner is not None:
                        return inner
            else:
                return name
    except IndexError:
        return prefix.rstrip(".") or None
    return None if pos == len(data) else prefix.rstrip(".") or None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _bad_utf8_field(message_type: type[Message], data: bytes) -> str | None:
    """The path of the first string field that is not UTF-8 (what upb's error does not say)."""
    try:
        lenient = _as_bytes(message_type).FromString(data)
    except DecodeError:
        return None  # broken in some other way
    return _first_bad_utf8(lenient, "")


_AS_BYTES: dict[str, type[Message]] = {}


def _as_bytes(message_type: type[Message]) -> type[Message]:
    """`message_type` with every string field declared bytes, in a descriptor pool of its own."""
    name = message_type.DESCRIPTOR.full_name
    if name in _AS_BYTES:
        return _AS_BYTES[name]
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: Any) -> None:
        if file.name in added:
            return
        added.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        messages = list(proto.message_type)
        while messages:
            message = messages.pop()
            messages.extend(message.nested_type)
            for field in message.field:
                # Map keys cannot be bytes: a map key that is not UTF-8 stays unnamed.
                is_map_key = message.options.map_entry and field.name == "key"
                if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING and not is_map_key:
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        pool.Add(proto)

    add(message_type.DESCRIPTOR.file)
    _AS_BYTES[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return _AS_BYTES[name]


def _first_bad_utf8(message: Message, prefix: str) -> str | None:
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items: list[tuple[str, Any]] = [(f"{path}[{k!r}]", v) for k, v in value.items()]
        elif field.is_repeated:
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(path, value)]
        for item_path, item in items:
            if isinstance(item, bytes) and not _is_utf8(item):
                return item_path
            if isinstance(item, Message) and (found := _first_bad_utf8(item, item_path + ".")):
                return found
    return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class GrpcServer:
    """A grpc.aio server on one address, reporting health for the services it serves.

    Health is NOT_SERVING until `set_serving()`; the empty service name "" stands for the process.
    SIGUSR1 drains it: NOT_SERVING from then on, whatever the service's own state, so that load
    balancers (Envoy's health checks) send it no new calls while it still answers those that come;
    then SIGTERM stops it with nothing in flight (`make upgrade`, docs/operations/upgrades.md).
    """

    def __init__(
        self,
        address: str,
        service_names: Sequence[str],
        register: Sequence[Callable[[grpc.aio.Server], None]] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        reuse_port: bool = False,
        metrics_port: int = 0,
        front_door_reflection: bool = False,
    ) -> None:
        """`reuse_port`: several processes of one service share the address (runtime/workers.py);
        otherwise a second process on it fails to start rather than quietly share the calls.
        `metrics_port`: Prometheus metrics on the address's host and this port, every call counted
        and timed (runtime/grpc_metrics.py); 0: none. `front_door_reflection`: this server answers
        Envoy's reflection requests that name no service (FRONT_DOOR_HEADER) for the whole public
        API; other reflection requests list its own services only."""
        self.address = address
        self.metrics_port = metrics_port
        self.service_names = tuple(service_names)
        self._server = grpc.aio.server(
            interceptors=[GrpcMetrics()] if metrics_port else [],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", int(reuse_port)),
                # Receive windows stay at 64 KB a stream rather than growing: a request waiting for
                # the service is not buffered ahead in full (under overload that was hundreds of MB).
                ("grpc.http2.bdp_probe", 0),
            ],
        )
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        for add in register:
            add(self._server)
        health = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            _Reflection(
                (*self.service_names, health, reflection.SERVICE_NAME),
                (*PUBLIC_API, reflection.SERVICE_NAME) if front_door_reflection else None,
            ),
            self._server,
        )
        self.port = self._server.add_insecure_port(address)
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()  # a drain asked for by a signal, kept till the stop

    async def start(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: self._tasks.add(loop.create_task(self.drain())))
        log.info("gRPC server listening on %s", self.address)
        telemetry.serve(self.address.rpartition(":")[0], self.metrics_port)

    async def set_serving(self, serving: bool = True) -> None:
        if self.draining:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set_all(status)

    async def drain(self) -> None:
        """NOT_SERVING for good: the calls that still come are answered, new ones go elsewhere."""
        if not self.draining:
            log.info("draining: reporting NOT_SERVING until stopped")
        self.draining = True
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, refuses new calls and waits up to `grace` s for running ones."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self.service_names):
            await self._health.set(name, status)


class _Reflection(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]  # untyped base
    """Reflection of this server's own services, or of the public API for a request that came
    through the front door without naming a service (FRONT_DOOR_HEADER); both read one pool."""

    def __init__(self, own: Sequence[str], front_door: Sequence[str] | None) -> None:
        self._own = _Symbols(own)
        self._front_door = None if front_door is None else _Symbols(front_door)

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        chosen = self._own
        metadata: Iterable[Any] = context.invocation_metadata() or ()  # (key, value) pairs
        if self._front_door is not None and any(tuple(item) == FRONT_DOOR_HEADER for item in metadata):
            chosen = self._front_door
        async for response in chosen.ServerReflectionInfo(request_iterator, context):
            yield response


class _Symbols(reflection.aio.ReflectionServicer):  # type: ignore[misc]  # untyped base
    """grpcio-reflection's servicer, which also finds the file of a method (`grpcurl describe
    metrics.v1.ReceiverService.PushMetrics`): the pool's FindFileContainingSymbol finds services,
    messages and fields, but not methods."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        service, _, method = fully_qualified_name.rpartition(".")
        with contextlib.suppress(KeyError):  # not a service's method: looked up as it is
            if method in self._pool.FindServiceByName(service).methods_by_name:
                fully_qualified_name = service
        return super()._file_containing_symbol(request, fully_qualified_name)
