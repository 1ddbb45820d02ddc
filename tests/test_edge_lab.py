"""Issue 13 on the real lab: services on lb1's ports 80/443 by host name, over TLS, with certificates from files,
from the keyring and from ACME (Debian's pebble on n3, its CA trusted by the test client and fleet's ACME
client only), renewed before expiry under load without a failed request; key files on lb1 readable by root and
HAProxy's user alone (root's, group haproxy, 0640) and in no output; HAProxy itself never runs as root.

pebble and its fake DNS (answering lb1's address for every name) run on n3 and are stopped by PID in finally.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import test_rollout_lab
import yaml
from certs import TestCA, client_context, pebble_config
from helpers import run_fleet, wait_until
from loadgen import Load

from fleet.core.shell import Script
from fleet.node.haproxy.jail import CAP_MASK
from fleet.transport import Pool

pytestmark = pytest.mark.lab

env = test_rollout_lab.env
TESTS = str(Path(__file__).parent)
HAPROXY_DIR = "/var/lib/fleet/haproxy"
CERT_DIR = f"{HAPROXY_DIR}/certs"
HOSTS = {"shop": "shop.example.test", "blog": "blog.example.test", "api": "api.example.test"}

_PEBBLE = r"""
set -u
cd "$D"
# Every order validated anew (no reuse of a valid authorization): the renewal's challenge is answered under load.
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  setsid pebble -config "$D/pebble.json" -dnsserver 127.0.0.1:8053 </dev/null >"$D/pebble.log" 2>&1 &
echo "pid $!"
setsid pebble-challtestsrv -defaultIPv4 "$LB" -defaultIPv6 "" -dns01 127.0.0.1:8053 -http01 "" -https01 "" \
  -tlsalpn01 "" -management 127.0.0.1:8055 </dev/null >"$D/challtestsrv.log" 2>&1 &
echo "pid $!"
"""


def run_on(lab: Any, node: str, script: Script) -> str:
    async def go() -> str:
        async with Pool() as pool:
            res = await pool.run(lab.inventory.node(node), script, timeout=20)
        assert res.ok, res
        return res.stdout

    return asyncio.run(go())


def get(lb: str, port: int, host: str, path: str = "/", ctx: ssl.SSLContext | None = None
        ) -> tuple[int, dict[str, str], str, bytes | None]:
    """One request to lb:port with Host (and, over TLS, SNI) `host`; also the server's certificate (DER)."""
    sock = socket.create_connection((lb, port), timeout=5)
    conn = http.client.HTTPConnection(lb, port, timeout=5)
    der = None
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname=host)
        der = sock.getpeercert(binary_form=True)
    conn.sock = sock
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, der
    finally:
        conn.close()


class TlsLoad(Load):
    """`loadgen.Load` over HTTPS: a new TLS connection per request to one host through lb:443 (SNI and Host),
    verified with `ctx`; also the certificates the clients were served (sha256 of the DER)."""

    def __init__(self, lb: str, host: str, ctx: ssl.SSLContext | None, clients: int = 4, port: int = 443) -> None:
        super().__init__(lb, port, clients=clients, max_seconds=150)
        self.sni, self.ctx = host, ctx
        self.fingerprints: set[str] = set()

    def _run(self, keepalive: bool) -> None:
        while not self._done():
            try:
                status, _, body, der = get(self.host, self.port, self.sni, ctx=self.ctx)
            except (OSError, http.client.HTTPException) as exc:
                self._record(None, "", type(exc).__name__)
                continue
            with self._lock:
                self.fingerprints.add(hashlib.sha256(der or b"").hexdigest())
            self._record(status, body, None)


