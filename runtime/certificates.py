"""X.509 certificates signed by a CA: the local stack's server and device certificates (stack/certs.py)
and the devices' certificates the registry issues (DevicesService.IssueCertificate). EC P-256 keys,
SHA-256 signatures."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Clocks differ a little: a certificate is valid from a few minutes before it is made.
BACKDATE = datetime.timedelta(minutes=5)


class CertificateAuthority:
    """A CA's certificate and key (PEM), which signs certificates for new keys."""

    def __init__(self, certificate_pem: bytes, key_pem: bytes) -> None:
        self._certificate = x509.load_pem_x509_certificate(certificate_pem)
        # As PEM files hold it (a settings file's value loses its final newline).
        self.certificate_pem = self._certificate.public_bytes(serialization.Encoding.PEM)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the CA's key is not an EC key")
        self._key = key

    def issue(
        self,
        common_name: str,
        names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        valid: datetime.timedelta,
        serial: int | None = None,
    ) -> tuple[bytes, bytes]:
        """A certificate (PEM) for a new key, with these subject alternative names, and the key (PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            builder_for(subject, self._certificate.subject, key, valid, serial)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        return sign(builder, self._key), pem_key(key)


def builder_for(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    valid: datetime.timedelta,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid)
    )


def sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> bytes:
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
