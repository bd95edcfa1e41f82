"""Secrets of docker-compose.yml, made once in deploy/compose/secrets: the passwords of every
account (stack/credentials.py), the front door's certificate (and the CA that signs it), and the
keys that sign tokens, with their key set inline in Envoy's jwt_authn configuration.

The folder is its owner's alone (0700): it is what keeps its files from other users of the host.
The files the containers mount are readable by all (0644): the containers' users (Envoy's, the
services') are not their owner on the host, and Compose bind-mounts files with the host's ownership
and mode. Those are the passwords; Envoy's certificate, key and jwt_authn configuration; and the
registry's: the CA and its key, with which it signs devices' certificates, and the keys that sign
tokens, with which it issues devices theirs.

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
# What the registry's container mounts, and where: the CA of devices' certificates and its key, the
# folder of the keys that sign tokens.
REGISTRY_MOUNTED = {
    "tls/ca.pem": "/etc/metrics/tls/ca.pem",
    "tls/ca-key.pem": "/etc/metrics/tls/ca-key.pem",
    "jwt/keys": "/etc/metrics/jwt/keys",
}
# The server certificate's names: the local ones, and the brokers' on the Compose network, where the
# registry reaches their TLS listeners (the devices' MQTT accounts) and checks whom it reached.
SERVER_NAMES = (*certs.SERVER_NAMES, *(b.name for b in StackSettings(topology="cluster").mqtt_brokers))


def make(folder: Path = FOLDER) -> None:
    settings = dataclasses.replace(StackSettings(), state_dir=folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    credentials.ensure(folder, file_mode=0o644)
    certs.ensure(settings, SERVER_NAMES)
    tokens.ensure_keys(settings)
    for mounted in (*MOUNTED, *REGISTRY_MOUNTED):
        path = folder / mounted
        if path.is_dir():  # the keys' folder, and every key in it
            os.chmod(path, 0o755)  # noqa: S103 - inside the 0700 folder: see above
        for file in path.glob("*.pem") if path.is_dir() else [path]:
            os.chmod(file, 0o644)
    say(f"Secrets of docker-compose.yml in {folder}")


if __name__ == "__main__":
    make()
    sys.exit(0)
