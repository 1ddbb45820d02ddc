"""`fleet ui`: a live terminal view of nodes, services and replicas, drawn with Textual over the Fleet façade."""

from fleet.tui.app import FleetApp
from fleet.tui.data import FleetSource, Snapshot, Source, collect

__all__ = ["FleetApp", "FleetSource", "Snapshot", "Source", "collect"]
