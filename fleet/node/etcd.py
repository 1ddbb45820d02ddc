"""etcd on the record nodes, as values: one member's config, the sh scripts that start, check and stop it over SSH
(kept running like HAProxy: the next run starts it again if it died), and `etcdctl` argv builders with pure
parsers for their `-w json` output. No I/O here; `fleet.store.etcd` runs these over the transport.

A member listens for clients on its node's loopback only (a controller reaches it through SSH, never over the
network) and for peers on the node's address with mutual TLS, using certificates fleet issues; its data lives
in `NodePaths.base`/etcd.

etcdctl's JSON (3.4): keys and values are base64; 64-bit IDs (leases, members, clusters) are JSON numbers that
Python reads exactly; a `false` boolean (`succeeded` of a txn) is left out. `put --lease` wants the lease ID in
hex, every other command prints it in decimal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from fleet.core.errors import ScriptOutputError
from fleet.core.shell import Script
from fleet.node.etcd_json import (
    LEASE_GONE as LEASE_GONE,
)
from fleet.node.etcd_json import (
    EndpointStatus as EndpointStatus,
)
from fleet.node.etcd_json import (  # the parsers, importable from here as before
    EtcdMember as EtcdMember,
)
from fleet.node.etcd_json import (
    KeyValue as KeyValue,
)
from fleet.node.etcd_json import (
    LeaseGrant as LeaseGrant,
)
from fleet.node.etcd_json import (
    LeaseTtl as LeaseTtl,
)
from fleet.node.etcd_json import (
    MemberAdded as MemberAdded,
)
from fleet.node.etcd_json import (
    Range as Range,
)
from fleet.node.etcd_json import (
    TxnResult as TxnResult,
)
from fleet.node.etcd_json import (
    WatchBatch as WatchBatch,
)
from fleet.node.etcd_json import (
    WatchEvent as WatchEvent,
)
from fleet.node.etcd_json import (
    error_line as error_line,
)
from fleet.node.etcd_json import (
    parse_endpoint_status as parse_endpoint_status,
)
from fleet.node.etcd_json import (
    parse_get as parse_get,
)
from fleet.node.etcd_json import (
    parse_keepalive as parse_keepalive,
)
from fleet.node.etcd_json import (
    parse_lease_grant as parse_lease_grant,
)
from fleet.node.etcd_json import (
    parse_member_add as parse_member_add,
)
from fleet.node.etcd_json import (
    parse_member_list as parse_member_list,
)
from fleet.node.etcd_json import (
    parse_member_promote as parse_member_promote,
)
from fleet.node.etcd_json import (
    parse_timetolive as parse_timetolive,
)
from fleet.node.etcd_json import (
    parse_txn as parse_txn,
)
from fleet.node.etcd_json import (
    parse_watch_line as parse_watch_line,
)
from fleet.node.haproxy.scripts import parse_script_output
from fleet.node.paths import DEFAULT, FILE_FUNCTIONS

CLIENT_PORT = 2379
PEER_PORT = 2380
# Every etcdctl call carries its own deadline: with no quorum a write otherwise waits for the gRPC default.
COMMAND_TIMEOUT_S = 5
START_RESULTS = ("unchanged", "started", "start-failed", "missing", "locked")

_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.:-]+$")


@dataclass(frozen=True)
class EtcdFiles:
    """etcd's files on a record node, in one root-only directory beside HAProxy's."""

    dir: str = f"{DEFAULT.base}/etcd"

    @property
    def config(self) -> str:
        return f"{self.dir}/etcd.conf.yml"

    @property
    def data_dir(self) -> str:
        return f"{self.dir}/data"

    @property
    def pki_dir(self) -> str:
        return f"{self.dir}/pki"

    @property
    def ca_cert(self) -> str:
        return f"{self.pki_dir}/ca.crt"

    @property
    def peer_cert(self) -> str:
        return f"{self.pki_dir}/peer.crt"

    @property
    def peer_key(self) -> str:
        return f"{self.pki_dir}/peer.key"

    @property
    def ca_key(self) -> str:
        """The CA's key, kept (0600) on the first record node only, so a later member's certificate can be
        issued; never on the others."""
        return f"{self.pki_dir}/ca.key"

    @property
    def pid_file(self) -> str:
        return f"{self.dir}/etcd.pid"

    @property
    def log_file(self) -> str:
        return f"{self.dir}/etcd.log"


@dataclass(frozen=True)
class Member:
    """One member of the fleet's etcd cluster: a record node's name and the address its peers reach it on."""

    name: str
    address: str
    peer_port: int = PEER_PORT

    def __post_init__(self) -> None:
        if not _MEMBER_NAME.match(self.name):
            raise ValueError(f"etcd member name: expected A-Z a-z 0-9 . _ - (at most 63), got {self.name!r}")
        if not _ADDRESS.match(self.address):
            raise ValueError(f"etcd member {self.name}: not an address: {self.address!r}")

    def peer_url(self, tls: bool = True) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{'https' if tls else 'http'}://{host}:{self.peer_port}"


@dataclass(frozen=True)
class MemberConfig:
    """What one member needs to start: itself, the cluster it joins, and where its files are.

    `state` is "new" when the cluster is being formed by `members` together, "existing" for a member added to a
    running cluster (after `etcdctl member add`). `tls=False` is for a test on one machine only: without it the
    peer port takes only peers holding a certificate of the fleet's CA (mutual TLS)."""

    member: Member
    members: tuple[Member, ...]
    cluster_token: str
    state: Literal["new", "existing"] = "new"
    client_port: int = CLIENT_PORT
    files: EtcdFiles = field(default_factory=EtcdFiles)
    tls: bool = True

    def __post_init__(self) -> None:
        if self.member not in self.members:
            raise ValueError(f"etcd member {self.member.name} is not among the cluster's members")
        if len({m.name for m in self.members}) != len(self.members):
            raise ValueError("etcd members: two members share a name")

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"


