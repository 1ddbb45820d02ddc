"""Host-name routing, HTTPS and the stats password: playbook and inventory parsing, PEM checks, the rendered
HAProxy config (validated by the real `haproxy -c`), the certificates' node script (real /bin/sh), and a real
HAProxy on 127.0.0.1 routing two TLS hosts by SNI, answering ACME tokens and guarding its stats page."""

from __future__ import annotations

import base64
import grp
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import TestCA, pebble_config
from helpers import free_port, wait_until

from fleet.config.edge import bundle, cert_info, cover, split_bundle
from fleet.config.inventory import load_inventory
from fleet.config.spec import from_playbook_dict, load_playbooks, to_playbook_dict
from fleet.core.edge import check_host_name
from fleet.core.errors import EdgeError, InventoryError, SpecError
from fleet.engine.edge import stats_password_hash
from fleet.node.haproxy.certs import add_token, del_token, parse_state, state_script
from fleet.node.haproxy.render import (
    EdgeConfig,
    LbServer,
    LbService,
    LbTls,
    lb_service,
    render,
)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
FP = "ab" * 32


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(SpecError) as info:
        load_playbooks([path])
    return [str(p) for p in info.value.problems]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


# ---- host names and playbooks -----------------------------------------------------------------------------

@pytest.mark.parametrize("good", ["shop.example.test", "A-1.b.example", "xn--bcher-kva.example"])
def test_host_names_that_are_dns_names_are_accepted_lower_cased(good: str) -> None:
    assert check_host_name(good) == good.lower()


@pytest.mark.parametrize("bad", ["localhost", "shop.example.test:443", "*.example.test", "-a.example", "a-.example",
                                 "a..example", "10.0.0.1", "bad host.example", "x" * 64 + ".example", "", "a.b/c"])
def test_host_names_that_are_not_dns_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="DNS host name"):
        check_host_name(bad)


def test_playbook_hosts_paths_and_tls_parse_and_round_trip_through_the_history(tmp_path: Path, ca: TestCA) -> None:
    leaf = ca.leaf("shop.example.test")
    (tmp_path / "shop.crt").write_bytes(leaf.cert)
    (tmp_path / "shop.key").write_bytes(leaf.key)
    path = write(tmp_path, "p.yaml", """
        services:
          shop:
            image: busybox
            lb:
              hosts: [Shop.Example.TEST, www.shop.example.test]
              tls: {cert: shop.crt, key: shop.key, hsts: 600}
          api:
            image: busybox
            lb: {hosts: [shop.example.test], paths: [/api], tls: {acme: true, redirect: false}}
          plain:
            image: busybox
            lb: {port: 7001}
        """)
    shop, api, plain = load_playbooks([path])
    assert shop.lb is not None and shop.lb.port is None
    assert shop.lb.hosts == ("shop.example.test", "www.shop.example.test")
    assert shop.lb.tls is not None and shop.lb.tls.cert_file == str(tmp_path / "shop.crt")
    assert shop.lb.tls.hsts == 600 and shop.lb.tls.redirect
    assert api.lb is not None and api.lb.paths == ("/api",)
    assert api.lb.tls is not None and api.lb.tls.acme and not api.lb.tls.redirect
    assert plain.lb is not None and plain.lb.port == 7001 and plain.lb.hosts == ()
    for spec in (shop, api, plain):
        assert from_playbook_dict(spec.name, to_playbook_dict(spec)) == spec


def test_a_host_routed_by_two_services_is_refused_at_both_lines(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", """
        services:
          shop:
            image: busybox
            lb: {hosts: [shop.example.test]}
        """)
    b = write(tmp_path, "b.yaml", """
        services:
          other:
            image: busybox
            lb: {hosts: [SHOP.example.test]}
        """)
    with pytest.raises(SpecError) as info:
        load_playbooks([a, b])
    assert [str(p) for p in info.value.problems] == [
        f"{b}:2: services.other.lb.hosts: host shop.example.test is already routed to service 'shop' at {a}:2"]


def test_the_same_host_on_different_path_prefixes_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        services:
          shop: {image: busybox, lb: {hosts: [shop.example.test]}}
          api: {image: busybox, lb: {hosts: [shop.example.test], paths: [/api]}}
        """)
    assert [s.name for s in load_playbooks([path])] == ["shop", "api"]


