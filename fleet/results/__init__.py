"""What operations return: pure values that the façade hands up and the CLI, the TUI and the watcher render."""

from fleet.results.containers import LIST_TIMEOUT, PsResult, PsRow
from fleet.results.images import PushResult
from fleet.results.lb import LbConfig
from fleet.results.nodes import NodeReport
from fleet.results.records import NodeLease, Revision, majority
from fleet.results.run import Event, Outcome, PlanView, RunResult
from fleet.results.secrets import Secret, SecretRef
from fleet.results.status import FleetStatus, ReplicaStatus, ServiceStatus, VipStatus
from fleet.results.volumes import VolumeListing, VolumeRow

__all__ = [
    "LIST_TIMEOUT",
    "Event",
    "FleetStatus",
    "LbConfig",
    "NodeLease",
    "NodeReport",
    "Outcome",
    "PlanView",
    "PsResult",
    "PsRow",
    "PushResult",
    "ReplicaStatus",
    "Revision",
    "RunResult",
    "Secret",
    "SecretRef",
    "ServiceStatus",
    "VipStatus",
    "VolumeListing",
    "VolumeRow",
    "majority",
]
