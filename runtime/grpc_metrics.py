"""gRPC server metrics from one interceptor, under the names go-grpc-prometheus made conventional
(grpc_server_started_total, grpc_server_handled_total, grpc_server_handling_seconds, ...), so the
dashboards and alerts written for those work unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from runtime.telemetry import LATENCY_BUCKETS

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.", (*_LABELS, "grpc_code")
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its end (a stream's whole life).",
    _LABELS,
    buckets=LATENCY_BUCKETS,
)
RECEIVED = Counter("grpc_server_msg_received_total", "Stream messages received by the server.", _LABELS)
SENT = Counter("grpc_server_msg_sent_total", "Stream messages sent by the server.", _LABELS)

_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
_MAKE = {
    "unary": grpc.unary_unary_rpc_method_handler,
    "client_stream": grpc.stream_unary_rpc_method_handler,
    "server_stream": grpc.unary_stream_rpc_method_handler,
    "bidi_stream": grpc.stream_stream_rpc_method_handler,
}
# grpc's stubs type handlers by request and response, which a wrapper of any method cannot name.
Handler = Any
_CODES = {code.value[0]: code.name for code in grpc.StatusCode}


class GrpcMetrics(grpc.aio.ServerInterceptor):
    """Counts and times every call of the server it is given to."""

    def __init__(self) -> None:
        # Per method: the handler it wraps and the wrapped one (a method's handler is registered once).
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        known = self._wrapped.get(details.method)
        if known is None or known[0] is not handler:
            known = (handler, _instrument(details.method, handler))
            self._wrapped[details.method] = known
        return known[1]


class _Call:
    """The series of one method, resolved once."""

    def __init__(self, kind: str, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        labels = (kind, service, name)
        self.started = STARTED.labels(*labels)
        self.handling = HANDLING.labels(*labels)
        self.received = RECEIVED.labels(*labels)
        self.sent = SENT.labels(*labels)
        self._labels = labels
        self._handled: dict[str, Any] = {}

    def ended(self, began: float, code: str) -> None:
        self.handling.observe(time.perf_counter() - began)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = HANDLED.labels(*self._labels, code)
        handled.inc()


def _code(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    if code is None:
        return "UNKNOWN" if exc is not None and not isinstance(exc, grpc.aio.AbortError) else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else _CODES.get(code, "UNKNOWN")


def _instrument(method: str, handler: Handler) -> Handler:
    kind = _TYPES[(handler.request_streaming, handler.response_streaming)]
    call = _Call(kind, method)
    inner = handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream

    def requests(iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def counted() -> AsyncIterator[Any]:
            async for request in iterator:
                call.received.inc()
                yield request

        return counted()

    if not handler.response_streaming:

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            began = time.perf_counter()
            call.started.inc()
            failure: BaseException | None = None
            try:
                return await inner(requests(request) if handler.request_streaming else request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                call.ended(began, _code(context, failure))

    else:

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # type: ignore[misc]
            began = time.perf_counter()
            call.started.inc()
            failure: BaseException | None = None
            try:
                async for response in inner(
                    requests(request) if handler.request_streaming else request, context
                ):
                    call.sent.inc()
                    yield response
            except BaseException as exc:
                failure = exc
                raise
            finally:
                call.ended(began, _code(context, failure))

    return _MAKE[kind](
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
