"""Secrets of docker-compose.yml, made once in deploy/compose/secrets: the passwords of every
account (stack/credentials.py), the front door's certificate (and the CA that signs it), and the
keys that sign tokens, with their key set inline in Envoy's jwt_authn configuration.

The folder is its owner's alone (0700). The files the containers mount (the passwords, Envoy's
certificate, key and jwt_authn configuration) are readable by all (0644):
the containers' users (Envoy's, the services') are not their owner on the host, and Compose
bind-mounts files with the host's ownership and mode. The signing keys stay 0600.

`make compose-secrets`; `make token ARGS="--key deploy/compose/secrets/jwt/keys/<kid>.pem --kid <kid>"`
mints a token for the Compose deployment.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from stack import certs, credentials, tokens
from stack.settings import ROOT, StackSettings
from stack.system import say

FOLDER = ROOT / "deploy" / "compose" / "secrets"
# What docker-compose.yml mounts into Envoy's container, and where (the Dockerfile renders the
# image's envoy.yaml with these paths). Device certificates are those the CA signs.
MOUNTED = {
    "tls/server.pem": "/etc/metrics/tls/server.pem",
    "tls/server-key.pem": "/etc/metrics/tls/server-key.pem",
    "tls/ca.pem": "/etc/metrics/tls/client-ca.pem",
    "jwt/jwt_authn.yaml": "/etc/metrics/jwt/jwt_authn.yaml",
}


def make(folder: Path = FOLDER) -> None:
    settings = dataclasses.replace(StackSettings(), state_dir=folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    credentials.ensure(folder, file_mode=0o644)
    certs.ensure(settings)
    tokens.ensure_keys(settings)
    for mounted in MOUNTED:
        os.chmod(folder / mounted, 0o644)
    say(f"Secrets of docker-compose.yml in {folder}")


if __name__ == "__main__":
    make()
    sys.exit(0)
