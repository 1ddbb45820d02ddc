"""`fleet ui`: the operator's console in the terminal (views of nodes, services, replicas, history, logs and
events, and actions on them), drawn with Textual over the Fleet façade."""

from fleet.tui.app import FleetApp
from fleet.tui.data import Action, ActionResult, EventRing, ServiceRecord, Snapshot, Source
from fleet.tui.source import FleetSource

__all__ = ["Action", "ActionResult", "EventRing", "FleetApp", "FleetSource", "ServiceRecord", "Snapshot", "Source"]
