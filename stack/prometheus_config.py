"""Prometheus's configuration for the local stack: what it scrapes, and the rules in prometheus/."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from stack import settings as stack_settings
from stack.settings import ROOT, SERVICES, StackSettings

RULES = ROOT / "prometheus" / "rules.yml"
# Often enough that a rate over a minute has a dozen points and a test sees a change within seconds.
INTERVAL = "5s"


def render(settings: StackSettings, rules: Path = RULES) -> str:
    local = "127.0.0.1"
    jobs: list[tuple[str, int, str]] = [
        *((name, getattr(settings, f"{name}_metrics_port"), "/metrics") for name in SERVICES),
        ("envoy", settings.envoy_admin_port, "/stats/prometheus"),
        ("kafka", settings.kafka_metrics_port, "/metrics"),
        ("postgres", settings.postgres_exporter_port, "/metrics"),
        ("redis", settings.redis_exporter_port, "/metrics"),
        ("prometheus", settings.prometheus_port, "/metrics"),
    ]
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [f"{local}:{port}"]}]}
            for job, port, path in jobs
        ],
    }
    return "# Written by `make run` (stack/prometheus_config.py): edits here are lost.\n" + yaml.safe_dump(
        config, sort_keys=False
    )


if __name__ == "__main__":
    # `make lint` checks what the stack would run: python -m stack.prometheus_config > prometheus.yml
    sys.stdout.write(render(stack_settings.load()))
