"""Clients that hold connections without finishing a request: Envoy closes them (408 after 10 s of
unfinished headers), and meanwhile every other client is served."""

from __future__ import annotations

import asyncio
import time

from testkit.http import http
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
