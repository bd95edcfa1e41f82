"""Clients that hold connections without finishing a request: Envoy closes them (408 after 10 s of
unfinished headers; on the TLS port, a connection without a finished handshake after 10 s), and
meanwhile every other client is served."""

from __future__ import annotations

import asyncio
import resource
import time

from stack import procfs
from testkit.http import http
from tests import front_door
from tests.faults import pid_of
from tests.target import Target

SLOW = 200  # connections that start a request and never finish its headers


async def test_slow_headers_are_cut_and_other_clients_are_served(target: Target) -> None:
    host, port = target.envoy.split(":")
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(SLOW)]
    began = time.monotonic()
    try:
        for _, writer in connections:
            writer.write(b"GET /v1/sensors HTTP/1.1\r\nHost: metrics\r\nX-Slow: ")
            await writer.drain()
        # Meanwhile, an ordinary client is answered at once.
        status, body = await http("GET", f"{target.envoy_url}/v1/sensors?pageSize=1")
        assert status == 200, body
        answers = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in connections)), timeout=30
        )
        waited = time.monotonic() - began
    finally:
        for _, writer in connections:
            writer.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), {a[:40] for a in answers}
    print(f"{SLOW} slow clients answered 408 and closed after {waited:.1f} s")


IDLE = 10_000  # connections opened to the TLS port that never send a byte


async def test_ten_thousand_idle_connections_leave_other_clients_served(target: Target) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard > IDLE + 1_000, f"this test needs {IDLE + 1_000} open files; the limit is {hard}"
    host, port = target.envoy_tls.split(":")
    envoy = pid_of("envoy")
    rss_before = procfs.rss_mb(envoy)
    connections = []
    try:
        for _ in range(IDLE):
            connections.append(await asyncio.open_connection(host, int(port)))
        opened = time.monotonic()
        rss_flooded = procfs.rss_mb(envoy)
        # Meanwhile clients are served: over TLS with a token, and on the local port.
        headers = front_door.auth(front_door.token(target))
        status, body = await http(
            "GET", f"{target.envoy_tls_url}/v1/sensors?pageSize=1", headers=headers,
            tls=front_door.tls_context(target),
        )  # fmt: skip
        assert status == 200, body
        status, body = await http("GET", f"{target.envoy_url}/v1/sensors?pageSize=1")
        assert status == 200, body
        # Envoy closes each idle one once the TLS handshake's deadline has passed.
        answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in connections)), timeout=60)
        closed_after = time.monotonic() - opened
    finally:
        for _, writer in connections:
            writer.close()
    assert answers == [b""] * IDLE, {a[:40] for a in answers}
    print(
        f"{IDLE:,} idle connections: Envoy's RSS {rss_before:.0f} -> {rss_flooded:.0f} MB; "
        f"others served meanwhile; all closed by Envoy {closed_after:.1f} s after the last opened"
    )
