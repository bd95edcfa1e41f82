"""python -m simulator: stream a simulated sensor fleet's readings to Metrics, with progress."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from runtime import cli
from simulator.fleet import Fleet
from simulator.load import PATHS, Plan, Result, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--sensors", type=int, default=100, help="number of sensors (default 100)")
    parser.add_argument(
        "--rate", type=float, default=1000, help="readings per second, 0 for as fast as accepted"
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds of sending (default 10)")
    parser.add_argument(
        "--batch", type=int, default=100, help="readings per request, of one sensor (default 100)"
    )
    parser.add_argument("--types", default="temperature", help="comma-separated metric types")
    parser.add_argument(
        "--above", type=float, default=0.01, help="share of readings at or above the threshold"
    )
    parser.add_argument("--threshold", type=float, default=95.0, help="the rule's threshold (default 95)")
    parser.add_argument(
        "--path", choices=PATHS, default="stream",
        help="client stream, bidirectional with acks, unary, or HTTP/JSON (default stream)",
    )  # fmt: skip
    parser.add_argument("--connections", type=int, default=4, help="concurrent streams or connections")
    parser.add_argument("--target", default="127.0.0.1:8080", help="Envoy's address (default 127.0.0.1:8080)")
    parser.add_argument(
        "--arrival-times", action="store_true",
        help="send readings without times (stamped on arrival) and repeat each sensor's values",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")
    args = parser.parse_args()
    fleet = Fleet(
        args.sensors,
        tuple(args.types.split(",")),
        args.above,
        args.threshold,
        arrival_times=args.arrival_times,
    )
    plan = Plan(fleet, args.path, args.rate, args.duration, args.batch, args.connections, args.target)
    print(f"simulating {args.sensors} sensors ({fleet.prefix}*), {args.rate:g} readings/s over {args.path} "
          f"for {args.duration:g} s", file=sys.stderr)  # fmt: skip
    result = asyncio.run(run(plan, progress))
    summary = summarize(result, fleet)
    print(f"done: {summary['acked']} readings acknowledged, {summary['readings_per_s']:.0f}/s, "
          f"ack latency p50 {summary['latency_p50_ms']:.1f} ms, p99 {summary['latency_p99_ms']:.1f} ms, "
          f"errors {summary['errors'] or 'none'}", file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    return 0 if not result.errors else 1


def progress(result: Result, elapsed: float) -> None:
    rate = result.acked / elapsed if elapsed else 0
    errors = sum(result.errors.values())
    print(f"  {elapsed:5.1f} s  sent {result.sent:>10,}  acked {result.acked:>10,}  {rate:>9,.0f}/s  "
          f"errors {errors}",
          file=sys.stderr, flush=True)  # fmt: skip


def summarize(result: Result, fleet: Fleet) -> dict[str, object]:
    latencies = sorted(result.latencies_ms) or [0.0]
    return {
        "sensor_prefix": fleet.prefix,
        "sent": result.sent,
        "acked": result.acked,
        "readings_per_s": result.acked / result.elapsed_s,
        "latency_p50_ms": latencies[len(latencies) // 2],
        "latency_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": dict(result.errors),
    }


if __name__ == "__main__":
    cli.run(main)
