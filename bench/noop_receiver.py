"""python -m bench.noop_receiver PORT: a ReceiverService that does nothing but answer.

The ceiling of one Python grpc.aio process (on uvloop, as the services run) for one-reading calls:
Every call is answered at once, SyncMetrics acknowledges each batch as it arrives. The fleet benchmark
compares the receiver with it, measured in the same run by the same load generator.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from metrics.v1 import receiver_service_pb2, receiver_service_pb2_grpc
from runtime.lifecycle import run

Context = grpc.aio.ServicerContext[Any, Any]


class NoopReceiver(receiver_service_pb2_grpc.ReceiverServiceServicer):
    async def PushMetrics(
        self, request: receiver_service_pb2.PushMetricsRequest, context: Context
    ) -> receiver_service_pb2.PushMetricsResponse:
        return receiver_service_pb2.PushMetricsResponse(accepted_count=len(request.metrics))

    async def StreamMetrics(
        self, request_iterator: AsyncIterator[receiver_service_pb2.StreamMetricsRequest], context: Context
    ) -> receiver_service_pb2.StreamMetricsResponse:
        accepted = batches = 0
        async for request in request_iterator:
            accepted += len(request.metrics)
            batches += 1
        return receiver_service_pb2.StreamMetricsResponse(accepted_count=accepted, batch_count=batches)

    async def RecordLegacyMeasurement(
        self, request: receiver_service_pb2.RecordLegacyMeasurementRequest, context: Context
    ) -> receiver_service_pb2.RecordLegacyMeasurementResponse:
        return receiver_service_pb2.RecordLegacyMeasurementResponse(result=True, response="OK")

    async def WriteLineProtocol(
        self, request: receiver_service_pb2.WriteLineProtocolRequest, context: Context
    ) -> receiver_service_pb2.WriteLineProtocolResponse:
        return receiver_service_pb2.WriteLineProtocolResponse()

    async def WritePrometheus(
        self, request: receiver_service_pb2.WritePrometheusRequest, context: Context
    ) -> receiver_service_pb2.WritePrometheusResponse:
        return receiver_service_pb2.WritePrometheusResponse()

    async def SyncMetrics(
        self, request_iterator: AsyncIterator[receiver_service_pb2.SyncMetricsRequest], context: Context
    ) -> AsyncIterator[receiver_service_pb2.SyncMetricsResponse]:
        async for request in request_iterator:
            yield receiver_service_pb2.SyncMetricsResponse(
                sequence=request.sequence, accepted_count=len(request.metrics)
            )


async def serve(port: int, stop: asyncio.Event) -> None:
    server = grpc.aio.server()
    receiver_service_pb2_grpc.add_ReceiverServiceServicer_to_server(NoopReceiver(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"noop receiver on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    run(lambda stop: serve(int(sys.argv[1]), stop))
