#!/bin/sh
# The main job on the local lab: bring it up, ship the demo image, deploy playbooks/demo.yaml behind HAProxy,
# then show the web service answering from replicas on several nodes. The lab is left up.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
FLEET=.venv/bin/fleet
PY=.venv/bin/python

if [ -t 1 ]; then B=$(printf '\033[1m'); N=$(printf '\033[0m'); else B=; N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

step "lab: ${NODES:-3} workers + ${LB:-1} load balancer"
$FLEET lab up --nodes "${NODES:-3}" --lb "${LB:-1}"

step "demo image: build, then push over SSH to every worker (no registry)"
mkdir -p out
$FLEET image build-demo --version v1 --output out/demo-v1.tar
$FLEET image push out/demo-v1.tar

step "deploy: fleet apply playbooks/demo.yaml"
$FLEET apply playbooks/demo.yaml

step "status"
$FLEET status

step "requests through the load balancer"
# The addresses come from `fleet status --json`; each request opens a new connection, so HAProxy's
# round robin hands them to the replicas in turn. Bounded: 8 requests, each retried for at most 10 s.
$FLEET status --json | $PY -c '
import json, re, sys, time, urllib.request
services = {s["service"]: s["endpoints"] for s in json.load(sys.stdin)["services"]}
for name, endpoints in sorted(services.items()):
    for e in endpoints:
        print(f"{name}: http://{e}/")
web = services.get("web") or []
if not web:
    sys.exit("no endpoint for the web service")
url = f"http://{web[0]}/"
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the lab only, never a proxy
print(f"\nGET {url} x 8")
for i in range(8):
    deadline = time.monotonic() + 10
    while True:
        try:
            page = direct.open(url, timeout=3).read().decode()
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"{url}: {exc}")
            time.sleep(0.5)
    m = re.search(r"version=\S+ host=\S+ replica=\d+", page)
    print(f"  {i + 1}. {m.group(0) if m else page[:80]}")
'

cat <<'EOF'

The lab is still up. Try:
  .venv/bin/fleet status                                   # replicas, nodes, health in HAProxy, addresses
  .venv/bin/fleet scale web 6 -f playbooks/demo.yaml       # 6 replicas now (the next apply returns to 4)
  .venv/bin/fleet plan playbooks/demo.yaml                 # what apply would change (exit 0 nothing, 3 changes)
  .venv/bin/fleet destroy api                              # drain, unroute, stop and remove a service
Remove everything with:
  .venv/bin/fleet lab down
EOF
