"""Typed settings: one frozen dataclass per service, built once at start from the environment.

A field `kafka_bootstrap_servers` of the receiver's settings is read from, first match wins:
  1. METRICS_RECEIVER_KAFKA_BOOTSTRAP_SERVERS   (service-specific environment variable)
  2. METRICS_KAFKA_BOOTSTRAP_SERVERS            (shared environment variable)
  3. [receiver] kafka_bootstrap_servers         (in the TOML file named by METRICS_CONFIG)
  4. [common] kafka_bootstrap_servers           (same file)
  5. the field's default.
Each environment name also has a `_FILE` variant (METRICS_SAVER_POSTGRES_PASSWORD_FILE) naming a file
whose content, without its trailing newline, is the value: how secrets reach a service without
showing in its environment (Docker secrets, the local stack's secrets folder). Giving a name and its
`_FILE` variant both is an error. Fields marked secret=True are masked when the settings are logged.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PREFIX = "METRICS_"


class SettingsError(ValueError):
    """A setting is missing or does not parse; the message names it."""


def secret(default: Any) -> Any:
    """A field whose value is masked in `describe()` (passwords, DSNs with credentials)."""
    return dataclasses.field(default=default, metadata={"secret": True})


def load(cls: type[T], service: str, environ: Mapping[str, str] | None = None) -> T:
    """Builds `cls` (a frozen dataclass) for `service` from the environment and optional file."""
    env = os.environ if environ is None else environ
    file_values = _read_file(env.get(PREFIX + "CONFIG", ""), service)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        names = (f"{PREFIX}{service.upper()}_{field.name.upper()}", f"{PREFIX}{field.name.upper()}")
        raw, source = next(
            ((v, n) for n in names if (v := _from_environment(env, n)) is not None), (None, "")
        )
        if raw is None and field.name in file_values:
            raw, source = file_values[field.name], f"{env[PREFIX + 'CONFIG']}: {field.name}"
        if raw is None:
            continue
        try:
            values[field.name] = _convert(raw, hints[field.name])
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{source}: {exc}") from exc
    return cls(**values)


def _from_environment(env: Mapping[str, str], name: str) -> str | None:
    """The value of variable `name`, or of the file its `_FILE` variant names; None if neither is set."""
    file_name = name + "_FILE"
    if name in env and file_name in env:
        raise SettingsError(f"{name} and {file_name} are both set: keep one")
    if file_name not in env:
        return env.get(name)
    try:
        return Path(env[file_name]).read_text().removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise SettingsError(f"{file_name}: {exc}") from exc


def describe(settings: object) -> dict[str, Any]:
    """The settings as a dict for logging, with secrets masked."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, field.name)
        out[field.name] = "***" if field.metadata.get("secret") and value else value
    return out


def _read_file(path: str, service: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with Path(path).open("rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{PREFIX}CONFIG={path}: {exc}") from exc
    return {**doc.get("common", {}), **doc.get(service, {})}


def _convert(raw: Any, hint: Any) -> Any:
    """Converts an environment string (or a TOML value) to the field's type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        items = raw if isinstance(raw, list) else [s for s in str(raw).split(",") if s.strip()]
        return tuple(_convert(i.strip() if isinstance(i, str) else i, item) for i in items)
    convert = _SCALARS.get(hint)
    if convert is None:
        raise TypeError(f"unsupported settings type {hint!r}")
    return convert(raw)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool | float):
        raise TypeError(f"expected an integer, got {raw!r}")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise TypeError(f"expected a number, got {raw!r}")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


_SCALARS: dict[Any, Any] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: str,
    Path: lambda raw: Path(str(raw)),
}


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What every service has: where its gRPC server listens, how it logs, how long it drains."""

    # The address the gRPC server listens on: 127.0.0.1 for this machine only (Envoy in front), 0.0.0.0
    # for every interface (a container).
    grpc_host: str = "127.0.0.1"
    # The gRPC server's port (health, reflection and the service's API); each service has its own.
    grpc_port: int = 0
    # Prometheus metrics over HTTP (/metrics) on grpc_host; 0 = none (and no per-call counting).
    metrics_port: int = 0
    # The least severe log records written to stderr: DEBUG, INFO, WARNING or ERROR (the Kafka
    # client's: WARNING and up, whatever this says).
    log_level: str = "INFO"
    # On SIGTERM: how long running calls and in-flight batches get to finish.
    shutdown_grace_s: float = 10.0
    # Crash tests only: failpoints at which the process kills itself (runtime/failpoints.py).
    failpoints: tuple[str, ...] = ()

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"
