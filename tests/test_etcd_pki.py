"""The etcd peers' certificates (fleet.store.etcd_pki): issued by the fleet's own CA, for the member's address,
usable as server and client, keys kept as `Secret`s. The lab test shows etcd accepting and refusing them."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleet.node.etcd import EtcdFiles, Member
from fleet.store.etcd_pki import issue_peer, new_ca, peer_files
from fleet.store.secrets import Secret


def test_peer_certificate_is_signed_by_the_ca_for_the_member_address() -> None:
    ca = new_ca("fleet-abc")
    peer = issue_peer(ca, Member("lb1", "10.0.0.7"))
    cert = x509.load_pem_x509_certificate(peer.cert_pem.encode())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    public = ca_cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_a_name_gets_a_dns_san_and_keys_never_show() -> None:
    ca = new_ca("t")
    peer = issue_peer(ca, Member("w1", "w1.example"))
    cert = x509.load_pem_x509_certificate(peer.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["w1.example"]
    assert "PRIVATE KEY" not in repr(peer) + repr(ca) + str(peer.key)
    files = peer_files(ca, peer, EtcdFiles("/var/lib/fleet/etcd"))
    assert [(path, mode) for path, mode, _ in files] == [
        ("/var/lib/fleet/etcd/pki/ca.crt", "0644"), ("/var/lib/fleet/etcd/pki/peer.crt", "0644"),
        ("/var/lib/fleet/etcd/pki/peer.key", "0600")]
    assert isinstance(files[2][2], Secret)
