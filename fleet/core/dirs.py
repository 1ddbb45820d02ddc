"""The two directories fleet owns on every node: its state on the node's disk, its secrets on a tmpfs.
fleet.node.paths names every file under them; the playbook checks refuse a bind mount of either."""

NODE_BASE = "/var/lib/fleet"
NODE_RUN = "/run/fleet"