def render_config(cfg: MemberConfig) -> str:
    """etcd's `--config-file` for one member, as JSON (a YAML subset etcd reads; no YAML quoting to get wrong)."""
    peer = cfg.member.peer_url(cfg.tls)
    doc: dict[str, object] = {
        "name": cfg.member.name,
        "data-dir": cfg.files.data_dir,
        # Clients on loopback only: the port is never reachable from outside the node.
        "listen-client-urls": cfg.client_url,
        "advertise-client-urls": cfg.client_url,
        # The JSON gateway on the client port (fleet's client, fleet/store/etcd_http.py): on by default with
        # flags, but off when etcd 3.4.23 reads a config file that does not say so (verified: 404 page not found).
        "enable-grpc-gateway": True,
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": ",".join(f"{m.name}={m.peer_url(cfg.tls)}" for m in cfg.members),
        "initial-cluster-state": cfg.state,
        "initial-cluster-token": cfg.cluster_token,
        "logger": "zap",
        "log-outputs": ["stderr"],
    }
    if cfg.tls:
        doc["peer-transport-security"] = {
            "cert-file": cfg.files.peer_cert,
            "key-file": cfg.files.peer_key,
            "trusted-ca-file": cfg.files.ca_cert,
            "client-cert-auth": True,
        }
    return json.dumps(doc, indent=2) + "\n"


_COMMON = r"""
set -u
umask 077
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
# etcd's PID, if it runs in this network namespace (lab nodes share one PID namespace).
epid() {
  p=$(cat "$PIDF" 2>/dev/null) && [ -n "$p" ] && alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = etcd ] \
    && [ "/proc/$p/ns/net" -ef /proc/self/ns/net ] && echo "$p"
}
healthy() { etcdctl --endpoints="$EP" --command-timeout=2s endpoint health >/dev/null 2>&1; }
# Started, for a learner joining a cluster: it answers `endpoint status` (never `endpoint health`) once serving.
ready() {
  if [ "${READY:-health}" = status ]; then etcdctl --endpoints="$EP" --command-timeout=2s endpoint status \
    >/dev/null 2>&1; else healthy; fi
}
"""

# Writes the config from stdin and starts etcd if it is not running; a running member is left alone (its
# config matters only when it first joins: after that the cluster's membership lives in its data dir), so a
# run that finds it healthy costs one `cat` and a pid check.
START = _COMMON + FILE_FUNCTIONS + r"""
command -v etcd >/dev/null 2>&1 || { echo "@@fleet result missing"; exit 0; }
mkdir -p "$D" || exit 3
chmod 0700 "$D" || exit 3
exec 9>>"$D/lock"
if command -v flock >/dev/null 2>&1; then flock -w 30 9 || { echo "@@fleet result locked"; exit 0; }; fi
if [ "$(wc -c <"$LOG" 2>/dev/null || echo 0)" -gt 4194304 ]; then : >"$LOG"; fi
fleet_write "$CFG" 0600 "${SIZE:-}" || exit 3
pid=$(epid) || pid=
if [ -n "$pid" ]; then echo "@@fleet pid $pid"; echo "@@fleet result unchanged"; exit 0; fi
off=$(wc -c <"$LOG" 2>/dev/null || echo 0)
setsid etcd --config-file "$CFG" </dev/null >>"$LOG" 2>&1 9>&- &
ep=$!
echo "$ep" >"$PIDF"
result=start-failed; i=0
# A new member of a cluster being formed is healthy only once a quorum is up: wait up to WAIT seconds, and
# report it started (running, not yet serving) if it is still alive by then.
while [ "$i" -lt "$((WAIT * 10))" ]; do
  if ! alive "$ep"; then break; fi
  if ready; then result=started; break; fi
  sleep 0.1; i=$((i + 1))
done
if [ "$result" = start-failed ] && alive "$ep"; then result=started; echo "@@fleet waiting-for-quorum 1"; fi
echo "@@fleet pid $ep"
echo "@@fleet log"; tail -c "+$((off + 1))" "$LOG" 2>/dev/null | tail -n 20
echo "@@fleet result $result"
"""

