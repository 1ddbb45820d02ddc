"""A throwaway certificate authority for the tests: a CA and leaf certificates made with `cryptography`, trusted
only by the ssl contexts the tests build from it."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Leaf:
    cert: bytes
    key: bytes

    @property
    def bundle(self) -> bytes:
        return self.cert + self.key


class TestCA:
    """A CA of its own; `leaf(names)` issues a certificate for DNS names (and IP addresses)."""

    __test__ = False

    def __init__(self, name: str = "fleet test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, *names: str, ips: tuple[str, ...] = (), days: float = 1.0) -> Leaf:
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or ips)[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return client_context(self.pem)


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """A client context that trusts only the CA(s) in `ca_pem` (no system store)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem.decode())
    return ctx


def pebble_config(listen: str, management: str, cert: object, key: object, *, http_port: int, tls_port: int) -> str:
    """pebble's JSON config: its HTTPS listener (`cert`/`key` files) and where it sends HTTP-01 validations."""
    import json

    return json.dumps({"pebble": {
        "listenAddress": listen, "managementListenAddress": management, "certificate": str(cert),
        "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}})
