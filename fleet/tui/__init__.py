"""`fleet ui`: a live terminal view of nodes, services and replicas, drawn with Textual over the Fleet façade."""

from .app import FleetApp
from .data import FleetSource, Snapshot, Source, collect

__all__ = ["FleetApp", "FleetSource", "Snapshot", "Source", "collect"]
