"""A real etcd on loopback for the tests and the benchmark, started and stopped by PID, its data in a temp dir.

`LocalEtcd` runs one member, or `members=3` for a cluster of three in this network namespace (peers and clients
on loopback ports, FACTS §12), without TLS (the peers are on loopback; TLS between peers is the record nodes').
Run as a script (`python tests/etcd_local.py record`) it records the `etcdctl -w json` outputs the parser tests
read (tests/data/etcd/*.json).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from helpers import free_port

from fleet.engine.etcd import EtcdMembers
from fleet.node import etcd as E
from fleet.store.etcd_pki import PeerCa, issue_peer

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
DATA = Path(__file__).parent / "data" / "etcd"


class LocalEtcd:
    """`members` etcd processes on 127.0.0.1, stopped (SIGTERM, then SIGKILL) and their data removed on exit."""

    def __init__(self, members: int = 1, prefix: str = "hxe") -> None:
        self.count = members
        self.prefix = prefix
        self.dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-etcd-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client_ports = [free_port() for _ in range(members)]
        self.peer_ports = [free_port() for _ in range(members)]

    @property
    def port(self) -> int:
        """The first member's client port (any member answers for the cluster)."""
        return self.client_ports[0]

    def config(self, i: int) -> E.MemberConfig:
        members = tuple(E.Member(f"{self.prefix}{k}", "127.0.0.1", self.peer_ports[k]) for k in range(self.count))
        return E.MemberConfig(members[i], members, cluster_token=f"{self.prefix}-test",
                              client_port=self.client_ports[i], files=E.EtcdFiles(str(self.dir / f"m{i}")), tls=False)

    def start(self) -> LocalEtcd:
        if ETCD is None or ETCDCTL is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server etcd-client)")
        try:
            for i in range(self.count):
                self.launch(self.config(i))
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self, cfg: E.MemberConfig) -> None:
        """Start one etcd process with `cfg` (its files under this cluster's temp dir); stopped with the others."""
        Path(cfg.files.dir).mkdir(mode=0o700, parents=True)
        Path(cfg.files.config).write_text(E.render_config(cfg))
        with open(cfg.files.log_file, "ab") as log:
            self.procs.append(subprocess.Popen([ETCD or "etcd", "--config-file", cfg.files.config],
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=log))

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.client_ports:
            while True:
                done = subprocess.run([ETCDCTL or "etcdctl", f"--endpoints=127.0.0.1:{port}",
                                       "--command-timeout=1s", "endpoint", "health"], capture_output=True)
                if done.returncode == 0:
                    break
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    logs = "".join(Path(self.config(i).files.log_file).read_text()[-2000:]
                                   for i in range(self.count))
                    raise RuntimeError(f"etcd did not become healthy: {logs}")
                time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def start_members(members: EtcdMembers, ca: PeerCa) -> None:
    """Start a new cluster of `members` on lab nodes, each with a peer certificate `ca` issued; all must start."""
    reports = await members.ensure((ca, {name: issue_peer(ca, cfg.member) for name, cfg in members.configs.items()}))
    assert [r.state.result if r.state else r.error for r in reports] == ["started"] * len(members.nodes)


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


