"""Peers on this machine, measured in the same run as ours: InfluxDB 1.6 (Debian's influxdb) taking
line protocol in large batches, storage only (no rules, no Kafka, no acknowledgement of a replica)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.ecosystem import CONCURRENCY, LINES_PER_BATCH
from bench.measure import Env
from stack.system import install_missing
from testkit.http import http_bytes

CONFIG = """
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
[monitor]
  store-enabled = false
"""


async def influxdb_line_protocol(env: Env, seconds: float) -> float:
    """Lines per second InfluxDB acknowledges: batches of 5,000 lines of 500 series (as our
    line_protocol_readings_per_s), 4 at a time, each batch a second of its own."""
    install_missing({"influxdb": shutil.which("influxd") is not None})
    # Timestamps: a batch's second, then the line's number as nanoseconds; the same body, its second
    # replaced (in C) for each batch.
    template = "\n".join(
        f"lpbench,sensor=lp-{i % 500},site=p7 value={i % 97}.5 SSSSSSSSSS{i:09d}"
        for i in range(LINES_PER_BATCH)
    ).encode()
    first_s = int(time.time()) - 10 * 86_400
    async with _influxd() as url:
        status, _, answer = await asyncio.to_thread(
            http_bytes, "POST", f"{url}/query?q=CREATE+DATABASE+bench"
        )
        if status != 200:
            raise RuntimeError(f"InfluxDB did not create the database: HTTP {status} {answer[:200]!r}")
        batches = iter(range(10**9))
        deadline = time.monotonic() + seconds
        written = 0

        async def writer() -> None:
            nonlocal written
            for n in batches:
                if time.monotonic() >= deadline:
                    return
                body = template.replace(b"SSSSSSSSSS", str(first_s + n).encode())
                status, _, answer = await asyncio.to_thread(
                    http_bytes, "POST", f"{url}/write?db=bench", raw=body
                )
                if status != 204:
                    raise RuntimeError(f"InfluxDB refused a batch: HTTP {status} {answer[:200]!r}")
                written += LINES_PER_BATCH

        started = time.monotonic()
        await asyncio.gather(*(writer() for _ in range(CONCURRENCY)))
        rate = written / (time.monotonic() - started)
    env.say(f"  InfluxDB 1.6: {rate:,.0f} lines/s acknowledged")
    return rate


@contextlib.asynccontextmanager
async def _influxd() -> AsyncIterator[str]:
    """A private influxd on two free ports, its data in a temporary folder; its URL."""
    with tempfile.TemporaryDirectory(prefix="bench-influxdb-") as folder:
        http, rpc = _free_port(), _free_port()
        config = Path(folder) / "influxdb.conf"
        config.write_text(CONFIG.format(folder=folder, http=http, rpc=rpc))
        log = (Path(folder) / "influxd.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            "influxd", "-config", str(config), stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{http}"
        try:
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(_ping, url) != 204:
                if process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"influxd did not start: see {folder}/influxd.log")
                await asyncio.sleep(0.2)
            yield url
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
            log.close()


def _ping(url: str) -> int:
    try:
        return http_bytes("GET", f"{url}/ping")[0]
    except OSError:
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
