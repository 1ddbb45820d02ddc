#!/bin/sh
# The main job on the local lab: bring it up and show every node.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
.venv/bin/fleet lab up --nodes "${NODES:-3}" --lb "${LB:-1}"
.venv/bin/fleet nodes
