"""The registry's settings (see runtime/settings.py for how they are read)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.kafka import KafkaSettings
from runtime.migrations import MigrationSettings
from runtime.settings import ServiceSettings, secret


@dataclass(frozen=True)
class RegistrySettings(MigrationSettings, KafkaSettings, ServiceSettings):
    grpc_port: int = 50057
    metrics_port: int = 51057
    kafka_username: str = "registry"
    # A role that may use the registry's tables and nothing else (the local stack's metrics_registry).
    postgres_dsn: str = secret("postgresql://metrics_registry@127.0.0.1:55432/metrics")
    # postgres_dsn's role's password (as a file: METRICS_REGISTRY_POSTGRES_PASSWORD_FILE); empty: the DSN's.
    postgres_password: str = secret("")
    # Most PostgreSQL connections open at once.
    postgres_pool_size: int = 4
    # The folder of the keys that sign tokens, one PEM file per key id, the newest signing (the local
    # stack's <state>/jwt/keys, whose public halves Envoy checks tokens with); empty: IssueToken is
    # refused (FAILED_PRECONDITION).
    token_keys_dir: str = ""
    # The certificate (PEM) of the CA that signs devices' client certificates (IssueCertificate), the
    # CA Envoy's TLS port trusts; as a file: METRICS_REGISTRY_CA_CERTIFICATE_FILE (the local stack's
    # <state>/tls/ca.pem). Empty: IssueCertificate is refused (FAILED_PRECONDITION).
    ca_certificate: str = ""
    # That CA's private key (PEM), as a file: METRICS_REGISTRY_CA_PRIVATE_KEY_FILE (<state>/tls/ca-key.pem).
    ca_private_key: str = secret("")
    # The MQTT brokers' TLS listeners (host:port, commas), whose dynamic-security plugin keeps the
    # devices' MQTT accounts (SetMqttPassword; disabling disconnects). Their certificates are checked
    # against ca_certificate. Empty: SetMqttPassword is refused (FAILED_PRECONDITION).
    mqtt_brokers: tuple[str, ...] = ()
    # The plugin's admin account at the brokers.
    mqtt_username: str = "admin"
    # Its password (as a file: METRICS_REGISTRY_MQTT_PASSWORD_FILE).
    mqtt_password: str = secret("")
