"""The fleet's lease: one writer (`apply`, `reconcile`, `rollback`…) at a time, decided on the record nodes.

Each record node keeps one lease file in its base directory (/var/lib/fleet/lease), changed only by
`LEASE_SCRIPT` under `flock` on /var/lib/fleet/lease.lock, written atomically (temp file + `mv`) and
timed by the node's own clock, so a controller's clock skew never matters. A run holds the fleet's lease
while a strict majority of record nodes hold its token; it renews every ttl/3, so a holder killed with
SIGKILL frees the lease when its ttl runs out. Read-only commands never take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, cast, get_args

from fleet.core.errors import LeaseError, LeaseHeld, LeaseInfo, LeaseLost
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.results.records import NodeLease
from fleet.store.nodes import DEFAULT_BASE_DIR, clean, failure, majority, node_dir
from fleet.transport import Pool, fanout

__all__ = [
    "LEASE_SCRIPT",
    "Lease",
    "LeaseInfo",
    "LeaseReply",
    "NodeLease",
    "break_lease",
    "lease_script",
    "lease_status",
    "parse_reply",
]

Op = Literal["acquire", "renew", "release", "status", "break"]
Result = Literal["acquired", "held", "renewed", "lost", "released", "notheld", "free", "broken"]
RESULTS: tuple[str, ...] = get_args(Result)

COMMAND_LIMIT = 60

# $1 base dir, $2 operation, $3 ttl in ms, $4 holder, $5 pid, $6 command; the token comes on stdin (not in
# argv, where `ps` on the node would show it). Times are the node's, in milliseconds. Prints `result=`,
# `now=`, then the lease file's lines (the lease as it is after the operation; for break, what was broken).
LEASE_SCRIPT = r"""
set -u
base=$1 op=$2 ttl=$3 holder=$4 pid=$5 command=$6
token=
IFS= read -r token || :
case $token in *[!0-9a-f]*) echo "fleet-lease: malformed token" >&2; exit 2 ;; esac
case $op in acquire|renew|release)
  [ -n "$token" ] || { echo "fleet-lease: $op needs a token" >&2; exit 2; } ;;
esac
mkdir -p "$base" || exit 1
umask 077
lease=$base/lease
exec 9>>"$base/lease.lock" || exit 1
flock -w 5 9 || { echo "fleet-lease: $base/lease.lock still locked after 5s" >&2; exit 3; }
now=$(date +%s%N 2>/dev/null)
case $now in
  ''|*[!0-9]*) now=$(( $(date +%s) * 1000 )) ;;
  *) now=$(( now / 1000000 )) ;;
esac
c_token= c_since=0 c_until=0
if [ -f "$lease" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      token=*) c_token=${line#token=} ;;
      since=*) c_since=${line#since=} ;;
      until=*) c_until=${line#until=} ;;
    esac
  done < "$lease"
fi
case $c_since in ''|*[!0-9]*) c_since=0 ;; esac
case $c_until in ''|*[!0-9]*) c_until=0 ;; esac
write() {
  tmp=$base/.lease.$$
  if printf 'v=1\nholder=%s\npid=%s\ncommand=%s\ntoken=%s\nsince=%s\nuntil=%s\n' \
      "$holder" "$pid" "$command" "$token" "$1" "$2" > "$tmp" && mv -f "$tmp" "$lease"; then
    return 0
  fi
  rm -f "$tmp"
  echo "fleet-lease: cannot write $lease" >&2
  exit 1
}
mine=false
[ -n "$c_token" ] && [ "$c_token" = "$token" ] && mine=true
case $op in
  acquire)
    if [ -n "$c_token" ] && [ "$mine" = false ] && [ "$now" -lt "$c_until" ]; then
      result=held
    else
      since=$now
      [ "$mine" = true ] && [ "$c_since" -gt 0 ] && since=$c_since
      write "$since" $(( now + ttl ))
      result=acquired
    fi ;;
  renew)
    if [ "$mine" = true ]; then write "$c_since" $(( now + ttl )); result=renewed; else result=lost; fi ;;
  release)
    if [ "$mine" = true ]; then rm -f "$lease" || exit 1; result=released; else result=notheld; fi ;;
  status)
    if [ -f "$lease" ]; then result=held; else result=free; fi ;;
  break)
    if [ -f "$lease" ]; then result=broken; else result=free; fi ;;
  *) echo "fleet-lease: unknown operation $op" >&2; exit 2 ;;
