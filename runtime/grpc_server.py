"""The gRPC server every service runs: its own services plus health and reflection."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

# Large enough for a 10,000-reading batch with labels.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class GrpcServer:
    """A grpc.aio server on one address, reporting health for the services it serves.

    Health is NOT_SERVING until `set_serving()`; the empty service name "" stands for the process.
    """

    def __init__(
        self,
        address: str,
        service_names: Sequence[str],
        register: Sequence[Callable[[grpc.aio.Server], None]] = (),
    ) -> None:
        self.address = address
        self.service_names = tuple(service_names)
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        for add in register:
            add(self._server)
        reflection.enable_server_reflection(
            (
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self.port = self._server.add_insecure_port(address)

    async def start(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        log.info("gRPC server listening on %s", self.address)

    async def set_serving(self, serving: bool = True) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set_all(status)

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, refuses new calls and waits up to `grace` s for running ones."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self.service_names):
            await self._health.set(name, status)
