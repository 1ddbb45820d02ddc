"""The fleet's etcd brought up on first contact: when no record node's member answers, every member is started
(`EtcdMembers.ensure`) with peer certificates issued from the fleet's peer CA; a member found dead while the others
answer is started again by the next run that writes.

The peer CA's key is kept in a 0600 root-only file in etcd's directory on the first record node (`CA_DIR`, beside
the members' certificates), made there by the first controller that starts the cluster and reused by every later
one (and by `EtcdMembership.load_ca`) for the certificates of later members. (It could move into the shared state,
sealed to the controllers like the fleet's secrets; it is not there yet.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fleet.core.errors import RecordsError
from fleet.core.model import Node
from fleet.core.shell import Script
from fleet.engine.etcd import DEFAULT_FILES, EtcdMembers, EtcdMembership, MemberReport
from fleet.node.etcd import CLIENT_PORT
from fleet.node.paths import write_file
from fleet.store.etcd_pki import PeerCa, issue_peer, new_ca
from fleet.store.secrets import Secret
from fleet.transport import Pool

# The peer CA beside each member's certificates (fleet.node.etcd.EtcdFiles: ca.crt on every member, ca.key on the
# first record node only), where `EtcdMembership.load_ca` finds it to issue a later member's certificate.
CA_DIR = DEFAULT_FILES.pki_dir
CA_TIMEOUT = 10.0
_KEY_MARK = "@@fleet-ca-key"

# $1 the CA's directory: its certificate, a mark line, its key; nothing when either file is missing.
READ_CA = r"""
set -u
[ -f "$1/ca.crt" ] && [ -f "$1/ca.key" ] || exit 0
cat "$1/ca.crt" && echo "@@fleet-ca-key" && cat "$1/ca.key"
"""


def cluster_token(nodes: Sequence[Node]) -> str:
    """The etcd cluster's initial token, the same on every controller for the same record nodes."""
    return "fleet-" + hashlib.sha256(",".join(sorted(n.name for n in nodes)).encode()).hexdigest()[:12]


def parse_ca(stdout: str) -> PeerCa | None:
    """READ_CA's output as the CA (None: there is none yet); ValueError when it is cut or garbled."""
    if not stdout.strip():
        return None
    cert, sep, key = stdout.partition(f"\n{_KEY_MARK}\n")
    if not sep or "BEGIN CERTIFICATE" not in cert or "PRIVATE KEY" not in key:
        raise ValueError("the etcd peer CA's files are incomplete")
    return PeerCa(cert.strip() + "\n", Secret(key.strip() + "\n"))


async def peer_ca(pool: Pool, keeper: Node, token: str) -> PeerCa:
    """The fleet's peer CA as kept on `keeper` (the first record node); made and kept there when there is none."""
    result = await pool.check(keeper, Script(READ_CA, args=(CA_DIR,), name="fleet-etcd-ca-read"), timeout=CA_TIMEOUT)
    found = parse_ca(result.stdout)
    if found is not None:
        return found
    ca = new_ca(token)
    # The key first: a certificate without its key is read as no CA, and made again.
    for path, mode, text in ((f"{CA_DIR}/ca.key", "0600", ca.key.reveal()), (f"{CA_DIR}/ca.crt", "0600", ca.cert_pem)):
        await pool.check(keeper, write_file(path, mode, size=len(text.encode()), fsync=True), stdin=text,
                         timeout=CA_TIMEOUT)
    return ca


async def start_members(pool: Pool, nodes: Sequence[Node]) -> list[MemberReport]:
    """Start every record node's member that is not running, with its peer certificate (first contact)."""
    token = cluster_token(nodes)
    members = EtcdMembers(pool, nodes, cluster_token=token)
    ca = await peer_ca(pool, nodes[0], token)
    return await members.ensure((ca, {n.name: issue_peer(ca, members.configs[n.name].member) for n in nodes}))


async def restart_dead(pool: Pool, nodes: Sequence[Node], port: int = CLIENT_PORT) -> list[MemberReport]:
    """Start again the members that died (their certificates and data are still on their nodes). A record node
    that is no member yet is left alone: `fleet apply` or `fleet records add` joins it as a learner."""
    membership = EtcdMembership(pool, nodes, nodes, cluster_token=cluster_token(nodes), port=port)
    try:
        on = {getattr(membership.node_of(m), "name", None) for m in await membership.members()}
    except RecordsError:
        return []
    members = [n for n in nodes if n.name in on]
    return await EtcdMembers(pool, members, cluster_token=cluster_token(nodes)).ensure() if members else []