esac
printf 'result=%s\nnow=%s\n' "$result" "$now"
[ -f "$lease" ] && cat "$lease"
if [ "$op" = break ] && [ -f "$lease" ]; then rm -f "$lease" || exit 1; fi
exit 0
"""


def lease_script(op: Op, base_dir: str, *, ttl: float = 0.0, holder: str = "", pid: int = 0,
                 command: str = "") -> Script:
    """The command for one lease operation on one node (the token goes on stdin)."""
    return Script(LEASE_SCRIPT, args=(base_dir, op, str(max(int(ttl * 1000), 0)), clean(holder, 120), str(pid),
                                      clean(command, COMMAND_LIMIT)), name="fleet-lease")


async def end_renewal(renewer: asyncio.Task[None] | None, release: Callable[[], Awaitable[None]]) -> None:
    """A lease's exit: its renewal task stopped, then the lease given back, shielded so that a run cancelled
    (Ctrl-C) still releases it rather than leaving it to expire (the file lease and the etcd lease alike)."""
    if renewer is not None:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
    await asyncio.shield(release())


@dataclass(frozen=True)
class LeaseReply:
    """What one node answered to a lease operation: the result and the lease as it now stands (if any)."""

    node: str
    result: Result
    now: float
    info: LeaseInfo | None


def parse_reply(node: str, stdout: str) -> LeaseReply:
    """Parse LEASE_SCRIPT's output; raise ValueError when it is not what the script prints."""
    lines = stdout.splitlines()
    if len(lines) < 2 or not lines[0].startswith("result=") or not lines[1].startswith("now="):
        raise ValueError(f"unexpected reply from the lease script: {stdout[:200]!r}")
    result = lines[0].removeprefix("result=")
    if result not in RESULTS:
        raise ValueError(f"unknown lease result {result!r}")
    now_ms = _int(lines[1].removeprefix("now="), "now")
    fields: dict[str, str] = {}
    for line in lines[2:]:
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    info = None
    if fields:
        try:
            info = LeaseInfo(
                holder=fields.get("holder", "?"),
                pid=int(fields.get("pid", "0")),
                command=fields.get("command", ""),
                since=_int(fields.get("since", "0"), "since") / 1000,
                until=_int(fields.get("until", "0"), "until") / 1000,
                node=node,
                read_at=now_ms / 1000,
                token=fields.get("token", ""),
            )
        except ValueError:
            # A hand-edited lease file: the script treats it as expired, so do we (shown as held by "?").
            info = LeaseInfo("?", 0, "(unreadable lease file)", 0.0, 0.0, node, now_ms / 1000, "")
    return LeaseReply(node, cast(Result, result), now_ms / 1000, info)


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{what}: expected a number of milliseconds, got {text!r}")
    return int(text)




async def _each(pool: Pool, nodes: Sequence[Node], op: Op, base_dir: str, timeout: float, *, token: str = "",
                ttl: float = 0.0, holder: str = "", pid: int = 0, command: str = "") -> list[LeaseReply | str]:
    """One lease operation on every node at once; a node's failure comes back as a string, never raised."""
    def one(node: Node) -> Awaitable[CommandResult]:
        script = lease_script(op, node_dir(base_dir, node), ttl=ttl, holder=holder, pid=pid, command=command)
        return pool.run(node, script, stdin=token + "\n", timeout=timeout)

    results = await fanout(pool, nodes, one, timeout=timeout)
    replies: list[LeaseReply | str] = []
    for node, r in zip(nodes, results, strict=True):
        why = failure(r)
        if why is not None:
            replies.append(why)
            continue
        try:
            replies.append(parse_reply(node.name, r.stdout))
        except ValueError as exc:
            replies.append(str(exc))
    return replies