def test_bad_edge_settings_in_a_playbook_name_their_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        services:
          a:
            image: busybox
            lb: {hosts: [a.example.test, A.example.test]}
          b:
            image: busybox
            lb: {hosts: [b.example.test], mode: tcp}
          c:
            image: busybox
            lb: {port: 7000, tls: {acme: true}}
          d:
            image: busybox
            lb: {hosts: [d.example.test], tls: {acme: true, secret: d-tls}}
          e:
            image: busybox
            lb: {hosts: ["e.example.test:8443"]}
          f:
            image: busybox
            lb: {hosts: [f.example.test], paths: ["api"]}
          g:
            image: busybox
            lb: {}
        """)
    text = "\n".join(found)
    assert ":4: services.a.lb: host 'a.example.test' is listed twice" in text
    assert ":7: services.b.lb: hosts route HTTP by the Host header and SNI: they need mode http" in text
    assert ":10: services.c.lb: paths and tls apply to hosts" in text
    assert ":13: services.d.lb.tls: give exactly one of cert: FILE with key: FILE" in text
    assert ":16: services.e.lb.hosts[0]: expected a DNS host name" in text
    assert ":19: services.f.lb.paths[0]: expected a URL path prefix such as /api" in text
    assert ":22: services.g.lb: give port: N" in text
    assert len(found) == 7


def test_a_certificate_that_does_not_match_its_key_is_refused_with_its_line(tmp_path: Path, ca: TestCA) -> None:
    one, two = ca.leaf("shop.example.test"), ca.leaf("shop.example.test")
    (tmp_path / "shop.crt").write_bytes(one.cert)
    (tmp_path / "other.key").write_bytes(two.key)
    found = problems(tmp_path, """
        services:
          shop:
            image: busybox
            lb:
              hosts: [shop.example.test]
              tls:
                cert: shop.crt
                key: other.key
          gone:
            image: busybox
            lb: {hosts: [gone.example.test], tls: {cert: nothere.crt, key: other.key}}
        """)
    assert found[0].endswith(":7: services.shop.lb.tls.cert: the certificate does not match its key (their public "
                             "keys differ)")
    assert found[1].endswith(f":11: services.gone.lb.tls.cert: no such certificate file: {tmp_path}/nothere.crt")
    # No key material in any message.
    assert not any("PRIVATE" in p or two.key.decode().splitlines()[1] in p for p in found)


# ---- inventory ----------------------------------------------------------------------------------------------

def test_inventory_edge_settings_parse_and_survive_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, "inv.yaml", """
        nodes:
          lb1: {address: 10.0.0.1, roles: [lb]}
        edge:
          http_port: 8080
          https_port: 8443
          stats_password: lb-stats
          acme: {directory: "https://10.0.0.9:14000/dir", email: ops@example.test, ca_file: pebble.pem,
                 renew_before: 12h}
        """)
    inv = load_inventory(path)
    assert (inv.edge.http_port, inv.edge.https_port, inv.edge.stats_password_secret) == (8080, 8443, "lb-stats")
    assert inv.edge.acme is not None and inv.edge.acme.renew_before == 12 * 3600
    assert inv.edge.acme.ca_file == str(tmp_path / "pebble.pem")
    assert load_inventory(path) == inv  # read back from the cache


def test_bad_inventory_edge_settings_name_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.yaml", """
        nodes:
          lb1: {address: 10.0.0.1, roles: [lb]}
        edge:
          http_port: 70000
          acme: {directory: "http://plain.example/dir", renew_before: soon}
        """)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    text = "\n".join(str(p) for p in info.value.problems)
    assert ":4: edge.http_port: expected a port number from 1 to 65535, got 70000" in text
    assert ":5: edge.acme.directory: expected the https:// URL of an ACME directory" in text


# ---- PEM --------------------------------------------------------------------------------------------------

def test_bundle_is_chain_then_key_and_reports_names_and_expiry(ca: TestCA) -> None:
    leaf = ca.leaf("a.example.test", "*.b.example.test", days=3)
    text = bundle(leaf.cert + ca.pem, leaf.key)
    assert text.index(b"BEGIN CERTIFICATE") < text.index(b"PRIVATE KEY")
    assert text.count(b"BEGIN CERTIFICATE") == 2
    info = cert_info(text)
    assert info.names == ("a.example.test", "*.b.example.test")
    assert 2.9 * 86400 < info.not_after - time.time() < 3.1 * 86400
    assert cover(info.names, "a.example.test") and cover(info.names, "x.b.example.test")
    assert not cover(info.names, "b.example.test") and not cover(info.names, "y.x.b.example.test")
    certs, key = split_bundle(text)
    assert b"PRIVATE" not in certs and bundle(certs, key) == text


def test_a_key_that_is_not_the_certificates_is_refused_without_quoting_either(ca: TestCA) -> None:
    one, two = ca.leaf("a.example.test"), ca.leaf("a.example.test")
    with pytest.raises(ValueError) as info:
        bundle(one.cert, two.key)
    assert str(info.value) == "the certificate does not match its key (their public keys differ)"
    with pytest.raises(ValueError, match="not a valid unencrypted PEM key"):
        bundle(one.cert, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


# ---- render -------------------------------------------------------------------------------------------------

def edge_services(cert_dir: str = "/etc/fleet-test") -> list[LbService]:
    return [
        LbService("shop", None, (LbServer("shop-1", "10.0.0.5", 9001),), hosts=("shop.example.test",),
                  tls=LbTls(f"{cert_dir}/shop.pem", FP, redirect=True, hsts=600)),
        LbService("api", None, (LbServer("api-1", "10.0.0.6", 9002),), hosts=("shop.example.test",),
                  paths=("/api",)),
        LbService("blog", None, (LbServer("blog-1", "10.0.0.7", 9003),), hosts=("blog.example.test",),
                  tls=LbTls(f"{cert_dir}/blog.pem", "cd" * 32, redirect=False)),
        LbService("pending", None, (LbServer("p-1", "10.0.0.8", 9004),), hosts=("new.example.test",),
                  tls=LbTls(None)),
        LbService("db", 7000, (LbServer("db-1", "10.0.0.9", 5432),), mode="tcp"),
    ]


def render_edge(services: list[LbService], **kw: object) -> str:
    return render(services, admin_socket="/run/x/admin.sock", state_file="/run/x/state",
                  stats_bind=("127.0.0.1", 8404), **kw)  # type: ignore[arg-type]


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(name)
    end = next((i for i in range(start + 1, len(lines)) if lines[i] == ""), len(lines))
    return [ln.strip() for ln in lines[start + 1:end]]


def test_host_routes_render_longest_prefix_first_with_redirect_hsts_and_acme() -> None:
    text = render_edge(edge_services(), edge=EdgeConfig(80, 443, acme_map="/var/lib/fleet/haproxy/acme.map"))
    http = section(text, "frontend fe_edge_http")
    host = "{ var(txn.host) -m str %s }"
    assert http[:3] == ["mode http", "bind 0.0.0.0:80", "http-request set-var(txn.host) req.hdr(host),field(1,:),lower"]
    assert http[3] == "acl acme_challenge path_beg /.well-known/acme-challenge/"
    assert http[4] == "acl acme_token path,field(4,/),map(/var/lib/fleet/haproxy/acme.map) -m found"
    assert http[5].startswith("http-request return status 200 content-type text/plain lf-string")
    # Only shop redirects (blog has redirect: false; pending has no certificate yet), never an ACME request.
    assert [ln for ln in http if "redirect" in ln] == [
        f"http-request redirect scheme https code 301 if {host % 'shop.example.test'} !acme_token"]
    uses = [ln for ln in http if ln.startswith("use_backend")]
    assert uses == [f"use_backend be_api if {host % 'shop.example.test'} {{ path_beg /api }}",
                    f"use_backend be_blog if {host % 'blog.example.test'}",
                    f"use_backend be_pending if {host % 'new.example.test'}",
                    f"use_backend be_shop if {host % 'shop.example.test'}"]
    https = section(text, "frontend fe_edge_https")
    assert https[1] == "bind 0.0.0.0:443 ssl crt /etc/fleet-test/blog.pem crt /etc/fleet-test/shop.pem"
    assert f"# certificate of shop: sha256 {FP}" in https
    assert [ln for ln in https if "Strict-Transport-Security" in ln] == [
        f"http-response set-header Strict-Transport-Security max-age=600 if {host % 'shop.example.test'}"]
    # Over HTTPS: every route of a host that has a certificate (api shares shop's), none of pending's.
    assert [ln.split()[1] for ln in https if ln.startswith("use_backend")] == ["be_api", "be_blog", "be_shop"]
    assert "frontend fe_db" in text and "frontend fe_shop" not in text


def test_without_certificates_there_is_no_https_frontend_and_no_acme_without_a_map() -> None:
    services = [s for s in edge_services() if s.tls is None or s.tls.cert_file is None]
    text = render_edge(services, edge=EdgeConfig(8080, 8443))
    assert "fe_edge_https" not in text and "acme" not in text and "redirect" not in text
    assert "bind 0.0.0.0:8080" in text


def test_host_conflicts_and_port_clashes_are_refused_by_render() -> None:
    twice = [LbService("a", None, (), hosts=("x.example.test",)), LbService("b", None, (), hosts=("x.example.test",))]
    with pytest.raises(ValueError, match=r"x\.example\.test is already routed to service 'a'"):
        render_edge(twice)
    clash = [LbService("a", None, (), hosts=("x.example.test",)), LbService("b", 80, ())]
    with pytest.raises(ValueError, match=r"80 is already used by edge\.http_port"):
        render_edge(clash)
    with pytest.raises(ValueError, match="host names route HTTP only"):
        render_edge([LbService("a", None, (), mode="tcp", hosts=("x.example.test",))])
    with pytest.raises(ValueError, match="DNS host name"):
        render_edge([LbService("a", None, (), hosts=("x.example.test; bind",))])


def test_the_stats_page_takes_a_crypt_hash_never_a_password() -> None:
    h = stats_password_hash("s3cret pass")
    assert h == stats_password_hash("s3cret pass") != stats_password_hash("other")
    assert h.startswith("$6$")
    text = render_edge([], stats_password_hash=h)
    assert "s3cret" not in text
    assert f"user fleet password '{h}'" in text
    assert "http-request auth realm fleet-stats unless { http_auth(fleet_stats) }" in section(text, "frontend stats")
    with pytest.raises(ValueError, match="crypt"):
        render_edge([], stats_password_hash="plain-text")


def test_lb_service_carries_hosts_paths_and_the_tls_source(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        services:
          shop: {image: busybox, lb: {hosts: [shop.example.test], paths: [/a, /b], tls: {acme: true, hsts: 60}}}
        """)
    (spec,) = load_playbooks([path])
    svc = lb_service(spec, ())
    assert (svc.bind_port, svc.hosts, svc.paths, svc.tls) == (None, ("shop.example.test",), ("/a", "/b"), None)
    assert svc.tls_source is not None and svc.tls_source.acme and svc.tls_source.hsts == 60


