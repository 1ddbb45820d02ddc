"""What outlives a command, kept on the fleet: the fleet's lease (one writer at a time) and its records.

Both live on the record nodes (`record_nodes`): the inventory's `lb` nodes, else those labelled
`fleet.records=true`, else the first node. Every controller that reads the same inventory agrees on them.
"""

from fleet.store.lease import Lease, LeaseInfo, NodeLease, break_lease, lease_status
from fleet.store.nodes import DEFAULT_BASE_DIR, majority, record_nodes
from fleet.store.records import FleetHistory, Snapshot

__all__ = [
    "DEFAULT_BASE_DIR",
    "FleetHistory",
    "Lease",
    "LeaseInfo",
    "NodeLease",
    "Snapshot",
    "break_lease",
    "lease_status",
    "majority",
    "record_nodes",
]
