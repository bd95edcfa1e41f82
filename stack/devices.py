"""make devices ARGS="import fleet.csv [--tokens DIR] [--ttl 30d]": registers a fleet from a CSV file
through DevicesService (batches of 1,000, all or none each), and writes each device a token of its
own, a file per device, with progress.

The CSV file has a header row; `device_id` is required, the other columns optional:

  device_id,sensor_id_prefix,display_name,tier,labels
  plant-7-boiler-1,plant-7-boiler-1-,Boiler 1,device,site=plant-7;kind=boiler
  plant-7-gw,plant-7-,Plant 7 gateway,gateway,site=plant-7

`tier` is device (the default) or gateway; `labels` are key=value pairs separated by ";". Devices
already registered are left as they are (an import can be run again after a failure). It talks to the
local stack's Envoy: its plaintext port, or while that is off its TLS port with an admin token it
mints from the stack's keys.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from metrics.v1 import device_pb2, devices_service_pb2
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from runtime import cli
from stack import certs, tokens
from stack.settings import StackSettings
from stack.supervisor import in_use
from stack.system import SetupError, say

if TYPE_CHECKING:  # the stubs' type of an asyncio channel's stub (only in the .pyi)
    from metrics.v1.devices_service_pb2_grpc import DevicesServiceAsyncStub

pb = devices_service_pb2
COLUMNS = ("device_id", "sensor_id_prefix", "display_name", "tier", "labels")
TIERS = {"": device_pb2.DEVICE_TIER_DEVICE, "device": device_pb2.DEVICE_TIER_DEVICE,
         "gateway": device_pb2.DEVICE_TIER_GATEWAY}  # fmt: skip
CHUNK = 1_000  # devices a BatchCreateDevices call (the API takes up to 10,000)
TOKENS_IN_FLIGHT = 32
TTL = re.compile(r"(\d+)([smhd])")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
PLACE = re.compile(r"requests\[(\d+)\]\.(.*)")


class FleetImportError(Exception):
    """What stops an import; the message names the line and field, or what to do."""


@dataclass(frozen=True)
class Row:
    line: int
    request: pb.CreateDeviceRequest


def read_csv(path: Path) -> list[Row]:
    """The file's devices; FleetImportError names each problem by line and column (up to 20)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetImportError(f"{path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in COLUMNS]
    if "device_id" not in header or unknown:
        why = f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown else "no device_id column"
        raise FleetImportError(f"{path}:1: {why}; the columns are {', '.join(COLUMNS)} (device_id required)")
    rows, problems = [], []
    for line, record in enumerate(reader, start=2):
        if None in record:
            problems.append(f"{path}:{line}: more fields than the header's {len(header)}")
            continue
        values = {k: (v or "").strip() for k, v in record.items()}
        device = device_pb2.Device(
            sensor_id_prefix=values.get("sensor_id_prefix", ""), display_name=values.get("display_name", "")
        )
        tier = values.get("tier", "").lower()
        if tier not in TIERS:
            problems.append(f"{path}:{line}: tier: {values['tier']!r} is not device or gateway")
        device.tier = TIERS.get(tier, device_pb2.DEVICE_TIER_DEVICE)
        for pair in filter(None, (p.strip() for p in values.get("labels", "").split(";"))):
            key, equals, value = pair.partition("=")
            if not equals:
                problems.append(f"{path}:{line}: labels: {pair!r} is not key=value")
            device.labels[key] = value
        rows.append(Row(line, pb.CreateDeviceRequest(device_id=values["device_id"], device=device)))
    if problems:
        more = [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise FleetImportError("\n".join(problems[:20] + more))
    if not rows:
        raise FleetImportError(f"{path}: no devices (a header row, then a device a line)")
    return rows


def parse_ttl(text: str) -> duration_pb2.Duration:
    match = TTL.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600s, 90m, 12h or 30d")
    return duration_pb2.Duration(seconds=int(match[1]) * UNIT_S[match[2]])


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    trailers: Any = error.trailing_metadata() or ()  # grpc's stubs type its items loosely
    for key, value in trailers:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            request = error_details_pb2.BadRequest()
            if detail.Unpack(request):
                found += [(v.field, v.description) for v in request.field_violations]
    return found


class Importer:
    def __init__(
        self, stub: DevicesServiceAsyncStub, metadata: tuple[tuple[str, str], ...], path: Path
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._path = path

    async def register(self, rows: list[Row], progress: Callable[[str], None]) -> tuple[int, int]:
        """Creates the devices a chunk at a time; returns (created, already registered)."""
        created = existing = 0
        began = time.monotonic()
        for first in range(0, len(rows), CHUNK):
            chunk = rows[first : first + CHUNK]
            try:
                await self._stub.BatchCreateDevices(
                    pb.BatchCreateDevicesRequest(requests=[r.request for r in chunk]), metadata=self._metadata
                )
                created += len(chunk)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise FleetImportError(self._placed(error, chunk, created)) from None
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                made, found = await self._one_by_one(chunk)
                created, existing = created + made, existing + found
            done, took = first + len(chunk), time.monotonic() - began
            progress(f"registered {done:,} of {len(rows):,} devices ({took:.1f} s)")
        return created, existing

    async def _one_by_one(self, chunk: list[Row]) -> tuple[int, int]:
        """A chunk some of whose devices exist: the others created, a call each."""
        made = found = 0
        for row in chunk:
            try:
                await self._stub.CreateDevice(row.request, metadata=self._metadata)
                made += 1
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                found += 1
        return made, found

    def _placed(self, error: grpc.aio.AioRpcError, chunk: list[Row], created: int) -> str:
        lines = []
        for field, description in violations(error) or [("", error.details() or "")]:
            match = PLACE.fullmatch(field)
            where = (
                f"{self._path}:{chunk[int(match[1])].line}: {match[2]}" if match else f"{self._path}: {field}"
            )
            lines.append(f"{where}: {description}")
        lines.append(f"(nothing of lines {chunk[0].line}-{chunk[-1].line} was registered; "
                     f"{created:,} devices before them were)")  # fmt: skip
        return "\n".join(lines)

    async def issue_tokens(
        self,
        rows: list[Row],
        folder: Path,
        ttl: duration_pb2.Duration | None,
        progress: Callable[[str], None],
    ) -> None:
        """A token per device, in <folder>/<device_id>.token (owner-readable only; made first)."""
        began, done = time.monotonic(), 0
        queue: Iterator[Row] = iter(rows)

        async def worker() -> None:
            nonlocal done
            for row in queue:
                request = pb.IssueTokenRequest(device_id=row.request.device_id)
                if ttl is not None:
                    request.ttl.CopyFrom(ttl)
                answer = await self._stub.IssueToken(request, metadata=self._metadata)
                certs.write_private(folder / f"{row.request.device_id}.token", (answer.token + "\n").encode())
                done += 1
                if done % CHUNK == 0 or done == len(rows):
                    progress(f"issued {done:,} of {len(rows):,} tokens ({time.monotonic() - began:.1f} s)")

        await asyncio.gather(*(worker() for _ in range(TOKENS_IN_FLIGHT)))


def channel(settings: StackSettings) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    """The local stack's front door: plaintext, or TLS with an admin token minted here."""
    if settings.envoy_plaintext:
        return grpc.aio.insecure_channel(f"127.0.0.1:{settings.envoy_port}"), ()
    ca = certs.paths(settings).ca
    if ca is None:
        raise SetupError(
            "the stack's TLS certificate is not its own CA's: this tool needs the plaintext port"
        )
    key, kid = tokens.signing_key(settings)
    token = tokens.mint(key, kid, scopes=["admin"], sensors=[""], ttl_s=3600, subject="make devices")
    credentials = grpc.ssl_channel_credentials(ca.read_bytes())
    return grpc.aio.secure_channel(f"localhost:{settings.envoy_tls_port}", credentials), (
        ("authorization", f"Bearer {token}"),
    )


async def import_fleet(args: argparse.Namespace, settings: StackSettings) -> None:
    rows = read_csv(args.file)
    say(f"{args.file}: {len(rows):,} devices")
    opened, metadata = channel(settings)
    async with opened:
        importer = Importer(DevicesServiceStub(opened), metadata, args.file)
        created, existing = await importer.register(rows, say)
        say(f"{created:,} registered, {existing:,} already were")
        if args.tokens is not None:
            args.tokens.mkdir(parents=True, exist_ok=True)
            await importer.issue_tokens(rows, args.tokens, args.ttl, say)
            say(f"tokens in {args.tokens}/<device_id>.token")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make devices ARGS=...", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    imports = commands.add_parser("import", help="register the devices of a CSV file")
    imports.add_argument("file", type=Path, help="the CSV file (a header row; device_id required)")
    imports.add_argument(
        "--tokens", type=Path, metavar="DIR", help="issue each device a token, in DIR/<device_id>.token"
    )
    imports.add_argument(
        "--ttl", type=parse_ttl, help="the tokens' lifetime: 3600s, 90m, 12h, 30d (default 1h; 60 s to 366 d)"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(import_fleet(args, in_use()))
    except (FleetImportError, SetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as error:
        hint = " (is the stack up? make run)" if error.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"error: the registry answered {error.code().name}: {error.details()}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