@pytest.fixture(scope="module")
def edge(lab: Any, env: dict[str, Any], lab_etcd: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    lab_etcd.clear()  # this module's controller (its own keyring) is the first of the fleet's secrets
    d = tmp_path_factory.mktemp("edge")
    ca = TestCA()
    lb = lab.inventory.node("lb1").address
    n3 = lab.inventory.node("n3").address
    # pebble's own HTTPS listener: a certificate for n3's address from the test CA.
    listener = ca.leaf("pebble.test", ips=(n3,))
    (d / "pebble-cert.pem").write_bytes(listener.cert)
    (d / "pebble-key.pem").write_bytes(listener.key)
    (d / "ca.pem").write_bytes(ca.pem)
    (d / "pebble.json").write_text(pebble_config(f"{n3}:14000", f"{n3}:15000", d / "pebble-cert.pem",
                                                 d / "pebble-key.pem", http_port=80, tls_port=5001))
    base = yaml.safe_load(Path(lab.inventory_path).read_text())
    inventories = {}
    for name, renew in (("first", "1h"), ("renew", "3650d")):
        doc = {**base, "edge": {"http_port": 80, "https_port": 443, "acme": {
            "directory": f"https://{n3}:14000/dir", "email": "ops@example.test", "ca_file": str(d / "ca.pem"),
            "renew_before": renew}}}
        (d / f"inventory-{name}.yaml").write_text(yaml.safe_dump(doc))
        inventories[name] = str(d / f"inventory-{name}.yaml")
    shop, blog = ca.leaf(HOSTS["shop"]), ca.leaf(HOSTS["blog"])
    (d / "shop.crt").write_bytes(shop.cert)
    (d / "shop.key").write_bytes(shop.key)
    e = {**env["env"], "FLEET_TEST_KEYRING": str(d / "keyring.json"),
         "PYTHON_KEYRING_BACKEND": "keyring_file.FileKeyring",
         "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}
    playbook = d / "edge.yaml"
    svc = "resources: {cpu: 0.05, memory: 32MiB}, health: {http: /healthz, interval: 1s, timeout: 1s}, " \
          "update: {max_surge: 1, max_unavailable: 0, min_ready: 1s}"
    playbook.write_text(f"""services:
  shop: {{image: "fleet.local/demo:v1", replicas: 2, {svc},
         lb: {{hosts: [{HOSTS['shop']}], tls: {{cert: shop.crt, key: shop.key, hsts: 600}}}}}}
  blog: {{image: "fleet.local/demo:v2", replicas: 2, {svc},
         lb: {{hosts: [{HOSTS['blog']}], tls: {{secret: blog-tls}}}}}}
  api: {{image: "fleet.local/demo:v1", replicas: 2, {svc},
        lb: {{hosts: [{HOSTS['api']}], tls: {{acme: true, redirect: false}}}}}}
""")
    pids: list[int] = []
    try:
        out = run_on(lab, "n3", Script(_PEBBLE, {"D": str(d), "LB": lb}, name="test-pebble"))
        pids += [int(line.split()[1]) for line in out.splitlines() if line.startswith("pid ")]
        assert len(pids) == 2, out

        def pebble_up() -> bool:
            return get(n3, 15000, "pebble.test", "/roots/0", ctx=ca.context())[0] == 200

        wait_until(pebble_up, timeout=20, message="pebble on n3", ignore=(OSError,))
        yield {"env": e, "dir": d, "ca": ca, "lb": lb, "n3": n3, "inventories": inventories,
               "playbook": str(playbook), "keys": {"shop": shop.key, "blog": blog.key}, "blog": blog}
    finally:
        for name in ("shop", "blog", "api"):
            run_fleet("destroy", name, "--grace", "1", inventory=inventories["first"], env=e, timeout=180)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def fleet(edge: Any, *args: str, inventory: str = "first") -> Any:
    return run_fleet(*args, inventory=edge["inventories"][inventory], env=edge["env"], timeout=240)


def pebble_root(edge: Any) -> bytes:
    status, _, body, _ = get(edge["n3"], 15000, "pebble.test", "/roots/0", ctx=edge["ca"].context())
    assert status == 200
    return body.encode()


def key_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM key (what would show if it leaked)."""
    return [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]


def test_services_on_443_by_host_name_with_files_keyring_and_acme_certificates(lab: Any, edge: Any) -> None:
    lb, ca = edge["lb"], edge["ca"]
    # blog's certificate is a keyring secret not set yet: everything else lands, blog serves plain HTTP, and the
    # apply says why (exit 1).
    first = fleet(edge, "apply", edge["playbook"])
    assert first.returncode == 1, first.stdout + first.stderr
    assert "HTTPS: blog: lb.tls.secret 'blog-tls' is not in the keyring" in first.stdout + first.stderr
    status, _, body, _ = get(lb, 80, HOSTS["blog"])
    assert status == 200 and "version=v2" in body
    bundle = (edge["blog"].cert + edge["blog"].key).decode()
    stored = run_fleet("secret", "set", "blog-tls", env=edge["env"], input=bundle)
    assert stored.returncode == 0, stored.stderr
    applied = fleet(edge, "apply", edge["playbook"])
    assert applied.returncode == 0, applied.stdout + applied.stderr
    outputs = [first.stdout + first.stderr, applied.stdout + applied.stderr]
    # Each host over TLS by SNI, verified against the test CA only, answered by its own replicas.
    st = json.loads(fleet(edge, "status", "--json").stdout)
    hosts_of = {s["service"]: {f"host={r['node']} replica={r['replica']}" for r in s["replicas"]}
                for s in st["services"]}
    assert {s["service"]: s["endpoints"] for s in st["services"] if s["service"] in HOSTS} == {
        name: [f"https://{host}/"] for name, host in HOSTS.items()}
    for name, version in (("shop", "v1"), ("blog", "v2")):
        seen = set()
        for _ in range(6):
            status, headers, body, _ = get(lb, 443, HOSTS[name], ctx=ca.context())
            assert status == 200 and f"version={version}" in body, body
            seen.add(body.split("version=", 1)[1].split(" ", 1)[1].split("<")[0])
        assert seen <= hosts_of[name] and len(seen) == 2, (seen, hosts_of[name])
    assert get(lb, 443, HOSTS["shop"], ctx=ca.context())[1]["strict-transport-security"] == "max-age=600"
    # The ACME certificate: issued by pebble, verified against pebble's root only (not the test CA).
    status, _, body, _ = get(lb, 443, HOSTS["api"], ctx=client_context(pebble_root(edge)))
    assert status == 200 and "version=v1" in body
    with pytest.raises(ssl.SSLCertVerificationError):
        get(lb, 443, HOSTS["api"], ctx=ca.context())
    # HTTP redirects to HTTPS (shop, blog); api has redirect: false and answers over HTTP too.
    status, headers, _, _ = get(lb, 80, HOSTS["shop"], "/cart?id=3")
    assert (status, headers["location"]) == (301, f"https://{HOSTS['shop']}/cart?id=3")
    assert get(lb, 80, HOSTS["blog"])[0] == 301
    assert get(lb, 80, HOSTS["api"])[0] == 200
    # An unknown host: 404 over HTTP and over HTTPS (there with whichever certificate HAProxy picks first).
    assert get(lb, 80, "nobody.example.test")[0] == 404
    assert get(lb, 443, "nobody.example.test", ctx=ssl._create_unverified_context())[0] == 404
    # Stats and metrics without a password: on 127.0.0.1 of lb1 only.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((lb, 8404), timeout=3).close()
    # The key files: root's, readable through group haproxy (HAProxy's user, which alone has that group) only,
    # 0640 in a 0750 dir on lb1, and no key (files, keyring, ACME) in any output: apply, lb show, plan, status,
    # and the config itself.
    listing = run_on(lab, "lb1", Script('stat -c "%a %U:%G %n" "$D" "$D"/*.pem; getent group haproxy; '
                                        'awk -F: -v g="$(id -g haproxy)" \'$4 == g { print "user " $1 }\' /etc/passwd',
                                        {"D": CERT_DIR}))
    assert sorted(listing.split("\n")[:-1]) == sorted(
        [f"750 root:haproxy {CERT_DIR}"] + [f"640 root:haproxy {CERT_DIR}/{n}.pem" for n in ("api", "blog", "shop")]
        + [f"haproxy:x:{grp.getgrnam('haproxy').gr_gid}:", "user haproxy"]), listing
    acme_key = run_on(lab, "lb1", Script('sed -n "/PRIVATE KEY-----$/,/END/p" "$D/api.pem"', {"D": CERT_DIR}))
    shown = fleet(edge, "lb", "show", "lb1")
    assert shown.returncode == 0 and "frontend fe_edge_https" in shown.stdout, shown.stdout + shown.stderr
    assert f"crt {CERT_DIR}/shop.pem" in shown.stdout
    outputs += [shown.stdout + shown.stderr]
    # fleet plan: no HAProxy diff for the playbook just applied; a new host shows as a diff of lb1's config.
    same = fleet(edge, "plan", edge["playbook"])
    assert same.returncode == 0 and "HAProxy on lb1 would change" not in same.stdout, same.stdout + same.stderr
    more = Path(edge["playbook"]).with_name("more.yaml")
    more.write_text(Path(edge["playbook"]).read_text().replace(f"[{HOSTS['blog']}]", f"[{HOSTS['blog']}, "
                                                                                       "news.example.test]"))
    changed = fleet(edge, "plan", str(more))
    assert "HAProxy on lb1 would change:" in changed.stdout, changed.stdout + changed.stderr
    assert "+    use_backend be_blog if { var(txn.host) -m str news.example.test }" in changed.stdout
    outputs += [same.stdout + same.stderr, changed.stdout + changed.stderr]
    out = fleet(edge, "status")
    outputs.append(out.stdout + out.stderr)
    cfg = run_on(lab, "lb1", Script('cat "$F"', {"F": "/var/lib/fleet/haproxy/haproxy.cfg"}))
    outputs.append(cfg)
    for text in outputs:
        assert "PRIVATE KEY" not in text
        for pem in (*edge["keys"].values(), acme_key.encode()):
            assert not any(line in text for line in key_lines(pem)[:3])


def test_acme_certificate_renewed_before_expiry_under_load_without_a_failed_request(lab: Any, edge: Any) -> None:
    lb = edge["lb"]
    ctx = client_context(pebble_root(edge))
    before = hashlib.sha256(get(lb, 443, HOSTS["api"], ctx=ctx)[3] or b"").hexdigest()
    # Nothing is due with renew_before 1h: an apply keeps the certificate.
    again = fleet(edge, "apply", edge["playbook"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert hashlib.sha256(get(lb, 443, HOSTS["api"], ctx=ctx)[3] or b"").hexdigest() == before
    # renew_before longer than the certificate's life: the next apply renews it, with clients on it throughout.
    with TlsLoad(lb, HOSTS["api"], ctx) as load:
        time.sleep(1.0)
        renewed = fleet(edge, "apply", edge["playbook"], inventory="renew")
        time.sleep(1.5)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    after = hashlib.sha256(get(lb, 443, HOSTS["api"], ctx=ctx)[3] or b"").hexdigest()
    assert after != before
    # Clients saw the old certificate, then the new one, and not one request failed.
    r = load.result
    assert r.failed == 0, (r.errors, r.failures[:5])
    assert r.ok > 50 and {before, after} <= load.fingerprints, (r.ok, load.fingerprints)
    # The new key is root's, group haproxy, 0640 like the old one; the ACME account's key kept beside them (the
    # renewal used that account) is root's alone, 0600 (HAProxy never needs it); neither is in the run's output.
    mode = run_on(lab, "lb1", Script('stat -c "%a %U:%G" "$D/api.pem" "$D/../acme-account.key"', {"D": CERT_DIR}))
    assert mode.splitlines() == ["640 root:haproxy", "600 root:root"]
    account = run_on(lab, "lb1", Script('cat "$D/../acme-account.key"', {"D": CERT_DIR}))
    assert not any(line in renewed.stdout + renewed.stderr for line in key_lines(account.encode()))
    new_key = run_on(lab, "lb1", Script('sed -n "/PRIVATE KEY-----$/,/END/p" "$D/api.pem"', {"D": CERT_DIR}))
    assert key_lines(new_key.encode()) and not any(
        line in renewed.stdout + renewed.stderr for line in key_lines(new_key.encode()))


# HAProxy's processes on lb1: the master (pid file) and its children (the workers), each with its user, its root
# (as the process sees it: / for the jail, the chroot for a worker), CapEff, NoNewPrivs and what its root holds.
_PROCS = r"""
set -u
m=$(cat "$D/haproxy.pid")
for p in $m $(pgrep -P "$m" -x haproxy); do
  kind=worker; [ "$p" = "$m" ] && kind=master
  echo "$kind $p $(ps -o user= -p "$p") $(readlink "/proc/$p/root")" \
    "$(awk '$1 == "CapEff:" || $1 == "NoNewPrivs:" { printf "%s ", $2 }' "/proc/$p/status")ls=$(ls -A "/proc/$p/root" |
    tr '\n' ,)"
  [ -e "/proc/$p/root/etc/shadow" ] && echo "shadow $p"
done
echo "socket - $(stat -c '%U %a' "$D/run/admin.sock")"
"""


def haproxy_procs(lab: Any) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for line in run_on(lab, "lb1", Script(_PROCS, {"D": HAPROXY_DIR})).splitlines():
        kind, *rest = line.split()
        out.setdefault(kind, []).append(tuple(rest))
    return out


def test_haproxy_runs_as_haproxy_in_its_jail_with_two_caps_and_serves_80_and_443_through_a_reload(lab: Any,
                                                                                                edge: Any) -> None:
    """Issue 21: no HAProxy process is root. The master runs as the Debian package's `haproxy` user in its jail
    (a pivoted mount namespace: its / holds /usr, three devices, OpenSSL's config and HAProxy's directory; no
    /etc/shadow), its workers too, chrooted to an empty directory inside it; all hold CAP_NET_BIND_SERVICE and
    CAP_SYS_CHROOT and nothing else, with no_new_privs. A hitless reload (the master's `reload`) under load on
    both ports fails no request, keeps the master and gives workers like the old ones; the admin socket is
    haproxy's, mode 0600 (root's scripts still reach it)."""
    lb = edge["lb"]
    links = [n for n in ("bin", "sbin", "lib", "lib32", "lib64", "libx32") if os.path.islink(f"/{n}")]
    jail = ",".join(sorted({"usr", "dev", "etc", "var", *links})) + ","
    caps = f"{CAP_MASK:016x}"
    before = haproxy_procs(lab)
    assert "shadow" not in before, before
    [(master, muser, mroot, mcaps, mnnp, mls)] = before["master"]
    assert (muser, mroot, mcaps, mnnp, mls) == ("haproxy", "/", caps, "1", f"ls={jail}"), before
    worker = ("haproxy", f"{HAPROXY_DIR}/empty", caps, "1", "ls=")
    assert before["worker"] and all(w[1:] == worker for w in before["worker"]), before
    assert before["socket"] == [("-", "haproxy", "600")]
    old = {w[0] for w in before["worker"]}
    ctx = client_context(pebble_root(edge))
    with TlsLoad(lb, HOSTS["api"], ctx) as tls, TlsLoad(lb, HOSTS["api"], None, port=80) as plain:
        time.sleep(1.0)
        run_on(lab, "lb1", Script('printf "reload\\n" | socat -t 5 stdio "unix-connect:$D/run/master.sock"',
                                  {"D": HAPROXY_DIR}))
        wait_until(lambda: {w[0] for w in haproxy_procs(lab).get("worker", [])} - old, timeout=20,
                   message="a new HAProxy worker")
        time.sleep(1.0)
    for load in (tls, plain):
        assert load.result.failed == 0 and load.result.ok > 20, (load.result.ok, load.result.errors,
                                                                 load.result.failures[:5])
    print(f"\nunprivileged reload: 443 {tls.result.ok} ok / {tls.result.failed} failed, 80 {plain.result.ok} ok / "
          f"{plain.result.failed} failed")
    after = haproxy_procs(lab)
    assert after["master"] == [(master, muser, mroot, mcaps, mnnp, mls)], "a reload, not a restart"
    new = [w for w in after["worker"] if w[0] not in old]
    assert new and all(w[1:] == worker for w in after["worker"]) and "shadow" not in after, after
