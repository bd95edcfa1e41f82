"""The deployment under test, read from a TOML file (METRICS_TEST_TARGET, default: the local stack)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT = Path(__file__).parent / "targets" / "local.toml"


@dataclass(frozen=True)
class Target:
    envoy: str
    kafka_bootstrap_servers: str
    redis_url: str
    postgres_dsn: str
    metrics_topic: str
    events_topic: str
    dead_letter_topic: str
    processor_group: str
    saver_group: str
    local_stack: bool
    services: dict[str, str]

    @property
    def envoy_url(self) -> str:
        return f"http://{self.envoy}"


def load() -> Target:
    path = Path(os.environ.get("METRICS_TEST_TARGET", DEFAULT))
    with path.open("rb") as f:
        return Target(**tomllib.load(f))
