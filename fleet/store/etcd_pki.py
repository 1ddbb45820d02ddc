"""The certificates etcd's members authenticate each other with (mutual TLS on the peer port): a CA of the fleet's
own and one peer certificate per member, valid for the member's address, issued here on the controller.

Private keys are `Secret`s: they reach a node only on stdin into a 0600 file (`peer_files`), never in argv.
Where the CA's key is kept between runs (the shared state, encrypted to the controllers) is the caller's.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.node.etcd import EtcdFiles, Member
from fleet.store.secrets import Secret

CA_DAYS = 3650
PEER_DAYS = 825


@dataclass(frozen=True)
class PeerCa:
    """The fleet's etcd CA: its certificate (public, on every member) and its key (never on a node)."""

    cert_pem: str
    key: Secret


@dataclass(frozen=True)
class PeerCert:
    """One member's peer certificate and key, both PEM."""

    cert_pem: str
    key: Secret


def _key_pem(key: ec.EllipticCurvePrivateKey) -> Secret:
    return Secret(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(cluster: str, days: int = CA_DAYS) -> PeerCa:
    """A new CA for the etcd cluster named `cluster` (its initial-cluster-token)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fleet etcd peers {cluster}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # Back-dated a little: a node whose clock is behind still accepts it at once.
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return PeerCa(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def issue_peer(ca: PeerCa, member: Member, days: int = PEER_DAYS) -> PeerCert:
    """A certificate for `member`'s peer port, valid as server and as client (a member is both to its peers),
    for its address (an IP SAN, or a DNS name)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key.reveal().encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the etcd CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(member.address))
    except ValueError:
        san = x509.DNSName(member.address)
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member.name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return PeerCert(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def peer_files(ca: PeerCa, peer: PeerCert, files: EtcdFiles) -> list[tuple[str, str, str | Secret]]:
    """(path, mode, content) of the three files a member's peer TLS reads; write each with
    `fleet.node.paths.write_file(path, mode)`, the content on stdin (the key revealed only there)."""
    return [(files.ca_cert, "0644", ca.cert_pem), (files.peer_cert, "0644", peer.cert_pem),
            (files.peer_key, "0600", peer.key)]