def _plain(value: object) -> object:
    """A parser's result as JSON: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _saver(source: str) -> Callable[..., str]:
    """A function that runs one etcdctl command and stores its output, the parser's result as the expectation,
    in tests/data/etcd/NAME.json."""
    def save(name: str, argv: list[str], parse: str, stdin: str | None = None) -> str:
        done = _run(argv, stdin)
        # The ports are this recording's: stored as the default so the argv reads as a node would run it.
        shown = [re.sub(r"^--endpoints=127\.0\.0\.1:\d+$", f"--endpoints=127.0.0.1:{E.CLIENT_PORT}", a)
                 for a in argv]
        doc = {"source": source, "argv": shown, "stdin": stdin, "exit_status": done.returncode, "stdout": done.stdout,
               "stderr": done.stderr, "parser": parse,
               "expect": _plain(getattr(E, parse)(done.stderr if parse == "error_line" else done.stdout))}
        (DATA / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        return done.stdout
    return save


def record() -> None:
    """Record every parsed etcdctl output against a fresh single member; the expectations are the parsers'
    results, to be read and checked by a person before committing (the tests then hold them fixed)."""
    version = _run([ETCDCTL or "etcdctl", "version"]).stdout.split("\n")[0]
    DATA.mkdir(parents=True, exist_ok=True)
    with LocalEtcd(prefix="rec") as etcd:
        at = E.Endpoint(etcd.port)
        save = _saver(f"recorded by `python tests/etcd_local.py record` ({version}, Debian 12 etcd-client/"
                                 f"etcd-server 3.4.23) against a private single member on loopback")

        def save_watch(name: str, argv: list[str]) -> None:
            # A watch runs until stopped: the first line it prints is kept, then it is stopped by its PID.
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
            finally:
                proc.terminate()
                proc.wait(timeout=5)
            shown = [a.replace(f"127.0.0.1:{etcd.port}", f"127.0.0.1:{E.CLIENT_PORT}") for a in argv]
            doc = {"source": f"recorded by `python tests/etcd_local.py record` ({version}) against a private single "
                             f"member on loopback; the first line of a running watch",
                   "argv": shown, "stdin": None, "exit_status": None, "stdout": line, "stderr": "",
                   "parser": "parse_watch_line", "expect": _plain(E.parse_watch_line(line))}
            (DATA / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")

        grant = E.parse_lease_grant(save("lease_grant", E.lease_grant_argv(60, at=at), "parse_lease_grant"))
        short = E.parse_lease_grant(_run(E.lease_grant_argv(1, at=at)).stdout)
        lock = json.dumps({"holder": "root@ctl \"one\"", "command": "fleet apply\nweb é ✓"}, ensure_ascii=False)
        save("txn_take", E.txn_argv(at=at), "parse_txn", E.txn_input(
            [E.Compare("create", "/fleet/lock", 0)], [E.Put("/fleet/lock", lock, grant.id)], [E.Get("/fleet/lock")]))
        save("txn_held", E.txn_argv(at=at), "parse_txn", E.txn_input(
            [E.Compare("create", "/fleet/lock", 0)], [E.Put("/fleet/lock", "x", short.id)], [E.Get("/fleet/lock")]))
        save("get_lock", E.get_argv("/fleet/lock", at=at), "parse_get")
        save("get_missing", E.get_argv("/fleet/nothing", at=at), "parse_get")
        for n in (1, 2):
            _run(E.txn_argv(at=at), E.txn_input([], [E.Put(f"/fleet/events/{n:04d}", json.dumps({"n": n}))]))
        save("get_prefix", E.get_argv("/fleet/events/", prefix=True, by_create=True, at=at), "parse_get")
        save("txn_delete", E.txn_argv(at=at), "parse_txn", E.txn_input([], [E.Delete("/fleet/events/0001")]))
        # A watch from revision 1: the history (two puts and the delete) comes first, in one batch.
        save_watch("watch_history", E.watch_argv("/fleet/events/", 1, at=at))
        save("keepalive", E.lease_keepalive_argv(grant.id, at=at), "parse_keepalive")
        save("timetolive", E.lease_timetolive_argv(grant.id, at=at), "parse_timetolive")
        time.sleep(2.5)
        save("keepalive_gone", E.lease_keepalive_argv(short.id, at=at), "error_line")
        save("timetolive_gone", E.lease_timetolive_argv(short.id, at=at), "parse_timetolive")
        save("revoke_gone", E.lease_revoke_argv(short.id, at=at), "error_line")
        save("member_list", E.member_list_argv(at=at), "parse_member_list")
        # Compacted past the revision asked for: etcd cancels the watch and says down to where it compacted.
        _run([*E.etcdctl("compaction", "4", at=at)])
        save_watch("watch_compacted", E.watch_argv("/fleet/events/", 2, at=at))


def record_members() -> None:
    """Record the membership commands against a fresh cluster of three: a fourth member added as a learner (before
    and after it starts), promoted (refused while it catches up, then done), one original removed, and a member
    that is gone. Apart from `record` so its recordings keep their IDs."""
    version = _run([ETCDCTL or "etcdctl", "version"]).stdout.split("\n")[0]
    with LocalEtcd(members=3, prefix="rec") as etcd:
        at = E.Endpoint(etcd.port)
        save = _saver(f"recorded by `python tests/etcd_local.py record-members` ({version}, Debian 12 "
                                 f"etcd-client/etcd-server 3.4.23) against a private cluster of three on loopback")
        # etcd refuses a membership change until every member has been connected for 5 s (strict reconfig check).
        time.sleep(6)
        save("member_list_three", E.member_list_argv(at=at), "parse_member_list")
        new = E.Member("rec3", "127.0.0.1", free_port())
        added = E.parse_member_add(save("member_add_learner", E.member_add_argv(new, tls=False, at=at),
                                        "parse_member_add"))
        save("member_list_pending", E.member_list_argv(at=at), "parse_member_list")
        save("member_promote_behind", E.member_promote_argv(added.member.id, at=at), "error_line")
        client = free_port()
        members = (*(E.Member(f"rec{k}", "127.0.0.1", etcd.peer_ports[k]) for k in range(3)), new)
        cfg = E.MemberConfig(new, members, cluster_token="rec-test", state="existing", client_port=client,
                             files=E.EtcdFiles(str(etcd.dir / "m3")), tls=False)
        etcd.launch(cfg)
        learner = E.Endpoint(client)
        for _ in range(100):
            if _run(E.endpoint_status_argv(at=learner)).returncode == 0:
                break
            time.sleep(0.1)
        save("endpoint_status_learner", E.endpoint_status_argv(at=learner), "parse_endpoint_status")
        # Caught up once its applied index is the leader's: the promote then goes through.
        for _ in range(100):
            mine = E.parse_endpoint_status(_run(E.endpoint_status_argv(at=learner)).stdout)[0]
            if mine.raft_index >= E.parse_endpoint_status(_run(E.endpoint_status_argv(at=at)).stdout)[0].raft_index:
                break
            time.sleep(0.1)
        save("member_promote", E.member_promote_argv(added.member.id, at=at), "parse_member_promote")
        save("member_promote_voter", E.member_promote_argv(added.member.id, at=at), "error_line")
        listed = E.parse_member_list(save("member_list_four", E.member_list_argv(at=at), "parse_member_list"))
        gone = next(m for m in listed if m.name == "rec2")
        save("member_remove", E.member_remove_argv(gone.id, at=at), "parse_member_list")
        # The removed member may have led: wait for the next leader, so the answer is about the member, not that.
        for _ in range(100):
            if E.parse_endpoint_status(_run(E.endpoint_status_argv(at=at)).stdout)[0].leader not in (0, gone.id):
                break
            time.sleep(0.1)
        save("member_remove_gone", E.member_remove_argv(gone.id, at=at), "error_line")
        save("endpoint_status", E.endpoint_status_argv(at=at), "parse_endpoint_status")


if __name__ == "__main__":
    if sys.argv[1:] not in (["record"], ["record-members"]):
        sys.exit("usage: python tests/etcd_local.py record|record-members")
    os.chdir(Path(__file__).parent)
    (record if sys.argv[1] == "record" else record_members)()