STATUS = _COMMON + r"""
pid=$(epid) || pid=
if [ -z "$pid" ]; then echo "@@fleet result stopped"; exit 0; fi
echo "@@fleet pid $pid"
if healthy; then echo "@@fleet result running"; else echo "@@fleet result unhealthy"; fi
"""

STOP = _COMMON + r"""
pid=$(epid) || pid=
if [ -z "$pid" ]; then echo "@@fleet result not-running"; exit 0; fi
kill -TERM "$pid"
i=0
while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if alive "$pid"; then kill -KILL "$pid"; echo "@@fleet result killed"; exit 0; fi
echo "@@fleet result stopped"
"""

# A member removed from the cluster: stopped (etcd 3.4 exits by itself once removed; this makes sure) and its
# data dir moved aside, so nothing starts it again with a stale view of the cluster. Kept, not deleted: it holds
# the history as it was.
RETIRE = _COMMON + r"""
pid=$(epid) || pid=
how=not-running
if [ -n "$pid" ]; then
  kill -TERM "$pid"
  i=0
  while alive "$pid" && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  if alive "$pid"; then kill -KILL "$pid"; how=killed; else how=stopped; fi
fi
echo "@@fleet stopped $how"
if [ -d "$DATA" ]; then
  to="$DATA.removed-$(date -u +%Y%m%dT%H%M%SZ)"
  mv "$DATA" "$to" || exit 3
  echo "@@fleet moved $to"
fi
echo "@@fleet result retired"
"""

def _env(cfg: MemberConfig) -> dict[str, str]:
    f = cfg.files
    return {"D": f.dir, "CFG": f.config, "PIDF": f.pid_file, "LOG": f.log_file,
            "EP": f"127.0.0.1:{cfg.client_port}", "DATA": f.data_dir}


def start_script(cfg: MemberConfig, size: int, wait_s: int = 10, *,
                 ready: Literal["health", "status"] = "health") -> Script:
    """Reads the member's config on stdin (`size` bytes, from `render_config`), writes it, and starts etcd
    detached unless it already runs in this node's network namespace. Prints `@@fleet result` one of
    START_RESULTS (see `parse_start`). It waits up to `wait_s` for the member to be healthy (`ready="health"`),
    or only to answer (`"status"`: a learner, which is never healthy until promoted)."""
    return Script(START, {**_env(cfg), "SIZE": str(size), "WAIT": str(wait_s), "READY": ready},
                  name="fleet-etcd-start")


def status_script(cfg: MemberConfig) -> Script:
    """`running` (healthy), `unhealthy` (alive, no quorum or not answering) or `stopped`."""
    return Script(STATUS, _env(cfg), name="fleet-etcd-status")


def stop_script(cfg: MemberConfig) -> Script:
    """SIGTERM to this node's etcd, SIGKILL after 5 s; its data stays."""
    return Script(STOP, _env(cfg), name="fleet-etcd-stop")


def retire_script(cfg: MemberConfig) -> Script:
    """Stop this node's etcd (a member just removed from the cluster) and move its data dir aside
    (`parse_retire`)."""
    return Script(RETIRE, _env(cfg), name="fleet-etcd-retire")


def parse_retire(text: str) -> tuple[str, str | None]:
    """What `retire_script` did: how etcd was stopped (stopped, killed, not-running) and where its data dir went
    (None when it had none)."""
    out = parse_script_output(text)
    if out.result != "retired":
        raise ScriptOutputError(f"unexpected etcd retire result {out.result!r}")
    return out.values.get("stopped", "not-running"), out.values.get("moved")


