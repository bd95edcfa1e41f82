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
    # The TLS port, the CA that signed its certificate, and the folder of the keys that sign tokens
    # (PEM files named by key id; the newest signs). Relative paths are from the checkout's root.
    envoy_tls: str
    tls_ca_file: str
    token_keys_dir: str
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

    @property
    def envoy_tls_url(self) -> str:
        return f"https://{self.envoy_tls}"


def load() -> Target:
    path = Path(os.environ.get("METRICS_TEST_TARGET", DEFAULT))
    with path.open("rb") as f:
        return Target(**tomllib.load(f))
