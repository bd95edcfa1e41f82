"""Prometheus's configuration for the local stack: what it scrapes, and the rules in prometheus/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from stack import settings as stack_settings
from stack.settings import ROOT, SERVICES, StackSettings

RULES = ROOT / "prometheus" / "rules.yml"
# Often enough that a rate over a minute has a dozen points and a test sees a change within seconds.
INTERVAL = "5s"


def render(settings: StackSettings, rules: Path = RULES) -> str:
    local = "127.0.0.1"
    jobs: list[tuple[str, list[int], str]] = [
        *((name, [i.metrics_port for i in settings.instances(name)], "/metrics") for name in SERVICES),
        ("envoy", [settings.envoy_admin_port], "/stats/prometheus"),
        ("kafka", [b.metrics_port for b in settings.kafka_brokers], "/metrics"),
        ("postgres", [settings.postgres_exporter_port], "/metrics"),
        ("prometheus", [settings.prometheus_port], "/metrics"),
    ]
    scrapes: list[dict[str, Any]] = [
        {
            "job_name": job,
            "metrics_path": path,
            "static_configs": [{"targets": [f"{local}:{p}" for p in ports]}],
        }
        for job, ports, path in jobs
    ]
    # The Redis exporter scrapes each node on request (/scrape?target=), named by its address.
    exporter = f"{local}:{settings.redis_exporter_port}"
    scrapes.append({
        "job_name": "redis",
        "metrics_path": "/scrape",
        "static_configs": [{"targets": [f"redis://{local}:{n.port}" for n in settings.redis_nodes]}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": exporter},
        ],
    })  # fmt: skip
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": scrapes,
    }
    if settings.envoy_plaintext:
        # PromQL over the stored readings (docs/prometheus.md): the assessor answers remote read
        # through the front door. read_recent: also for the last hours, which this Prometheus holds
        # of its own scrapes, not of the fleet's readings.
        config["remote_read"] = [{
            "name": "metrics",
            "url": f"http://{local}:{settings.envoy_port}/api/v1/read",
            "read_recent": True,
            "remote_timeout": "30s",
        }]  # fmt: skip
    return "# Written by `make run` (stack/prometheus_config.py): edits here are lost.\n" + yaml.safe_dump(
        config, sort_keys=False
    )


if __name__ == "__main__":
    # `make lint` checks what the stack would run: python -m stack.prometheus_config > prometheus.yml
    sys.stdout.write(render(stack_settings.load()))