@needs_haproxy
def test_rendered_edge_config_passes_haproxy_check(tmp_path: Path, ca: TestCA) -> None:
    for name in ("shop", "blog"):
        (tmp_path / f"{name}.pem").write_bytes(ca.leaf(f"{name}.example.test").bundle)
    (tmp_path / "acme.map").write_text("")
    text = render_edge(edge_services(str(tmp_path)), edge=EdgeConfig(18080, 18443, acme_map=str(tmp_path / "acme.map")),
                       stats_password_hash=stats_password_hash("pw"))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    out = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


# ---- the certificates' node script ---------------------------------------------------------------------------

def test_state_script_reports_certificates_and_mode_never_the_key(tmp_path: Path, ca: TestCA) -> None:
    certs, amap = tmp_path / "certs", tmp_path / "acme.map"
    certs.mkdir()
    leaf = ca.leaf("shop.example.test")
    (certs / "shop.pem").write_bytes(leaf.bundle)
    (certs / "shop.pem").chmod(0o600)
    (certs / "old.pem").write_bytes(ca.leaf("old.example.test").bundle)
    script = state_script(str(certs), str(amap), drop=("old",))
    out = subprocess.run(["/bin/sh", "-c", script.render()], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert "PRIVATE" not in out.stdout and leaf.key.decode().splitlines()[1] not in out.stdout
    state = parse_state(out.stdout)
    assert set(state) == {"shop", "old"}
    assert state["shop"].mode == "600" and state["shop"].certs == leaf.cert
    import hashlib
    assert state["shop"].digest == hashlib.sha256(leaf.bundle).hexdigest()
    # Root's, readable through HAProxy's group (its master reads the bundles as that user, in its jail).
    assert amap.exists() and amap.read_text() == "" and oct(certs.stat().st_mode & 0o777) == "0o750"
    assert certs.stat().st_uid == 0 and certs.stat().st_gid == grp.getgrnam("haproxy").gr_gid
    assert not (certs / "old.pem").exists()


def test_acme_runtime_commands_take_base64url_only() -> None:
    token, keyauth = "A" * 43, "A" * 43 + "." + "b_-" * 15
    assert add_token(token, keyauth, "/m/acme.map") == f"add map /m/acme.map {token} {keyauth}"
    assert del_token(token, "/m/acme.map") == f"del map /m/acme.map {token}"
    for bad in ("short", "A" * 43 + " x", "A" * 43 + "\n"):
        with pytest.raises(ValueError):
            add_token(bad, keyauth)


# ---- a real HAProxy on 127.0.0.1 ----------------------------------------------------------------------------

BACKEND = """
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(5)


def _get(port: int, host: str, path: str = "/", ctx: ssl.SSLContext | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        # Connect to the address, but send the host name as SNI (and Host): as a client resolving it to the LB.
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sock = ctx.wrap_socket(sock, server_hostname=host)
    conn.request("GET", path, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


@needs_haproxy
def test_real_haproxy_routes_two_tls_hosts_answers_acme_and_guards_stats(
        tmp_path: Path, ca: TestCA, procs: list[subprocess.Popen[bytes]]) -> None:
    ports = {name: free_port() for name in ("shop", "blog", "http", "https", "stats")}
    for name in ("shop", "blog"):
        procs.append(subprocess.Popen([sys.executable, "-c", BACKEND, name, str(ports[name])]))
        (tmp_path / f"{name}.pem").write_bytes(ca.leaf(f"{name}.example.test").bundle)
    amap = tmp_path / "acme.map"
    amap.write_text("")
    services = [
        LbService("shop", None, (LbServer("shop-1", "127.0.0.1", ports["shop"]),), hosts=("shop.example.test",),
                  tls=LbTls(str(tmp_path / "shop.pem"), FP, redirect=True, hsts=600)),
        LbService("blog", None, (LbServer("blog-1", "127.0.0.1", ports["blog"]),), hosts=("blog.example.test",),
                  tls=LbTls(str(tmp_path / "blog.pem"), FP, redirect=False)),
    ]
    text = render(services, admin_socket=str(tmp_path / "admin.sock"), state_file=str(tmp_path / "state"),
                  stats_bind=("127.0.0.1", ports["stats"]),
                  edge=EdgeConfig(ports["http"], ports["https"], "127.0.0.1", str(amap)),
                  stats_password_hash=stats_password_hash("pw-for-stats"))
    (tmp_path / "haproxy.cfg").write_text(text)
    procs.append(subprocess.Popen([HAPROXY, "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    ctx = ca.context()
    for name in ("shop", "blog"):
        wait_until(lambda n=name: _get(ports["https"], f"{n}.example.test", ctx=ctx)[2] == n, timeout=15,  # type: ignore[misc]
                   message=f"HAProxy serving {name} over TLS", ignore=(OSError,))
    # Each host by SNI and Host, verified against the test CA (the certificate names the host).
    for name in ("shop", "blog"):
        status, headers, body = _get(ports["https"], f"{name}.example.test", ctx=ctx)
        assert (status, body) == (200, name)
        assert ("strict-transport-security" in headers) == (name == "shop")
    assert _get(ports["https"], "shop.example.test", ctx=ctx)[1]["strict-transport-security"] == "max-age=600"
    # HTTP: shop redirects to HTTPS, blog (redirect: false) is served, an unknown host is a 404.
    status, headers, _ = _get(ports["http"], "shop.example.test", "/cart?x=1")
    assert (status, headers["location"]) == (301, "https://shop.example.test/cart?x=1")
    assert _get(ports["http"], "blog.example.test")[:3:2] == (200, "blog")
    assert _get(ports["http"], "nobody.example.test")[0] == 404
    # An ACME token answered from the map once added at runtime, on the HTTP port, even for a redirecting host
    # (before that, the path redirects like any other).
    token, keyauth = "T" * 43, "T" * 43 + "." + "k" * 43
    assert _get(ports["http"], "shop.example.test", f"/.well-known/acme-challenge/{token}")[0] == 301
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(tmp_path / "admin.sock"))
        s.sendall((add_token(token, keyauth, str(amap)) + "\n").encode())
        assert s.recv(4096).strip() == b""
    assert _get(ports["http"], "shop.example.test", f"/.well-known/acme-challenge/{token}")[::2] == (200, keyauth)
    # Stats and metrics: 401 without the password, 200 with it.
    assert _get(ports["stats"], "x", "/metrics")[0] == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"fleet:pw-for-stats").decode()}
    status, _, body = _get(ports["stats"], "x", "/metrics", headers=auth)
    assert status == 200 and 'haproxy_backend_status{proxy="be_shop"' in body
    assert _get(ports["stats"], "x", "/stats", headers={"Authorization": "Basic " + base64.b64encode(
        b"fleet:wrong").decode()})[0] == 401


# ---- ACME against Debian's pebble, with a real HAProxy answering the tokens, all on 127.0.0.1 ---------------

PEBBLE = shutil.which("pebble")
CHALLTESTSRV = shutil.which("pebble-challtestsrv")


def start_pebble(tmp: Path, ca: TestCA, http_port: int, lb_ip: str, procs: list[subprocess.Popen[bytes]],
                 bind: str = "127.0.0.1") -> tuple[str, Path, int]:
    """pebble (its HTTPS listener's certificate from `ca`) validating HTTP-01 on `http_port` of whatever its
    fake DNS (pebble-challtestsrv) answers: `lb_ip` for every name. Returns (directory URL, CA file, mgmt port)."""
    dns, listen, mgmt = free_port(), free_port(), free_port()
    leaf = ca.leaf("localhost", ips=(bind,))
    (tmp / "pebble-cert.pem").write_bytes(leaf.cert)
    (tmp / "pebble-key.pem").write_bytes(leaf.key)
    (tmp / "pebble-ca.pem").write_bytes(ca.pem)
    (tmp / "pebble.json").write_text(pebble_config(f"{bind}:{listen}", f"{bind}:{mgmt}", tmp / "pebble-cert.pem",
                                                   tmp / "pebble-key.pem", http_port=http_port, tls_port=free_port()))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "100"}
    assert CHALLTESTSRV is not None and PEBBLE is not None
    procs.append(subprocess.Popen([CHALLTESTSRV, "-defaultIPv4", lb_ip, "-defaultIPv6", "", "-dns01",
                                   f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                                   "-management", f"127.0.0.1:{free_port()}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen([PEBBLE, "-config", str(tmp / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    url = f"https://{bind}:{listen}/dir"
    ctx = ca.context()

    def up() -> bool:
        with socket.create_connection((bind, listen), timeout=2) as s, ctx.wrap_socket(s, server_hostname=bind):
            return True

    wait_until(up, timeout=15, message="pebble listening", ignore=(OSError,))
    return url, tmp / "pebble-ca.pem", mgmt


def pebble_roots(ca: TestCA, mgmt: int, bind: str = "127.0.0.1") -> bytes:
    """The root pebble signs with (made anew at each start), from its management interface."""
    conn = http.client.HTTPSConnection(bind, mgmt, timeout=5, context=ca.context())
    conn.request("GET", "/roots/0")
    body = conn.getresponse().read()
    conn.close()
    return body


@needs_haproxy
@pytest.mark.skipif(PEBBLE is None or CHALLTESTSRV is None, reason="pebble is not installed")
async def test_acme_issues_through_pebble_with_haproxy_answering_http01(
        tmp_path: Path, ca: TestCA, procs: list[subprocess.Popen[bytes]]) -> None:
    import asyncio

    from fleet.core.edge import AcmeSettings
    from fleet.engine.acme import issue

    http_port, stats = free_port(), free_port()
    amap = tmp_path / "acme.map"
    amap.write_text("")
    text = render([LbService("shop", None, (LbServer("s", "127.0.0.1", free_port()),), hosts=("shop.example.test",))],
                  admin_socket=str(tmp_path / "admin.sock"), state_file=str(tmp_path / "state"),
                  stats_bind=("127.0.0.1", stats), edge=EdgeConfig(http_port, free_port(), "127.0.0.1", str(amap)))
    (tmp_path / "haproxy.cfg").write_text(text)
    procs.append(subprocess.Popen([HAPROXY, "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    url, ca_file, mgmt = start_pebble(tmp_path, ca, http_port, "127.0.0.1", procs)
    wait_until(lambda: (tmp_path / "admin.sock").exists(), timeout=10, message="haproxy's admin socket")
    published: list[str] = []

    def admin(cmd: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp_path / "admin.sock"))
            s.sendall((cmd + "\n").encode())
            return s.recv(4096).decode().strip()

    async def publish(tokens: object) -> None:
        for token, keyauth in tokens:  # type: ignore[attr-defined]
            assert admin(add_token(token, keyauth, str(amap))) == ""
            published.append(token)

    async def withdraw(tokens: object) -> None:
        for token, _ in tokens:  # type: ignore[attr-defined]
            admin(del_token(token, str(amap)))

    settings = AcmeSettings(url, "ops@example.test", str(ca_file))
    issued = await asyncio.wait_for(issue(settings, ["shop.example.test"], publish, withdraw), 60)
    assert published and repr(issued) == "Issued(chain=..., key=***)"
    info = cert_info(bundle(issued.chain, issued.key))
    assert info.names == ("shop.example.test",)
    # The chain goes up to pebble's root (made at its start): leaf ← intermediate ← root, no other CA involved.
    from cryptography import x509
    certs = [x509.load_pem_x509_certificate(b"-----BEGIN" + b) for b in issued.chain.split(b"-----BEGIN")[1:]]
    root = x509.load_pem_x509_certificate(pebble_roots(ca, mgmt))
    assert len(certs) == 2
    certs[0].verify_directly_issued_by(certs[1])
    certs[1].verify_directly_issued_by(root)
    # The tokens were withdrawn afterwards.
    assert admin(f"show map {amap}") == ""
    # A second order with the account key kept from the first uses that account (no new one) and works; pebble
    # (PEBBLE_AUTHZREUSE=100) reuses the account's valid authorization, so there is nothing to answer.
    published.clear()
    again = await asyncio.wait_for(issue(settings, ["shop.example.test"], publish, withdraw, issued.account_key), 60)
    assert published == []
    assert again.account_key == issued.account_key and again.chain != issued.chain
    assert cert_info(bundle(again.chain, again.key)).names == ("shop.example.test",)


# ---- bad input through the CLI: clear file:line errors, no node contacted ------------------------------------

@pytest.fixture
def listener() -> Iterator[object]:
    from test_bad_input import Listener

    node = Listener()
    try:
        yield node
    finally:
        node.sock.close()


def test_cli_refuses_bad_edge_input_and_contacts_no_node(tmp_path: Path, ca: TestCA, listener: object) -> None:
    from test_bad_input import assert_refused, cli, inventory_for

    inv = inventory_for(tmp_path, listener)  # type: ignore[arg-type]
    one, two = ca.leaf("shop.example.test"), ca.leaf("shop.example.test")
    (tmp_path / "shop.crt").write_bytes(one.cert)
    (tmp_path / "shop.key").write_bytes(two.key)
    a = write(tmp_path, "a.yaml", "services:\n  shop:\n    image: busybox\n    lb: {hosts: [shop.example.test]}\n")
    b = write(tmp_path, "b.yaml", "services:\n  other:\n    image: busybox\n    lb: {hosts: [shop.example.test]}\n")
    assert_refused(cli("plan", a, b, "-i", inv),
                   f"{b}:2: services.other.lb.hosts: host shop.example.test is already routed to service 'shop'")
    c = write(tmp_path, "c.yaml", "services:\n  web:\n    image: busybox\n    lb: {hosts: [web_1.example]}\n")
    assert_refused(cli("apply", c, "-i", inv), f"{c}:4: services.web.lb.hosts[0]: expected a DNS host name")
    d = write(tmp_path, "d.yaml", "services:\n  shop:\n    image: busybox\n    lb:\n      hosts: [shop.example.test]\n"
                                  "      tls: {cert: shop.crt, key: shop.key}\n")
    result = cli("apply", d, "-i", inv)
    assert_refused(result, f"{d}:6: services.shop.lb.tls.cert: the certificate does not match its key")
    assert key_free(result.stdout + result.stderr, two.key)
    assert listener.offered() == 0  # type: ignore[attr-defined]


def key_free(text: str, key: bytes) -> bool:
    return "PRIVATE" not in text and not any(ln in text for ln in key.decode().splitlines()[1:-1])


def test_a_service_port_on_the_shared_edge_ports_is_refused_while_hosts_route() -> None:
    from fleet.config.spec import LbSpec, ServiceSpec
    from fleet.plan.checks import edge_port_problems

    shared = {80: "edge.http_port", 443: "edge.https_port"}
    routed = ServiceSpec("shop", "busybox", lb=LbSpec(None, hosts=("shop.example.test",)))
    plain = ServiceSpec("web", "busybox", lb=LbSpec(443))
    other = ServiceSpec("db", "busybox", lb=LbSpec(5432, "tcp"))
    assert edge_port_problems([routed, plain, other], shared) == [
        ("web", "lb.port 443 is the lb nodes' shared port for host names (edge.https_port); choose another or route "
                "the service by lb.hosts")]
    assert edge_port_problems([plain], shared) == []  # nobody routes by host name: 443 is a port like any other
    assert [s for s, _ in edge_port_problems([plain], shared, others_routed=True)] == ["web"]


def test_lb_show_masks_the_password_hash_and_plan_diffs_the_config() -> None:
    from fleet.engine.lbview import config_diff, masked, tls_in_config

    h = stats_password_hash("pw")
    text = render_edge(edge_services(), edge=EdgeConfig(), stats_password_hash=h)
    shown = masked(text)
    assert h not in shown and "    user fleet password '<hidden>'" in shown
    assert tls_in_config(text) == {"shop": FP, "blog": "cd" * 32}
    assert config_diff("lb1", text, text) == []
    fewer = render_edge(edge_services()[1:], edge=EdgeConfig(), stats_password_hash=h)
    diff = config_diff("lb1", text, fewer)
    assert diff[:2] == ["--- lb1: haproxy.cfg (now)", "+++ lb1: haproxy.cfg (after apply)"]
    assert "-    use_backend be_shop if { var(txn.host) -m str shop.example.test }" in diff
    assert not any(h in line for line in diff)
    assert config_diff("lb1", None, fewer)[2].startswith("@@")


def test_status_shows_a_host_routed_service_by_its_urls() -> None:
    from fleet.config.edge import TlsSpec
    from fleet.config.spec import LbSpec
    from fleet.engine.status import host_urls

    assert host_urls(LbSpec(None, hosts=("a.example.test", "b.example.test"), paths=("/api", "/v2"),
                            tls=TlsSpec(acme=True))) == (
        "https://a.example.test/api", "https://a.example.test/v2", "https://b.example.test/api",
        "https://b.example.test/v2")
    assert host_urls(LbSpec(None, hosts=("a.example.test",))) == ("http://a.example.test/",)
    assert host_urls(LbSpec(7000)) == () == host_urls(None)


def test_stats_listen_on_loopback_without_a_password_and_everywhere_behind_one() -> None:
    from fleet.core.edge import EdgeSettings
    from fleet.engine.edge import Edge

    assert Edge(None, EdgeSettings()).stats(8404) == (("127.0.0.1", 8404), None)  # type: ignore[arg-type]
    guarded = Edge(None, EdgeSettings(stats_password_secret="lb-stats"),  # type: ignore[arg-type]
                   secrets={"lb-stats": "pw"}.get)
    assert guarded.stats(8404) == (("0.0.0.0", 8404), stats_password_hash("pw"))
    missing = Edge(None, EdgeSettings(stats_password_secret="lb-stats"), secrets={}.get)  # type: ignore[arg-type]
    with pytest.raises(EdgeError, match="the stats password secret 'lb-stats' is not in the keyring"):
        missing.stats(8404)
