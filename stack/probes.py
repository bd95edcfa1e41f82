"""Is a part up? One small real request to each: a query, a PING, metadata, a gRPC health check."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import urllib.error
import urllib.request
import uuid

import grpc
from aiokafka.admin import AIOKafkaAdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.kafka import client_options
from stack import access, certs, credentials, tokens
from stack.parts import Part
from stack.settings import StackSettings

# Through Envoy, this header picks the service whose health (or reflection) is asked.
SERVICE_HEADER = "x-metrics-service"


async def postgres(settings: StackSettings, port: int) -> None:
    conn = await access.postgres_superuser(settings, port=port)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def redis(settings: StackSettings, port: int) -> None:
    client = access.redis_node(settings, port, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def kafka(settings: StackSettings, port: int) -> None:
    """The broker at `port` answers (alone: not another of the cluster's)."""
    only = dataclasses.replace(access.kafka(settings), kafka_bootstrap_servers=f"127.0.0.1:{port}")
    admin = AIOKafkaAdminClient(**client_options(only), request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def mosquitto(settings: StackSettings, internal_port: int) -> None:
    """The broker lets the bridges' account in on the services' listener: an MQTT 5 CONNECT, and
    its CONNACK's reason code (one packet each way, on a socket closed whatever happens)."""
    bridge = credentials.MQTT_BRIDGE
    connect = connect_packet(f"probe-{uuid.uuid4().hex[:12]}", bridge.user, access.password(settings, bridge))

    def ask() -> int:
        with socket.create_connection(("127.0.0.1", internal_port), timeout=3) as sock:
            sock.sendall(connect)
            connack = sock.recv(5)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        if len(connack) < 4 or connack[0] != 0x20:
            raise RuntimeError(f"not a CONNACK: {connack!r}")
        return connack[3]  # after the type, the length and the session-present flag

    if (reason := await asyncio.to_thread(ask)) != 0:
        raise RuntimeError(f"CONNACK reason code {reason:#x}")


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """An MQTT 5 CONNECT: clean start, no session kept, a username and password."""

    def field(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    flags = 0b1100_0010  # username, password, clean start
    variable = (
        field("MQTT") + bytes([5, flags]) + (10).to_bytes(2, "big") + b"\x00"
    )  # keepalive 10 s, no properties
    rest = variable + field(client_id) + field(username) + field(password)
    length = bytearray()
    remaining = len(rest)
    while True:  # the remaining length: 7 bits a byte, the high bit says more follow
        remaining, byte = divmod(remaining, 128)
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return b"\x10" + bytes(length) + rest


async def http_get(port: int, path: str) -> tuple[int, str]:
    """The status and body of GET `path` on a loopback port."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    return await asyncio.to_thread(get)


async def envoy(settings: StackSettings) -> None:
    status, body = await http_get(settings.envoy_admin_port, "/ready")
    if status != 200 or "LIVE" not in body:
        raise RuntimeError(f"Envoy not ready: {status} {body.strip()}")


async def prometheus(settings: StackSettings) -> None:
    status, body = await http_get(settings.prometheus_port, "/-/ready")
    if status != 200:
        raise RuntimeError(f"Prometheus not ready: {status} {body.strip()}")


async def exporter(port: int, up_series: str) -> None:
    """The exporter answers, and reaches its server (its `up_series` is 1)."""
    status, body = await http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"HTTP {status}")
    if f"\n{up_series} 1\n" not in f"\n{body}":
        raise RuntimeError(f"{up_series} is not 1: it does not reach its server (see its log)")


async def grpc_health(
    address: str, service_header: str | None = None, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Raises unless the server at `address` reports SERVING (through Envoy when a header is given)."""
    metadata = ((SERVICE_HEADER, service_header),) if service_header else None
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2, metadata=metadata)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"health is {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")


async def service_via_envoy(settings: StackSettings, name: str) -> None:
    """Through the TLS port, with a token of the stack's key: what an outside client does."""
    await grpc_health(f"127.0.0.1:{settings.envoy_tls_port}", name, front_door_credentials(settings))


def front_door_credentials(settings: StackSettings, token: str | None = None) -> grpc.ChannelCredentials:
    """TLS trusting the local CA (or the system's roots for a configured certificate) and a bearer
    token: the one given, or a short-lived admin token of the stack's own key."""
    ca = certs.paths(settings).ca
    if token is None:
        token = tokens.mint(*tokens.signing_key(settings), scopes=["admin"], sensors=[""], ttl_s=300,
                            tier="gateway", subject="stack")  # fmt: skip
    return grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca.read_bytes() if ca is not None else None),
        grpc.access_token_call_credentials(token),
    )


async def probe(settings: StackSettings, part: Part) -> None:
    """The readiness check of a part."""
    name = part.what
    if name == "postgres":
        await postgres(settings, part.port)
    elif name == "redis":
        await redis(settings, part.port)
    elif name == "kafka":
        await kafka(settings, part.port)
    elif name == "envoy":
        await envoy(settings)
    elif name == "mosquitto":
        (broker,) = [b for b in settings.mqtt_brokers if b.tls_port == part.port]
        await mosquitto(settings, broker.internal_port)
    elif name == "prometheus":
        await prometheus(settings)
    elif name == "pg-exporter":
        await exporter(settings.postgres_exporter_port, "pg_up")
    elif name == "redis-exporter":
        await exporter(settings.redis_exporter_port, "redis_up")
    else:
        await grpc_health(f"127.0.0.1:{part.port}")
