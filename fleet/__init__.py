"""fleet: an agentless, SSH-based container orchestrator (containerd on nodes, HAProxy in front)."""

__version__ = "0.1.0"
