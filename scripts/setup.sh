#!/bin/sh
# Install everything fleet and its lab need on a Debian 12 machine, as root: system packages and a venv.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (the lab needs network and mount namespaces)" >&2; exit 2; fi
PKGS="openssh-server openssh-client containerd runc haproxy busybox-static iproute2 util-linux socat procps
      python3 python3-venv python3-pip ca-certificates docker-registry keepalived sshfs openssl pebble
      etcd-server etcd-client"
# etcd keeps the fleet's shared state on the record nodes (fleet starts it itself; policy-rc.d below keeps
# apt from starting the package's service).
# openssl hashes the HAProxy stats password; pebble (Let's Encrypt's ACME test server) is for the tests only.
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps apt from starting the host's own sshd/containerd/haproxy: the lab starts its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; CREATED_POLICY=1; fi
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ "${CREATED_POLICY:-0}" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