@dataclass(frozen=True)
class MemberState:
    """What a start or status script found: the outcome word, etcd's PID and the log lines of a start."""

    result: str
    pid: int | None
    log: str = ""

    @property
    def running(self) -> bool:
        return self.result in ("unchanged", "started", "running", "unhealthy")


def parse_start(text: str) -> MemberState:
    """The outcome of `start_script`, `status_script` or `stop_script`."""
    out = parse_script_output(text)
    if out.result not in (*START_RESULTS, "running", "unhealthy", "stopped", "not-running", "killed"):
        raise ScriptOutputError(f"unexpected etcd script result {out.result!r}")
    pid = out.values.get("pid")
    return MemberState(out.result, int(pid) if pid and pid.isdigit() else None, out.sections.get("log", ""))


# etcdctl: argv builders. Every command is `-w json` and bounded by `--command-timeout`.

@dataclass(frozen=True)
class Endpoint:
    """Which member etcdctl talks to (the node's own, on loopback) and how long one command may take."""

    port: int = CLIENT_PORT
    timeout_s: int = COMMAND_TIMEOUT_S


LOCAL = Endpoint()


def etcdctl(*args: str, at: Endpoint = LOCAL) -> list[str]:
    """`etcdctl` against this node's member on loopback, printing JSON."""
    return ["etcdctl", f"--endpoints=127.0.0.1:{at.port}", f"--command-timeout={at.timeout_s}s", "-w", "json",
            *args]


# Whether anything listens on a TCP port of this node, read from the kernel's socket tables (no tool needed):
# prints `listening` or `closed`, nothing where /proc/net/tcp cannot be read. A LISTEN row has the port after
# the local address, a zero remote port and state 0A.
_LISTENING = (
    'p=$(printf \':%04X \' "$1"); [ -r /proc/net/tcp ] || exit 0; '
    'if grep -q "$p[0-9A-F]*:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null; then echo listening; '
    'else echo closed; fi')


def listening_argv(port: int) -> list[str]:
    """`listening` or `closed`: whether the member's client port is open on this node, answered at once (a
    missing member costs etcdctl its whole --command-timeout)."""
    return ["sh", "-c", _LISTENING, "fleet-etcd-listening", str(port)]


def lease_grant_argv(ttl_s: int, at: Endpoint = LOCAL) -> list[str]:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
        raise ValueError(f"lease ttl: expected whole seconds >= 1, got {ttl_s!r}")
    return etcdctl("lease", "grant", str(ttl_s), at=at)


def lease_keepalive_argv(lease_id: int, at: Endpoint = LOCAL) -> list[str]:
    return etcdctl("lease", "keep-alive", "--once", lease_hex(lease_id), at=at)


def lease_timetolive_argv(lease_id: int, at: Endpoint = LOCAL) -> list[str]:
    return etcdctl("lease", "timetolive", lease_hex(lease_id), at=at)


def lease_revoke_argv(lease_id: int, at: Endpoint = LOCAL) -> list[str]:
    return etcdctl("lease", "revoke", lease_hex(lease_id), at=at)


def get_argv(key: str, *, prefix: bool = False, by_create: bool = False, at: Endpoint = LOCAL) -> list[str]:
    """`get KEY` (or every key under a prefix), oldest first by create revision when `by_create`."""
    extra = ["--prefix"] if prefix else []
    if by_create:
        extra += ["--sort-by=CREATE", "--order=ASCEND"]
    return etcdctl("get", *extra, "--", _key(key), at=at)


# `timeout`'s exit status when it stopped the command.
TIMED_OUT = 124


def txn_argv(at: Endpoint = LOCAL) -> list[str]:
    """A transaction read from stdin (`txn_input`). etcdctl 3.4's txn ignores --command-timeout (it waits for
    ever on a member with no quorum or no listener), so coreutils' `timeout` bounds it: exit TIMED_OUT."""
    return ["timeout", "-k", "1", str(at.timeout_s), *etcdctl("txn", at=at)]


def watch_argv(prefix: str, start_revision: int, at: Endpoint = LOCAL) -> list[str]:
    """Follow every change under `prefix` from `start_revision` on (history first, then live), one JSON batch a
    line (`parse_watch_line`); it runs until its reader closes the channel."""
    if isinstance(start_revision, bool) or not isinstance(start_revision, int) or start_revision < 1:
        raise ValueError(f"watch revision: expected an integer >= 1, got {start_revision!r}")
    if not prefix.startswith("/"):
        # etcdctl's watch takes no `--` (what follows it is a command to run), so a key must not look like a flag.
        raise ValueError(f"watch prefix: expected a key starting with '/', got {prefix!r}")
    return etcdctl("watch", "--prefix", f"--rev={start_revision}", _key(prefix), at=at)


