"""What outlives a command, kept on the fleet: its shared state in etcd on the record nodes (the lease, one writer
at a time; the records; the node marks; the event log) and the controller's own files (secrets, history cache).

The record nodes (`record_nodes`) are those the inventory names (role `record`, or the label
`fleet.records=true`), else its lb nodes, else its first node. Every controller that reads the same inventory
agrees on them.
"""

from fleet.store.etcd import EtcdLease, EtcdStore, SharedState
from fleet.store.etcd_records import EtcdRecords
from fleet.store.lease import LeaseInfo, NodeLease
from fleet.store.nodes import DEFAULT_BASE_DIR, record_nodes

__all__ = [
    "DEFAULT_BASE_DIR",
    "EtcdLease",
    "EtcdRecords",
    "EtcdStore",
    "LeaseInfo",
    "NodeLease",
    "SharedState",
    "record_nodes",
]
