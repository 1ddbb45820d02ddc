"""The directories fleet owns: on every node, its state on the node's disk and its secrets on a tmpfs (fleet.node.paths
names every file under them; the playbook checks refuse a bind mount of either); on the controller, its state
directory (the records' local cache, a watcher's socket)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

NODE_BASE = "/var/lib/fleet"
NODE_RUN = "/run/fleet"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The controller's state directory: `$FLEET_STATE_DIR`, else `$XDG_STATE_HOME/fleet`, else
    `~/.local/state/fleet`."""
    env = os.environ if env is None else env
    if env.get("FLEET_STATE_DIR"):
        return Path(env["FLEET_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "fleet"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "fleet"
