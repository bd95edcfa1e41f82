"""The TLS port as outside clients reach it: TLS contexts trusting the deployment's CA, and tokens
signed with its key (or, to be refused, with keys it does not know)."""

from __future__ import annotations

import dataclasses
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from stack import certs, tokens
from stack.settings import StackSettings
from tests.target import Target

ROOT = Path(__file__).resolve().parent.parent


def ca_file(target: Target) -> Path:
    return ROOT / target.tls_ca_file


def tls_context(target: Target) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file(target))


def channel(target: Target) -> grpc.aio.Channel:
    """A gRPC channel to the TLS port; tokens go with each call (bearer())."""
    return grpc.aio.secure_channel(
        target.envoy_tls, grpc.ssl_channel_credentials(ca_file(target).read_bytes())
    )


def signing_key(target: Target) -> tuple[Path, str]:
    keys = sorted((ROOT / target.token_keys_dir).glob("*.pem"))
    assert keys, f"no signing key in {target.token_keys_dir}"
    return keys[-1], keys[-1].stem


def token(
    target: Target,
    *,
    scopes: tuple[str, ...] = ("ingest", "read"),
    sensors: tuple[str, ...] = ("",),
    tier: str = "gateway",
    ttl_s: float = 600,
    **options: Any,
) -> str:
    key, kid = signing_key(target)
    return tokens.mint(key, kid, scopes=list(scopes), sensors=list(sensors), tier=tier, ttl_s=ttl_s,
                       **options)  # fmt: skip


def signed(target: Target, token_claims: dict[str, Any]) -> str:
    """These claims, signed with the deployment's own key."""
    key, kid = signing_key(target)
    return jwt.encode(token_claims, tokens.load_key(key), algorithm="ES256", headers={"kid": kid})


def foreign_token(kid: str, claims: dict[str, Any]) -> str:
    """Signed by a key the deployment has never seen, under the key id given."""
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims of a token covering everything, with overrides."""
    now = int(time.time())
    base = {"iss": tokens.ISSUER, "aud": tokens.AUDIENCE, "sub": "test", "jti": f"test-{time.time_ns()}",
            "iat": now, "nbf": now, "exp": now + 600, "scope": "ingest read", "sensors": [""],
            "tier": "gateway"}  # fmt: skip
    return {**base, **overrides}


def bearer(token_text: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying a token."""
    return (("authorization", f"Bearer {token_text}"),)


def auth(token_text: str) -> dict[str, str]:
    """HTTP headers carrying a token."""
    return {"authorization": f"Bearer {token_text}"}


def device_certificate(target: Target, sensors: str, folder: Path) -> tuple[Path, Path]:
    """A device certificate for `sensors`, signed by the deployment's CA (its key lies beside it)."""
    settings = dataclasses.replace(StackSettings(), state_dir=ca_file(target).parent.parent)
    cert, key = certs.device_certificate(settings, sensors)
    (folder / "device.pem").write_bytes(cert)
    (folder / "device-key.pem").write_bytes(key)
    return folder / "device.pem", folder / "device-key.pem"


def device_tls_context(target: Target, cert: Path, key: Path) -> ssl.SSLContext:
    context = tls_context(target)
    context.load_cert_chain(cert, key)
    return context


def device_channel(target: Target, cert: Path, key: Path) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        ca_file(target).read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
    return grpc.aio.secure_channel(target.envoy_tls, credentials)