def member_list_argv(at: Endpoint = LOCAL) -> list[str]:
    return etcdctl("member", "list", at=at)


def member_add_argv(member: Member, *, learner: bool = True, tls: bool = True, at: Endpoint = LOCAL) -> list[str]:
    """Add `member` to the cluster (`parse_member_add`). As a learner by default: it replicates the data but does
    not count toward the quorum until promoted, so a new member that never starts cannot cost the cluster its
    majority."""
    return etcdctl("member", "add", member.name, *(["--learner"] if learner else []),
                   f"--peer-urls={member.peer_url(tls)}", at=at)


def member_promote_argv(member_id: int, at: Endpoint = LOCAL) -> list[str]:
    """Make a learner a voting member (`parse_member_promote`); etcd refuses until it has caught up with the
    leader. `-w simple`: etcdctl 3.4 has no JSON for promote (it panics after promoting)."""
    return [*etcdctl(at=at)[:-2], "-w", "simple", "member", "promote", member_hex(member_id)]


def member_remove_argv(member_id: int, at: Endpoint = LOCAL) -> list[str]:
    """Remove a member by ID (`parse_member_list`: the members left)."""
    return etcdctl("member", "remove", member_hex(member_id), at=at)


def endpoint_status_argv(at: Endpoint = LOCAL) -> list[str]:
    """This node's member: its ID, its leader's, its revision (`parse_endpoint_status`). Answers without a
    quorum, and for a learner (which `endpoint health` does not)."""
    return etcdctl("endpoint", "status", at=at)


def member_hex(member_id: int) -> str:
    """A member ID as the member commands take it (hex; `member list` prints decimal)."""
    if isinstance(member_id, bool) or not isinstance(member_id, int) or member_id <= 0:
        raise ValueError(f"member id: expected a positive integer, got {member_id!r}")
    return f"{member_id:x}"


def lease_hex(lease_id: int) -> str:
    """etcd's lease ID as `put --lease` and the lease commands take it."""
    if isinstance(lease_id, bool) or not isinstance(lease_id, int) or lease_id <= 0:
        raise ValueError(f"lease id: expected a positive integer, got {lease_id!r}")
    return f"{lease_id:x}"


def _key(key: str) -> str:
    if not key or not key.isprintable() or key != key.strip() or '"' in key or "\\" in key:
        raise ValueError(f"etcd key: expected printable characters without quotes, backslashes or surrounding "
                         f"spaces, got {key!r}")
    return key


# Transactions: etcdctl reads compares, success ops and failure ops from stdin, each block ended by a blank
# line, one per line, arguments split on spaces except inside a Go-quoted string.

@dataclass(frozen=True)
class Compare:
    """One condition of a transaction: `target("key") op "value"`. `create`/`mod`/`version` compare numbers
    (0: the key does not exist), `value` the value."""

    target: Literal["create", "mod", "version", "value"]
    key: str
    value: str | int
    op: Literal["=", "!=", ">", "<"] = "="

    def line(self) -> str:
        return f"{self.target}({_quote(_key(self.key))}) {self.op} {_quote(str(self.value))}"


@dataclass(frozen=True)
class Put:
    key: str
    value: str
    lease: int | None = None

    def line(self) -> str:
        lease = f" --lease={lease_hex(self.lease)}" if self.lease is not None else ""
        return f"put{lease} {_quote(_key(self.key))} {_quote(self.value)}"


@dataclass(frozen=True)
class Get:
    key: str
    prefix: bool = False

    def line(self) -> str:
        return f"get{' --prefix' if self.prefix else ''} {_quote(_key(self.key))}"


@dataclass(frozen=True)
class Delete:
    key: str

    def line(self) -> str:
        return f"del {_quote(_key(self.key))}"


Op: TypeAlias = Put | Get | Delete


def _quote(text: str) -> str:
    """A Go-quoted string etcdctl's argument splitter unquotes (strconv.Unquote): JSON's string escapes without
    \\uXXXX for non-ASCII (Go refuses a lone surrogate), which are all valid Go escapes."""
    return json.dumps(text, ensure_ascii=False)


def txn_input(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> str:
    """The stdin of `txn_argv`: a value never appears in argv (nor in `ps` on the node)."""
    blocks = [[c.line() for c in compares], [o.line() for o in success], [o.line() for o in failure]]
    return "".join("".join(f"{line}\n" for line in block) + "\n" for block in blocks)
