"""Bearer tokens (JWT, ES256) as the front door checks them: minted by the registry for a device
(DevicesService.IssueToken) and by operators (`make token`, stack/tokens.py). The claims are those
runtime/identity.py reads."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "metrics"
AUDIENCE = "metrics"
ALGORITHM = "ES256"


def mint(
    key_file: Path,
    kid: str,
    *,
    scopes: list[str],
    sensors: list[str],
    ttl_s: float,
    tier: str = "device",
    subject: str = "",
    audience: str = AUDIENCE,
    not_before: float | None = None,
    device: str = "",
    token_id: str = "",
) -> str:
    """A signed token with the product's claims; `token_id` (the jti) made up when empty."""
    now = int(time.time())
    token_id = token_id or str(uuid.uuid4())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": audience,
        "sub": subject or f"token-{token_id[:8]}",
        "jti": token_id,
        "iat": now,
        "nbf": int(not_before if not_before is not None else now),
        "exp": int(now + ttl_s),
        "scope": " ".join(scopes),
        "sensors": sensors,
        "tier": tier,
    }
    if device:
        claims["device"] = device
    return jwt.encode(claims, load_key(key_file), algorithm=ALGORITHM, headers={"kid": kid})


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: not an EC private key (ES256 needs a P-256 key)")
    return key
