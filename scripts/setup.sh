#!/bin/sh
# Install everything fleet and its lab need on a Debian 12 machine, as root: system packages and a venv.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (the lab needs network and mount namespaces)" >&2; exit 2; fi
PKGS="openssh-server openssh-client containerd runc haproxy busybox-static iproute2 util-linux socat procps
      python3 python3-venv python3-pip ca-certificates docker-registry keepalived sshfs openssl pebble
      etcd-server etcd-client containernetworking-plugins age faketime sudo debootstrap"
# debootstrap builds the root filesystem of the lab's fresh nodes (`fleet lab up --fresh`, cached).
# etcd keeps the fleet's shared state on the record nodes (fleet starts it itself; policy-rc.d below keeps
# apt from starting the package's service). containernetworking-plugins give replicas their own network
# namespaces; age is the command-line twin of pyrage (secrets in the shared state); faketime is for the tests.
# openssl hashes the HAProxy stats password; pebble (Let's Encrypt's ACME test server) is for the tests only.
# sudo is for the tests of `become` (fleet logging in as a user with passwordless sudo).
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps apt from starting the host's own sshd/containerd/haproxy: the lab starts its own. Left behind,
  # it would stop every later package from starting its service, so the one this script creates is removed on any
  # exit: success, a failed apt (set -e) or a signal (whose trap exits, which runs the EXIT trap). One that was
  # there before is not ours and stays as it is. FLEET_POLICY_RC_D only lets tests/test_setup_script.py point it
  # elsewhere.
  POLICY=${FLEET_POLICY_RC_D:-/usr/sbin/policy-rc.d}
  CREATED_POLICY=0
  if [ ! -e "$POLICY" ]; then
    CREATED_POLICY=1
    trap 'rm -f "$POLICY"' EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod +x "$POLICY"
  fi
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ "$CREATED_POLICY" = 1 ]; then rm -f "$POLICY"; trap - EXIT HUP INT TERM; fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
# The distribution was named `fleet` before it became fleet-orchestrator: a venv made then holds both otherwise.
if .venv/bin/pip show -q fleet >/dev/null 2>&1; then .venv/bin/pip uninstall -q -y fleet; fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
