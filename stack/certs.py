"""TLS for the local stack's front door: a certificate authority of its own, a server certificate it
signs for Envoy's TLS port, and device certificates (mutual TLS instead of a token). Clients trust
the CA file (curl --cacert)."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime import cli
from runtime.certificates import CertificateAuthority, builder_for, pem_key, sign
from runtime.identity import DEVICE_URI_PREFIX
from stack.settings import StackSettings
from stack.supervisor import in_use
from stack.system import SetupError, say

# The names clients of the local stack use; a deployment brings its own certificate.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 397  # what browsers accept for a server certificate
CA_VALID_DAYS = 3650
RENEW_DAYS = 30


@dataclass(frozen=True)
class Tls:
    """The files Envoy's TLS listener uses; `ca` is None for a certificate configured by hand."""

    certificate: Path
    private_key: Path
    ca: Path | None


def paths(settings: StackSettings) -> Tls:
    """Where the files are: the configured ones, or the local ones (which ensure() makes)."""
    if settings.tls_certificate_file is not None and settings.tls_private_key_file is not None:
        return Tls(settings.tls_certificate_file, settings.tls_private_key_file, None)
    folder = settings.state_dir / "tls"
    return Tls(folder / "server.pem", folder / "server-key.pem", folder / "ca.pem")


def client_ca(settings: StackSettings) -> Path | None:
    """The CA of device certificates: the configured one, else the local CA (None with own files)."""
    return settings.tls_client_ca_file or paths(settings).ca


def ensure(settings: StackSettings, names: tuple[str, ...] = SERVER_NAMES) -> Tls:
    """The configured certificate files, or the local ones, made (or renewed) when missing, expiring
    or not naming every one of `names` (the first is its subject's)."""
    if (settings.tls_certificate_file is None) != (settings.tls_private_key_file is None):
        raise SetupError("set both METRICS_TLS_CERTIFICATE_FILE and METRICS_TLS_PRIVATE_KEY_FILE, or neither")
    tls = paths(settings)
    if tls.ca is None:
        for path in (tls.certificate, tls.private_key):
            if not path.is_file():
                raise SetupError(f"TLS file {path} does not exist")
        return tls
    if not (tls.ca.exists() and ca_key_file(tls.ca).exists()):
        say(f"Creating the local certificate authority ({tls.ca})")
        tls.ca.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tls.ca.parent, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Metrics local CA")])
        usage = x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        ca = sign(
            _builder(name, name, key, CA_VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False),
            key,
        )
        write_private(ca_key_file(tls.ca), pem_key(key))
        tls.ca.write_bytes(ca)
    general_names: list[x509.GeneralName] = []
    for name_text in names:
        try:
            general_names.append(x509.IPAddress(ipaddress.ip_address(name_text)))
        except ValueError:
            general_names.append(x509.DNSName(name_text))
    if _needs_renewal(tls.certificate, general_names):
        say(f"Creating the server certificate for {', '.join(names)} ({tls.certificate})")
        cert, key_pem = _issue(tls.ca, names[0], general_names, ExtendedKeyUsageOID.SERVER_AUTH, VALID_DAYS)
        write_private(tls.private_key, key_pem)
        tls.certificate.write_bytes(cert)
    return tls


def device_certificate(settings: StackSettings, sensors: str, days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """A client certificate (PEM) and its key for a device or fleet writing sensors whose ids start
    with `sensors`, signed by the local CA: the TLS port accepts it instead of a token (ingest only,
    at the device tier's rate)."""
    tls = ensure(settings)
    if tls.ca is None:
        raise SetupError(
            "device certificates are signed by the local CA; with your own TLS files, use your own CA"
        )
    # The URI names the sensors it may write (runtime/identity.py reads it through Envoy).
    uri = x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + sensors)
    return _issue(tls.ca, f"sensors {sensors or '(all)'}", [uri], ExtendedKeyUsageOID.CLIENT_AUTH, days)


def write_private(path: Path, data: bytes) -> None:
    """Writes a private key (or another secret) readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _issue(
    ca_file: Path, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier, days: int
) -> tuple[bytes, bytes]:
    """A certificate (PEM) for a new key, signed by the CA, and the key (PEM)."""
    ca = CertificateAuthority(ca_file.read_bytes(), ca_key_file(ca_file).read_bytes())
    return ca.issue(common_name, names, usage, datetime.timedelta(days=days))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    return builder_for(subject, issuer, key, datetime.timedelta(days=days))


def ca_key_file(ca_file: Path) -> Path:
    return ca_file.with_name("ca-key.pem")


def _needs_renewal(path: Path, names: list[x509.GeneralName]) -> bool:
    if not path.exists():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    try:
        has = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        has = set()
    return left < datetime.timedelta(days=RENEW_DAYS) or not set(names) <= has


def main(argv: list[str] | None = None) -> int:
    """make device-cert ARGS="--sensors plant-7- --out plant-7": plant-7.pem and plant-7-key.pem."""
    parser = argparse.ArgumentParser(prog="make device-cert ARGS=...", description=main.__doc__)
    parser.add_argument("--sensors", required=True, metavar="PREFIX",
                        help="the sensor-id prefix the device may write ('' for every sensor)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="file name stem: <out>.pem, <out>-key.pem")
    parser.add_argument("--days", type=int, default=VALID_DAYS, help=f"validity (default {VALID_DAYS})")
    args = parser.parse_args(argv)
    try:
        cert, key = device_certificate(in_use(), args.sensors, args.days)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cert_file = args.out.with_name(args.out.name + ".pem")
    key_file = args.out.with_name(args.out.name + "-key.pem")
    cert_file.write_bytes(cert)
    write_private(key_file, key)
    say(f"Device certificate for sensors starting with {args.sensors!r}: {cert_file} (key {key_file})")
    return 0


if __name__ == "__main__":
    cli.run(main)
