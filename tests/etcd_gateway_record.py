"""Record etcd's JSON gateway answers for the parser tests (tests/data/etcd_gateway/*.json): `python
tests/etcd_gateway_record.py` starts a private single member on loopback (tests/etcd_local.py), sends it the
requests fleet's store makes (fleet.node.etcd_gateway builds them) over HTTP/1.1, and stores each request, the
status and body etcd answered, and the parser's result as the expectation, to be read and checked by a person
before committing (the tests then hold them fixed). The last one is a member that serves no gateway (its config
file does not turn it on), started with a config of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from etcd_local import ETCD, ETCDCTL, LocalEtcd, _plain
from helpers import free_port

from fleet.node import etcd as E
from fleet.node import etcd_gateway as G
from fleet.node import etcd_json as J

DATA = Path(__file__).parent / "data" / "etcd_gateway"


class Recorder:
    def __init__(self, port: int, source: str) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.port = port
        self.source = source

    def send(self, request: G.Request) -> tuple[int, str]:
        self.http.request("POST", request.path, json.dumps(request.body),
                          {"Content-Type": "application/json", "Grpc-Timeout": "5S"})
        answer = self.http.getresponse()
        return answer.status, answer.read().decode()

    def save(self, name: str, request: G.Request, parser: str) -> str:
        status, body = self.send(request)
        parse: Callable[[str], object] = getattr(J, parser)
        doc = {"source": self.source, "path": request.path, "request": request.body, "status": status,
               "body": body, "parser": parser, "expect": _plain(parse(body))}
        (DATA / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        return body


def record() -> None:
    version = subprocess.run([ETCD or "etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    DATA.mkdir(parents=True, exist_ok=True)
    with LocalEtcd(prefix="rgw") as etcd:
        rec = Recorder(etcd.port, f"recorded by `python tests/etcd_gateway_record.py` ({version}, Debian 12 "
                                  f"etcd-server) against a private single member on loopback")
        grant = J.gateway_grant(rec.save("lease_grant", G.grant_request(60), "gateway_grant"))
        short = J.gateway_grant(rec.send(G.grant_request(1))[1])
        lock = json.dumps({"holder": "root@ctl \"one\"", "command": "fleet apply\nweb é ✓"}, ensure_ascii=False)
        take = G.txn_request([E.Compare("create", "/fleet/lock", 0)], [E.Put("/fleet/lock", lock, grant.id)],
                             [E.Get("/fleet/lock")])
        rec.save("txn_take", take, "gateway_txn")
        rec.save("txn_held", G.txn_request([E.Compare("create", "/fleet/lock", 0)],
                                           [E.Put("/fleet/lock", "x", short.id)], [E.Get("/fleet/lock")]),
                 "gateway_txn")
        rec.save("range_lock", G.range_request("/fleet/lock"), "gateway_range")
        rec.save("range_missing", G.range_request("/fleet/nothing"), "gateway_range")
        for n in (1, 2, 3):
            rec.send(G.txn_request([], [E.Put(f"/fleet/events/{n:04d}", json.dumps({"n": n}))]))
        rec.save("range_prefix", G.range_request("/fleet/events/", prefix=True, by_create=True), "gateway_range")
        rec.save("range_oldest_keys", G.range_request("/fleet/events/", prefix=True, by_create=True, keys_only=True,
                                                      limit=2), "gateway_range")
        rec.save("range_count", G.range_request("/fleet/events/", prefix=True, count_only=True), "gateway_count")
        rec.save("txn_delete", G.txn_request([E.Compare("mod", "/fleet/events/0001", 0, ">")],
                                             [E.Delete("/fleet/events/0001")]), "gateway_txn")
        rec.save("keepalive", G.keepalive_request(grant.id), "gateway_keepalive")
        rec.save("timetolive", G.timetolive_request(grant.id), "gateway_timetolive")
        time.sleep(2.5)
        rec.save("keepalive_gone", G.keepalive_request(short.id), "gateway_keepalive")
        rec.save("timetolive_gone", G.timetolive_request(short.id), "gateway_timetolive")
        rec.save("revoke", G.revoke_request(grant.id), "gateway_revoke")
        rec.save("revoke_gone", G.revoke_request(grant.id), "gateway_error")
        many = G.txn_request([], [E.Delete(f"/fleet/x/{i}") for i in range(200)])
        rec.save("txn_too_many", many, "gateway_error")
        _no_gateway(etcd, version)
    with LocalEtcd(members=3, prefix="rgq") as three:
        for proc in three.procs[1:]:
            proc.terminate()
            proc.wait(timeout=10)
        rec = Recorder(three.port, f"recorded by `python tests/etcd_gateway_record.py` ({version}) against one "
                                   f"member of three whose two peers were stopped (no quorum), Grpc-Timeout 5S")
        rec.save("txn_no_quorum", G.txn_request([], [E.Put("/fleet/x", "1")]), "gateway_error")


def _no_gateway(etcd: LocalEtcd, version: str) -> None:
    """A member started from a config file that does not turn the gateway on: Go's plain 404."""
    port = free_port()
    me = E.Member("nogw", "127.0.0.1", free_port())
    cfg = E.MemberConfig(me, (me,), cluster_token="nogw", client_port=port, files=E.EtcdFiles(str(etcd.dir / "nogw")),
                         tls=False)
    Path(cfg.files.dir).mkdir(mode=0o700, parents=True)
    doc = json.loads(E.render_config(cfg))
    del doc["enable-grpc-gateway"]
    Path(cfg.files.config).write_text(json.dumps(doc))
    with open(cfg.files.log_file, "ab") as log:
        proc = subprocess.Popen([ETCD or "etcd", "--config-file", cfg.files.config], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    try:
        for _ in range(100):
            if subprocess.run([ETCDCTL or "etcdctl", f"--endpoints=127.0.0.1:{port}", "endpoint", "health"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        rec = Recorder(port, f"recorded by `python tests/etcd_gateway_record.py` ({version}) against a member "
                             f"started with `--config-file` that does not set enable-grpc-gateway")
        request = G.range_request("/fleet/lock")
        status, body = rec.send(request)
        out = {"source": rec.source, "path": request.path, "request": request.body, "status": status, "body": body,
               "parser": "no_gateway", "expect": G.no_gateway(status, body)}
        (DATA / "no_gateway.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit("usage: python tests/etcd_gateway_record.py")
    os.chdir(Path(__file__).parent)
    record()