def _listing(nodes: Sequence[Node], replies: Sequence[LeaseReply | str]) -> list[NodeLease]:
    out: list[NodeLease] = []
    for node, reply in zip(nodes, replies, strict=True):
        if isinstance(reply, str):
            out.append((node.name, reply))
        else:
            out.append((node.name, reply.info if reply.result in ("held", "broken") else None))
    return out


async def lease_status(pool: Pool, nodes: Sequence[Node], *, base_dir: str = DEFAULT_BASE_DIR,
                       timeout: float = 10.0) -> list[NodeLease]:
    """The lease on each record node (a LeaseInfo, possibly `expired`; None when free; else why unreadable)."""
    return _listing(nodes, await _each(pool, nodes, "status", base_dir, timeout))


async def break_lease(pool: Pool, nodes: Sequence[Node], *, base_dir: str = DEFAULT_BASE_DIR,
                      timeout: float = 10.0) -> list[NodeLease]:
    """Remove the lease on every record node whoever holds it; returns what was broken (None: it was free)."""
    return _listing(nodes, await _each(pool, nodes, "break", base_dir, timeout))


def default_holder() -> str:
    """`user@host` of this controller process."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"{user}@{os.uname().nodename}"


class Lease:
    """The fleet's lease for one run: held while a strict majority of `nodes` carry this run's token.

    `async with Lease(pool, nodes, command="fleet apply", wait=60):` takes it (waiting up to `wait`
    seconds), renews it every ttl/3 in a task the context owns, and releases it on exit. Work done under it
    calls `check()` between steps: it raises `LeaseLost` once a renewal found the lease broken or taken, or
    the lease could not be renewed on a majority before it expired. `base_dir` is where the nodes keep it
    (`{node}` in it stands for the node's name).
    """

    def __init__(self, pool: Pool, nodes: Sequence[Node], *, command: str, ttl: float = 30.0,
                 timeout: float = 10.0, wait: float = 0.0, base_dir: str = DEFAULT_BASE_DIR,
                 holder: str | None = None, pid: int | None = None) -> None:
        if not nodes:
            raise ValueError("the fleet's lease needs at least one record node")
        if ttl <= 0 or timeout <= 0 or wait < 0:
            raise ValueError("ttl and timeout must be positive, wait not negative")
        self.pool = pool
        self.nodes = tuple(nodes)
        self.command = clean(command, COMMAND_LIMIT)
        self.ttl = ttl
        self.timeout = timeout
        self.wait = wait
        self.base_dir = base_dir
        self.holder = clean(holder if holder is not None else default_holder(), 120)
        self.pid = pid if pid is not None else os.getpid()
        self._token = secrets.token_hex(16)
        # node name -> controller monotonic time until which that node's copy is certainly ours.
        self._held: dict[str, float] = {}
        self._active = False
        self._lost: str | None = None
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (f"Lease(holder={self.holder!r}, pid={self.pid}, command={self.command!r}, "
                f"nodes={[n.name for n in self.nodes]!r}, held={self.held})")

    @property
    def needed(self) -> int:
        """How many record nodes must carry the lease: a strict majority."""
        return majority(len(self.nodes))

    @property
    def held(self) -> bool:
        """True while this run holds the lease on a majority (as of the last renewal)."""
        return self._active and self._lost is None and self._valid() >= self.needed

    @property
    def held_on(self) -> list[str]:
        """The record nodes on which this run's lease is currently known to be valid."""
        now = time.monotonic()
        return [n.name for n in self.nodes if self._held.get(n.name, 0.0) > now]

    def _valid(self) -> int:
        now = time.monotonic()
        return sum(1 for until in self._held.values() if until > now)

    async def _do(self, op: Op, nodes: Sequence[Node], timeout: float | None = None) -> list[LeaseReply | str]:
        return await _each(self.pool, nodes, op, self.base_dir, timeout or self.timeout, token=self._token,
                           ttl=self.ttl, holder=self.holder, pid=self.pid, command=self.command)

    async def acquire(self, wait: float = 0.0) -> None:
        """Take the lease on a majority of record nodes, retrying for up to `wait` seconds.

        Raises `LeaseHeld` (naming the holder) when another run holds it, or `LeaseError` when too few record
        nodes answer. When only a minority is won, what was won is released before retrying, so two
        controllers splitting the nodes between them both back off (with jitter) instead of deadlocking.
        """
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            sent = time.monotonic()
            replies = await self._do("acquire", self.nodes)
            won = [r.node for r in replies if isinstance(r, LeaseReply) and r.result == "acquired"]
            if len(won) >= self.needed:
                self._held = dict.fromkeys(won, sent + self.ttl)
                self._active, self._lost = True, None
                return
            # Give back what was won, and wherever the answer was lost on the way (it may have been won too).
            unsure = [n for n, r in zip(self.nodes, replies, strict=True)
                      if isinstance(r, str) or r.result == "acquired"]
            if unsure:
                await self._do("release", unsure)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._refusal(replies, len(won))
            await asyncio.sleep(min(left, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 1.0)

    def _refusal(self, replies: Sequence[LeaseReply | str], won: int) -> LeaseError:
        held = [r.info for r in replies if isinstance(r, LeaseReply) and r.result == "held" and r.info is not None]
        if held:
            # The holder named is the one on the most nodes (a minority copy may be a stale leftover).
            counts = Counter(i.token for i in held)
            return LeaseHeld(max(held, key=lambda i: counts[i.token]))
        problems = "; ".join(f"{n.name}: {r}" for n, r in zip(self.nodes, replies, strict=True) if isinstance(r, str))
        return LeaseError(f"cannot take the fleet's lease: {won} of {len(self.nodes)} record nodes granted it, "
                          f"{self.needed} needed ({problems})")

    async def renew(self) -> None:
        """One renewal round: extend the lease where it is ours, take it where it is free (a node back from
        being unreachable), and mark the lease lost when it is gone or taken on a majority. Never raises."""
        if not self._active or self._lost is not None:
            return
        sent = time.monotonic()
        timeout = min(self.timeout, self.ttl / 3)
        mine = [n for n in self.nodes if n.name in self._held]
        others = [n for n in self.nodes if n.name not in self._held]
        renewed, joined = await asyncio.gather(self._do("renew", mine, timeout), self._do("acquire", others, timeout))
        problems: list[str] = []
        for node, reply in [*zip(mine, renewed, strict=True), *zip(others, joined, strict=True)]:
            if isinstance(reply, str):
                problems.append(f"{node.name}: {reply}")  # keeps its expiry: valid until then
            elif reply.result in ("renewed", "acquired"):
                self._held[node.name] = sent + self.ttl
            elif reply.result == "lost":
                self._held.pop(node.name, None)
                taken = f"taken by {reply.info}" if reply.info is not None else "removed (broken?)"
                problems.append(f"{node.name}: {taken}")
        if self._active and self._valid() < self.needed:
            self._lost = (f"the fleet's lease was lost: valid on {self._valid()} of {len(self.nodes)} record nodes, "
                          f"{self.needed} needed" + (f" ({'; '.join(problems)})" if problems else ""))

    def check(self) -> None:
        """Raise `LeaseLost` unless this run still holds the lease; call it between steps of the work."""
        if not self._active:
            raise LeaseLost("the fleet's lease is not held by this run")
        if self._lost is not None:
            raise LeaseLost(self._lost)
        if self._valid() < self.needed:
            self._lost = (f"the fleet's lease was lost: not renewed on a majority of record nodes within "
                          f"its ttl ({self.ttl:g}s)")
            raise LeaseLost(self._lost)

    async def release(self) -> None:
        """Give the lease back on every record node that has this run's token; best effort, never raises
        for a node (an unreachable node's copy expires after the ttl)."""
        self._active = False
        self._held.clear()
        await self._do("release", self.nodes)

    async def _renew_forever(self) -> None:
        while self._active and self._lost is None:
            await asyncio.sleep(self.ttl / 3)
            await self.renew()

    async def __aenter__(self) -> Lease:
        await self.acquire(self.wait)
        self._renewer = asyncio.create_task(self._renew_forever(), name="fleet-lease-renewal")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await end_renewal(self._renewer, self.release)
        self._renewer = None
