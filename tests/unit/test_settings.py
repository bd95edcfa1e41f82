"""Settings: from the environment and an optional file, typed, with clear errors and masked secrets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.settings import SettingsError, describe, load, secret


@dataclass(frozen=True)
class Example:
    port: int = 1
    ratio: float = 0.5
    enabled: bool = False
    name: str = "x"
    types: tuple[str, ...] = ()
    dsn: str = secret("postgresql://u:pw@h/db")


def test_defaults() -> None:
    assert load(Example, "svc", {}) == Example()


def test_service_variable_wins_over_shared_and_file(tmp_path: Path) -> None:
    config = tmp_path / "metrics.toml"
    config.write_text('[common]\nport = 5\nname = "common"\n[svc]\nname = "file"\n')
    env = {"METRICS_CONFIG": str(config), "METRICS_PORT": "7", "METRICS_SVC_PORT": "8"}
    loaded = load(Example, "svc", env)
    assert (loaded.port, loaded.name) == (8, "file")
    assert load(Example, "other", env).port == 7


def test_types_are_converted() -> None:
    env = {"METRICS_RATIO": "2", "METRICS_ENABLED": "yes", "METRICS_TYPES": "temperature, humidity"}
    loaded = load(Example, "svc", env)
    assert (loaded.ratio, loaded.enabled, loaded.types) == (2.0, True, ("temperature", "humidity"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRICS_SVC_PORT": "eighty"}, "METRICS_SVC_PORT: expected an integer, got 'eighty'"),
        ({"METRICS_ENABLED": "maybe"}, "METRICS_ENABLED: expected a boolean"),
        ({"METRICS_RATIO": "half"}, "METRICS_RATIO: expected a number"),
        ({"METRICS_CONFIG": "/no/such/file.toml"}, "METRICS_CONFIG=/no/such/file.toml"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(Example, "svc", env)


def test_secrets_are_masked() -> None:
    assert describe(Example())["dsn"] == "***"
    assert describe(Example())["name"] == "x"


def test_a_file_variant_gives_the_value_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("postgresql://u:s3cret@h/db\n")
    (tmp_path / "port").write_text("9")
    env = {"METRICS_SVC_DSN_FILE": str(tmp_path / "dsn"), "METRICS_PORT_FILE": str(tmp_path / "port")}
    loaded = load(Example, "svc", env)
    assert (loaded.dsn, loaded.port) == ("postgresql://u:s3cret@h/db", 9)
    assert describe(loaded)["dsn"] == "***"


def test_the_service_file_variant_wins_over_the_shared_variable(tmp_path: Path) -> None:
    (tmp_path / "name").write_text("from-file\n")
    env = {"METRICS_SVC_NAME_FILE": str(tmp_path / "name"), "METRICS_NAME": "shared"}
    assert load(Example, "svc", env).name == "from-file"


def test_a_variable_and_its_file_variant_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "name").write_text("a")
    env = {"METRICS_NAME": "b", "METRICS_NAME_FILE": str(tmp_path / "name")}
    with pytest.raises(SettingsError, match="METRICS_NAME and METRICS_NAME_FILE are both set"):
        load(Example, "svc", env)


def test_a_missing_file_names_the_variable(tmp_path: Path) -> None:
    env = {"METRICS_SVC_DSN_FILE": str(tmp_path / "absent")}
    with pytest.raises(SettingsError, match=r"METRICS_SVC_DSN_FILE: .*No such file"):
        load(Example, "svc", env)
