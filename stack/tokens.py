"""Bearer tokens (JWT, ES256) for the front door's TLS port, and the keys that sign them.

  make token ARGS="--scope ingest --sensors plant-7- --ttl 3600"   mint; the token is the last line
  make token ARGS="--rotate-key"    a new signing key; the old one stays valid (both in the JWKS)
  make token ARGS="--retire-keys"   only the newest key stays valid
After a key change Envoy takes the new key set within a second, without a restart: its jwt_authn
filter reads <state>/jwt/jwt_authn.yaml (ECDS), which holds the JWKS inline and is rewritten here.

The local stack's keys live in <state>/jwt/keys (one PEM file per key id, the newest signs);
Envoy checks tokens against <state>/jwt/jwks.json, their public halves. A deployment names its own
key file with --key and --kid. The claims are described in runtime/identity.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from runtime import cli
from runtime import tokens as runtime_tokens
from runtime.identity import SCOPES, TIERS
from runtime.tokens import ALGORITHM, AUDIENCE, ISSUER, mint
from stack import certs, envoy_config
from stack.settings import StackSettings
from stack.supervisor import in_use
from stack.system import SetupError, say

# Minting is runtime's (the registry mints too); tools and tests take it from here.
__all__ = ["ALGORITHM", "AUDIENCE", "ISSUER", "load_key", "mint", "signing_key"]


def keys_dir(settings: StackSettings) -> Path:
    return settings.state_dir / "jwt" / "keys"


def jwks_path(settings: StackSettings) -> Path:
    return settings.state_dir / "jwt" / "jwks.json"


def jwt_authn_path(settings: StackSettings) -> Path:
    """Envoy's jwt_authn configuration with the key set inline, which Envoy watches."""
    return settings.state_dir / "jwt" / "jwt_authn.yaml"


def ensure_keys(settings: StackSettings) -> Path:
    """A signing key (made if there is none) and the JWKS of every key; returns the JWKS file."""
    if not _keys(settings):
        new_key(settings)
    return write_jwks(settings)


def ensure_jwt_authn(settings: StackSettings) -> Path:
    """Envoy's jwt_authn configuration of the stack's key set (made with a key if there is none)."""
    ensure_keys(settings)
    return jwt_authn_path(settings)


def new_key(settings: StackSettings) -> str:
    """Makes a signing key, newer than every other; returns its key id."""
    folder = keys_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    kid = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    certs.write_private(folder / f"{kid}.pem", pem)
    write_jwks(settings)
    return kid


def retire_keys(settings: StackSettings) -> list[str]:
    """Deletes every key but the newest; returns the retired key ids."""
    keys = _keys(settings)
    for path in keys[:-1]:
        path.unlink()
    write_jwks(settings)
    return [p.stem for p in keys[:-1]]


def write_jwks(settings: StackSettings) -> Path:
    keys = []
    for path in _keys(settings):
        jwk = ECAlgorithm.to_jwk(load_key(path).public_key(), as_dict=True)
        keys.append({**jwk, "kid": path.stem, "alg": ALGORITHM, "use": "sig"})
    target = jwks_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"keys": keys}, indent=2) + "\n"
    target.write_text(text)
    # Envoy takes the new key set from this file within a second, without a restart.
    envoy_config.write_jwt_authn(jwt_authn_path(settings), text)
    return target


def signing_key(settings: StackSettings) -> tuple[Path, str]:
    """The newest key: its file and id."""
    keys = _keys(settings)
    if not keys:
        raise SetupError(f"no signing key in {keys_dir(settings)}: `make run` makes one")
    return keys[-1], keys[-1].stem


def _keys(settings: StackSettings) -> list[Path]:
    folder = keys_dir(settings)
    return sorted(folder.glob("*.pem")) if folder.exists() else []


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        return runtime_tokens.load_key(path)
    except TypeError as exc:
        raise SetupError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make token ARGS=...", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add = parser.add_argument
    add("--scope", action="append", choices=SCOPES, help="repeat for several (default: ingest)")
    add("--sensors", action="append", metavar="PREFIX",
        help="a sensor-id prefix the token covers; repeat for several; '' covers all")  # fmt: skip
    add("--ttl", type=float, default=3600, help="seconds the token is valid (default 3600)")
    tiers = ", ".join(f"{n}: {t.rate}/s, bursts of {t.burst}" for n, t in TIERS.items())
    add("--tier", choices=list(TIERS), default="device", help=tiers)
    add("--subject", default="", help="who holds the token (the sub claim)")
    add("--audience", default=AUDIENCE, help=argparse.SUPPRESS)
    add("--key", type=Path, help="sign with this PEM key file (a deployment's)")
    add("--kid", help="the key id of --key, as the JWKS names it")
    add("--rotate-key", action="store_true", help="make a new signing key")
    add("--retire-keys", action="store_true", help="keep only the newest key")
    args = parser.parse_args(argv)
    settings = in_use()
    try:
        if args.rotate_key:
            kid = new_key(settings)
            say(f"New signing key {kid}; tokens of the older keys stay valid until --retire-keys")
            say("Envoy takes the new key set within a second (no restart; connections stay)")
            return 0
        if args.retire_keys:
            retired = retire_keys(settings)
            say(f"Retired {', '.join(retired) or 'no keys'}; Envoy refuses their tokens within a second")
            return 0
        if args.sensors is None:
            parser.error("--sensors is required: the sensor-id prefixes the token covers ('' for all)")
        if args.ttl <= 0:
            parser.error("--ttl must be positive")
        if (args.key is None) != (args.kid is None):
            parser.error("--key and --kid go together")
        key, kid = (args.key, args.kid) if args.key else signing_key(settings)
        scopes = args.scope or ["ingest"]
        token = mint(key, kid, scopes=scopes, sensors=args.sensors, ttl_s=args.ttl, tier=args.tier,
                     subject=args.subject, audience=args.audience)  # fmt: skip
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    expires = datetime.datetime.fromtimestamp(time.time() + args.ttl, datetime.UTC)
    covered = ", ".join(repr(p) for p in args.sensors)
    print(f"# scope {' '.join(scopes)}; sensors starting with {covered}; tier {args.tier}; "
          f"key {kid}; expires {expires:%Y-%m-%d %H:%M:%S} UTC")  # fmt: skip
    print(token)
    return 0


if __name__ == "__main__":
    cli.run(main)
