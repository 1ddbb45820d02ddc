"""The sh scripts that drive HAProxy on an lb node (apply, runtime, status, stop) and pure parsers of their output.

Each script is fleet's own text; every path and command travels in env or on stdin, never in the text.
Scripts report in sections: a line `@@fleet NAME [VALUE]` starts one; `@@fleet result WORD` says what happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fleet.core.errors import ScriptOutputError
from fleet.core.shell import Script
from fleet.node.haproxy.jail import JAIL
from fleet.node.haproxy.render import check_file, check_name
from fleet.node.paths import DEFAULT, FILE_FUNCTIONS, HaproxyFiles

MARK = "@@fleet"
# ASCII record separator: ends each runtime reply (`\x1e RC`); HAProxy never prints it.
REPLY_END = "\x1e"

APPLY_RESULTS = ("unchanged", "invalid", "started", "start-failed", "start-timeout", "reloaded", "reload-failed",
                 "reload-timeout", "no-master", "locked", "missing", "no-user", "no-jail")

# One command ($1, lines) to the admin socket $ADMIN; its reply, and socat's own errors, on stdout.
_ADMIN_FN = r"""
admin() {
  socat -t 5 stdio "unix-connect:$ADMIN" 2>&1 <<FLEET_CMD
$1
FLEET_CMD
}
"""

_COMMON = r"""
set -u
umask 077
# These three read /proc with `read` (no fork): every process a script starts waits its turn for a CPU, and on a
# busy node each one adds that wait to the lb step a rollout is waiting on.
alive() { # not a zombie ("State:\tZ (zombie)")
  [ -r "/proc/$1/status" ] || return 1
  while IFS= read -r l; do
    case $l in State:?Z*) return 1 ;; State:*) return 0 ;; esac
  done 2>/dev/null <"/proc/$1/status"
  return 0
}
master_pid() {
  p=; read -r p 2>/dev/null <"$PIDF"; [ -n "$p" ] && alive "$p" || return 1
  c=; read -r c 2>/dev/null <"/proc/$p/comm"; [ "$c" = haproxy ] && echo "$p"
}
uid_of() { while read -r k v _; do [ "$k" = Uid: ] && { echo "$v"; return 0; }; done 2>/dev/null <"/proc/$1/status"; }
# The master socket of master $1: the jail's, or beside the config for a root master an older fleet started.
msock() { if [ "$(uid_of "$1")" = 0 ] && [ -S "$OLD_MASTER" ]; then echo "$OLD_MASTER"; else echo "$MASTER"; fi; }
ask() {
  socat -t 5 stdio "unix-connect:$1" 2>/dev/null <<FLEET_CMD
$2
FLEET_CMD
}
# The master socket refuses connections for tens of ms while the master re-executes: retry for up to 5 s.
ask_retry() {
  n=0
  until out=$(ask "$1" "$2"); do
    n=$((n + 1)); [ "$n" -ge 100 ] && return 1; sleep 0.05
  done
  printf '%s\n' "$out"
}
# `show proc`, retried (up to 5 s) while the socket refuses or answers without the master's line (seen right
# after a start under load; fleet.node.haproxy.stats.parse_show_proc needs it).
show_proc() {
  n=0; m='^[[:space:]]*[0-9][0-9]*[[:space:]][[:space:]]*master[[:space:]]'
  until out=$(ask "$1" "show proc") && printf '%s\n' "$out" | grep -q "$m"; do
    n=$((n + 1)); [ "$n" -ge 100 ] && { printf '%s\n' "$out"; return 1; }; sleep 0.05
  done
  printf '%s\n' "$out"
}
workers() { awk '/^#/ { s = $0; next } s == "# workers" && $1 ~ /^[0-9]+$/ { printf "%s ", $1 }'; }
failed() { sed -n 's/.*\[failed: *\([0-9]*\)\].*/\1/p'; }
size() { wc -c 2>/dev/null <"$1" || echo 0; }
since() { tail -c "+$(($2 + 1))" "$1" 2>/dev/null; }
"""

# The new config is staged like fleet.node.paths.write_file (temp file beside it, mode 0640 before any byte, stdin
# checked against $SIZE, removed on any failure or signal), validated (as root), and only then renamed over the
# old one. HAProxy runs as $HUSER in its jail (JAIL): its directory is root's, group $HUSER's, 0750; the files
# its master reads (config, server state, certificates, ACME map) root's, group-readable, 0640, so HAProxy reads
# them and can change none; run/ (its sockets) alone is its own. A master started as root by an older fleet is
# replaced with no connection refused: it reloads the new config with a socket that hands its listeners over,
# the jailed master takes them (`-x`), then the old one finishes its connections and exits (SIGUSR1).
APPLY = _COMMON + FILE_FUNCTIONS + r"""
command -v "$HAPROXY" >/dev/null 2>&1 || { echo "@@fleet result missing"; exit 0; }
exe=$(command -v "$HAPROXY")
lack=
for t in unshare pivot_root setpriv mount umount; do command -v "$t" >/dev/null 2>&1 || lack="$lack $t"; done
case "$exe" in /usr/*|/bin/*|/sbin/*) ;; *) lack="$lack $exe (HAProxy outside /usr)" ;; esac
if [ -n "$lack" ]; then echo "@@fleet missing"; echo "${lack# }"; echo "@@fleet result no-jail"; exit 0; fi
if ! huid=$(id -u "$HUSER" 2>/dev/null) || ! hgid=$(id -g "$HUSER" 2>/dev/null) || [ "$huid" = 0 ]; then
  echo "@@fleet result no-user"; exit 0
fi
mkdir -p "$D" && chown "0:$hgid" "$D" && chmod 0750 "$D" || exit 3
# The workers' chroot (fleet.node.haproxy.render.RunAs): empty, root's, read-only. The jail's mount point: empty.
[ -d "$CHROOT" ] || mkdir -m 0555 "$CHROOT" || exit 3
[ -d "$JAIL" ] || mkdir -m 0700 "$JAIL" || exit 3
mkdir -p "$RUN" && chown "$huid:$hgid" "$RUN" && chmod 0700 "$RUN" || exit 3
exec 9>>"$D/lock"
if command -v flock >/dev/null 2>&1; then flock -w 30 9 || { echo "@@fleet result locked"; exit 0; }; fi
# The master and workers append to the log for their whole life (reloads, health changes): keep it bounded.
if [ "$(size "$LOG")" -gt 4194304 ]; then : >"$LOG"; fi
share() { for f; do if [ -f "$f" ] && [ ! -L "$f" ]; then chgrp "$hgid" "$f" && chmod 0640 "$f"; fi; done; }
if [ -d "$CERTS" ] && [ ! -L "$CERTS" ]; then chgrp "$hgid" "$CERTS" && chmod 0750 "$CERTS"; fi
share "$CFG" "$STATE" "$MAP" "$CERTS"/*.pem
fleet_stage "$CFG" 0640 "${SIZE:-}" || exit 3
new=$fleet_staged
chgrp "$hgid" "$new" || exit 3
pid=$(master_pid) || pid=
old=
if [ -n "$pid" ] && [ "$(uid_of "$pid")" = 0 ]; then old=$pid; fi
if [ -n "$pid" ] && [ -z "$old" ] && cmp -s "$new" "$CFG"; then
  fleet_unstage; echo "@@fleet result unchanged"; exit 0
fi
echo "@@fleet check"
if ! "$HAPROXY" -c -f "$new" 2>&1; then
  fleet_unstage; echo "@@fleet result invalid"; exit 0
fi
jail_sh=$(cat <<'FLEET_JAIL'
""" + JAIL + r"""FLEET_JAIL
)
# start [SOCKET]: the master in its jail (taking the listeners of the process behind SOCKET); sets result, hp.
start() {
  if [ -n "${1:-}" ]; then set -- -x "$1"; fi
  off=$(size "$LOG")
  # fd 9 (the lock) is closed for haproxy, or it would hold the lock for its whole life. Every step execs the
  # next in place (setsid, unshare, sh, setpriv, env): $! is the master's PID.
  setsid unshare --mount --propagation private sh -c "$jail_sh" fleet-haproxy-jail "$D" "$JAIL" "$huid" "$hgid" \
    "$exe" -W -S "$MASTER" -f "$CFG" "$@" </dev/null >>"$LOG" 2>&1 9>&- &
  hp=$!
  echo "$hp" >"$PIDF"
  result=start-timeout; i=0
  while [ "$i" -lt 200 ]; do
    if ! alive "$hp"; then result=start-failed; break; fi
    if since "$LOG" "$off" | grep -q 'Loading success'; then result=started; break; fi
    sleep 0.05; i=$((i + 1))
  done
}
# reload SOCKET: the master behind SOCKET re-executes with $CFG; sets result, now (its `show proc` after).
reload() {
  off=$(size "$LOG")
  if ! ask_retry "$1" reload >/dev/null; then result=no-master; now=; return; fi
  result=reload-timeout; i=0; now=
  while [ "$i" -lt 300 ]; do
    sleep 0.05; i=$((i + 1))
    now=$(ask "$1" "show proc") || continue
    f=$(printf '%s\n' "$now" | failed); w=$(printf '%s\n' "$now" | workers)
    if [ "${f:-0}" -gt "${f0:-0}" ]; then result=reload-failed; break; fi
    if [ -n "$w" ] && [ "$w" != "$w0" ] && since "$LOG" "$off" | grep -q 'Loading success'; then
      result=reloaded; break
    fi
  done
}
# Runtime changes (drain, weights, maint) survive a reload or a new master through the state file.
save_state() {
  if st=$(ask "$1" "show servers state") && [ "$(printf '%s\n' "$st" | head -n 1)" = 1 ]; then
    printf '%s\n' "$st" >"$STATE.new" && share "$STATE.new" && mv -f "$STATE.new" "$STATE"
  else
    echo "@@fleet warning"; echo "could not save the server state before the reload"
  fi
}
put_new() { mv -f "$new" "$CFG"; fleet_staged=; fleet_sname=; }
if [ -n "$old" ]; then
  echo "@@fleet warning"; echo "HAProxy's master (PID $old) ran as root (an older fleet's): replaced by one in its jail"
  save_state "$OLD_ADMIN"
  w0=$(ask "$OLD_MASTER" "show proc" | workers); f0=$(ask "$OLD_MASTER" "show proc" | failed)
  # The old master reloads the new config (its workers as $HUSER, as before) with a socket that hands over its
  # listeners, which the new master takes: no port is ever closed.
  result=no-master
  if [ -S "$OLD_MASTER" ]; then
    awk -v u="$HUSER" '$1 == "stats" && $2 == "socket" { $0 = $0 " expose-fd listeners" } { print }
      $0 == "global" { print "    user " u; print "    group " u }' "$new" >"$CFG.bridge" && mv -f "$CFG.bridge" "$CFG"
    reload "$OLD_MASTER"
  fi
  if [ "$result" = reloaded ] && [ -S "$ADMIN" ] && chown "$huid:$hgid" "$ADMIN"; then
    put_new; start "$ADMIN"
  else
    result=start-failed
  fi
  if [ "$result" = started ]; then
    kill -USR1 "$old"
  else
    # No hand-over: the old master stops (its connections close) and a new one starts on the freed ports.
    echo "@@fleet warning"; echo "no listener hand-over from the old master ($result): restarted"
    if [ -n "${hp:-}" ] && alive "$hp"; then kill -TERM "$hp"; fi
    kill -TERM "$old"; i=0; while alive "$old" && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    alive "$old" && kill -KILL "$old"
    [ -n "$fleet_staged" ] && put_new
    rm -f "$ADMIN"; start
  fi
  rm -f "$OLD_MASTER" "$OLD_ADMIN"
  if [ "$result" = started ]; then echo "@@fleet after"; show_proc "$MASTER"; fi
  echo "@@fleet log"; since "$LOG" "$off"
  echo "@@fleet result $result"
  exit 0
fi
if [ -z "$pid" ]; then
  put_new
  # Runtime state dies with the process: a fresh start must not load a stale one.
  rm -f "$MASTER" "$STATE"
  start
  if [ "$result" = started ]; then echo "@@fleet after"; show_proc "$MASTER"; fi
  echo "@@fleet log"; since "$LOG" "$off"
  echo "@@fleet result $result"
  exit 0
fi
if ! before=$(show_proc "$MASTER"); then
  fleet_unstage; echo "@@fleet result no-master"; exit 0
fi
echo "@@fleet before"; printf '%s\n' "$before"
f0=$(printf '%s\n' "$before" | failed); w0=$(printf '%s\n' "$before" | workers)
save_state "$ADMIN"
cp -fp "$CFG" "$CFG.prev"
put_new
reload "$MASTER"
if [ "$result" = no-master ]; then mv -f "$CFG.prev" "$CFG"; echo "@@fleet result no-master"; exit 0; fi
# A failed reload leaves the old worker serving the old config: put the old file back to match it.
if [ "$result" = reload-failed ]; then mv -f "$CFG.prev" "$CFG"; fi
echo "@@fleet after"; printf '%s\n' "$now"
echo "@@fleet log"; since "$LOG" "$off"
echo "@@fleet result $result"
"""

# A server-only change (fleet.node.haproxy.runtime): the runtime commands in $CMDS, then the deletions in $DELS
# (each asked alone), then the new config (on stdin, staged) over the old one, with no reload. It is not checked
# with `haproxy -c` (a parse of the whole config, most of this script's CPU, on the one node every rollout's
# updates queue on): its other lines are those of the config in place, which was checked (`$OLD`), and each new
# server line was parsed by the running HAProxy itself (`add server` takes a config line's arguments and refuses
# what it cannot parse: the caller then reloads, through APPLY, which checks).
# $OLD is the sha256 of the config the commands were computed from: another one on the node (`stale`) is
# printed back and nothing is touched. A refused command (`refused`) stops the deletions and leaves the file as it
# was (the caller then reloads).
SERVERS = _COMMON + FILE_FUNCTIONS + _ADMIN_FN + r"""
[ -d "$D" ] || mkdir -p "$D" || exit 3
exec 9>>"$D/lock"
if command -v flock >/dev/null 2>&1; then flock -w 30 9 || { echo "@@fleet result locked"; exit 0; }; fi
if ! pid=$(master_pid); then cat >/dev/null; echo "@@fleet result not-running"; exit 0; fi
# A root master an older fleet started listens on other sockets: the caller's apply replaces it.
if [ "$(uid_of "$pid")" = 0 ]; then cat >/dev/null; echo "@@fleet result old-master"; exit 0; fi
sum=$(sha256sum <"$CFG" 2>/dev/null) || sum=
if [ "${sum%% *}" != "$OLD" ]; then
  cat >/dev/null
  echo "@@fleet current"; cat "$CFG" 2>/dev/null
  echo "@@fleet result stale"; exit 0
fi
fleet_stage "$CFG" 0640 "${SIZE:-}" || exit 3
new=$fleet_staged
# Readable by HAProxy's group, as apply left the config in place: the next reload reads this file.
chgrp --reference="$CFG" "$new" || { fleet_unstage; exit 3; }
if cmp -s "$new" "$CFG"; then fleet_unstage; echo "@@fleet result unchanged"; exit 0; fi
# All but the deletions in one session of the admin socket, one socat instead of one per command: in `prompt`
# mode every reply ends with a `> ` prompt, so fleet.node.haproxy.scripts.parse_batch can tell them apart. Any
# line but a prompt and the replies fleet.node.haproxy.render.reply_error counts as success is a refusal.
result=updated
if [ -n "$CMDS" ]; then
  if out=$(admin "prompt
$CMDS"); then rc=0; else rc=$?; fi
  echo "@@fleet batch"; printf '%s\n\036 %s\n' "$out" "$rc"
  [ "$rc" = 0 ] || result=refused
  while IFS= read -r l; do
    case $l in ">"*) l=${l#>}; l=${l#"${l%%[! ]*}"} ;; esac
    case $l in ''|'New server registered.'|'Server deleted.') ;; *) result=refused ;; esac
  done <<FLEET_OUT
$out
FLEET_OUT
fi
echo "@@fleet replies"
while [ "$result" = updated ] && IFS= read -r cmd; do
  [ -n "$cmd" ] || continue
  n=0
  while :; do
    if out=$(admin "$cmd"); then rc=0; else rc=$?; fi
    # A server just put in maint may hold idle connections for a moment (each thread closes its own): `del
    # server` refuses until they are gone, so it is asked again for up to 2 s.
    case "$out" in *connection*) ;; *) break ;; esac
    n=$((n + 1)); [ "$n" -ge 20 ] && break; sleep 0.1
  done
  printf '%s\n\036 %s\n' "$out" "$rc"
  case "$rc:$out" in "0:Server deleted.") ;; *) result=refused ;; esac
done <<FLEET_DELS
$DELS
FLEET_DELS
if [ "$result" = updated ]; then mv -f "$new" "$CFG"; fleet_staged=; fleet_sname=; else fleet_unstage; fi
echo "@@fleet result $result"
"""

# Every command in one session of the admin socket (`prompt` mode, as SERVERS' batch: parse_batch tells the replies
# apart), one socat for all of them: a drain batch, its `show stat` too. Read with `read`, no process for it.
RUNTIME = _ADMIN_FN + r"""
set -u
cmds=prompt
while IFS= read -r cmd; do cmds="$cmds
$cmd"; done
if out=$(admin "$cmds"); then rc=0; else rc=$?; fi
printf '%s\n\036 %s\n' "$out" "$rc"
"""

STATUS = _COMMON + r"""
pid=$(master_pid) || pid=
if [ -z "$pid" ]; then echo "@@fleet result stopped"; exit 0; fi
echo "@@fleet pid $pid"
echo "@@fleet proc"; show_proc "$(msock "$pid")"
echo "@@fleet result running"
"""

STOP = _COMMON + r"""
pid=$(master_pid) || pid=
if [ -z "$pid" ]; then
  rm -f "$PIDF" "$MASTER" "$ADMIN" "$STATE" "$OLD_MASTER" "$OLD_ADMIN"; echo "@@fleet result not-running"; exit 0
fi
procs=$(ask "$(msock "$pid")" "show proc" | awk '$1 ~ /^[0-9]+$/ && $2 != "master" { print $1 }')
kill -TERM "$pid"
wait_gone() {
  i=0
  while [ "$i" -lt "$1" ]; do
    left=
    for p in $pid $procs; do if alive "$p"; then left="$left $p"; fi; done
    [ -z "$left" ] && return 0
    sleep 0.05; i=$((i + 1))
  done
  return 1
}
result=stopped
if ! wait_gone 200; then
  kill -KILL $left 2>/dev/null; result=killed
  wait_gone 100 || result=stuck
fi
rm -f "$PIDF" "$MASTER" "$ADMIN" "$STATE" "$OLD_MASTER" "$OLD_ADMIN"
echo "@@fleet pids"; for p in $pid $procs; do echo "$p"; done
echo "@@fleet result $result"
"""


@dataclass(frozen=True)
class LbPaths:
    """Where HAProxy's files live on an lb node: everything under one private directory (file names from
    `fleet.node.paths.HaproxyFiles`)."""

    base: str = DEFAULT.haproxy_dir
    haproxy: str = "haproxy"
    # Who HAProxy runs as, in its jail (the Debian package's user).
    user: str = "haproxy"

    def __post_init__(self) -> None:
        check_file(self.base.rstrip("/") or "/", "base_dir")
        if not re.match(r"^[A-Za-z0-9_./-]{1,256}$", self.haproxy):
            raise ValueError(f"haproxy: expected a command name or path, got {self.haproxy!r}")
        check_name(self.user, "user")

    @property
    def files(self) -> HaproxyFiles:
        return HaproxyFiles(self.base.rstrip("/"))

    @property
    def config(self) -> str:
        return self.files.config

    @property
    def master_socket(self) -> str:
        return self.files.master_socket

    @property
    def admin_socket(self) -> str:
        return self.files.admin_socket

    @property
    def state_file(self) -> str:
        return self.files.state_file

    @property
    def pid_file(self) -> str:
        return self.files.pid_file

    @property
    def log_file(self) -> str:
        return self.files.log_file

    @property
    def chroot(self) -> str:
        return self.files.chroot

    @property
    def cert_dir(self) -> str:
        """Where the certificate bundles are (fleet.node.haproxy.certs.CERT_DIR under the default base)."""
        return f"{self.files.dir}/certs"

    @property
    def acme_map(self) -> str:
        return f"{self.files.dir}/acme.map"

    def env(self) -> dict[str, str]:
        d = self.files.dir
        # OLD_*: where an older fleet, whose master ran as root, had its sockets (found, and replaced, once).
        return {"D": d, "CFG": self.config, "MASTER": self.master_socket, "ADMIN": self.admin_socket,
                "STATE": self.state_file, "PIDF": self.pid_file, "LOG": self.log_file, "HAPROXY": self.haproxy,
                "CHROOT": self.chroot, "JAIL": self.files.jail, "RUN": self.files.run_dir, "HUSER": self.user,
                "CERTS": self.cert_dir, "MAP": self.acme_map, "OLD_MASTER": f"{d}/master.sock",
                "OLD_ADMIN": f"{d}/admin.sock"}


def apply_script(paths: LbPaths, size: int | None = None) -> Script:
    """Reads the config on stdin (`size` bytes: a send cut short is refused); writes, validates, starts or
    reloads (see APPLY_RESULTS for the outcomes)."""
    env = paths.env()
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size: expected a byte count >= 0, got {size!r}")
        env["SIZE"] = str(size)
    return Script(APPLY, env, name="fleet-haproxy-apply")


def servers_script(paths: LbPaths, old_sha256: str, commands: list[str], size: int) -> Script:
    """Reads the new config on stdin (`size` bytes); runs `commands` on the admin socket and puts the config in
    place with no reload, if the config on the node is still the one whose sha256 is `old_sha256` (see SERVERS
    for the outcomes: updated, unchanged, stale, refused, not-running, locked)."""
    if not re.fullmatch(r"[0-9a-f]{64}|", old_sha256):
        raise ValueError(f"old_sha256: expected 64 hex digits or nothing, got {old_sha256!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size: expected a byte count >= 0, got {size!r}")
    runtime_input(commands)
    batch, dels = batch_commands(commands)
    env = {**paths.env(), "OLD": old_sha256, "CMDS": "\n".join(batch), "DELS": "\n".join(dels), "SIZE": str(size)}
    return Script(SERVERS, env, name="fleet-haproxy-servers")


def batch_commands(commands: list[str]) -> tuple[list[str], list[str]]:
    """The servers script's two lists: the commands sent in one session, then the `del server` ones, each on
    its own (asked again while the server still has connections)."""
    dels = [c for c in commands if c.startswith("del server ")]
    return [c for c in commands if c not in dels], dels


def parse_session(commands: list[str], text: str) -> list[Reply]:
    """The runtime script's output: one reply per command (see parse_batch); when socat failed (the socket not
    there, or refusing), every command gets what it printed and its status."""
    m = re.search(r"\n\x1e (\d+)\n?$", text)
    if m is not None and int(m[1]) != 0:
        return [Reply(cmd, text[:m.start()].strip(), int(m[1])) for cmd in commands]
    return parse_batch(commands, text)


def parse_batch(commands: list[str], text: str) -> list[Reply]:
    """One reply per command from a `prompt`-mode session that sent `prompt` then `commands` (the output ends
    with `\\x1e RC` as the runtime script's)."""
    m = re.search(r"\n\x1e (\d+)\n?$", text)
    if m is None:
        raise ScriptOutputError(f"no end mark in batch output: {text[-80:]!r}")
    # The reply to `prompt` itself (an empty line), then one reply per command, each followed by a prompt.
    parts = text[:m.start()].split("\n> ")
    if len(parts) != len(commands) + 2 or parts[-1].strip():
        raise ScriptOutputError(f"{len(parts) - 2} replies for {len(commands)} commands in batch output")
    return [Reply(cmd, text.strip(), int(m[1])) for cmd, text in zip(commands, parts[1:], strict=False)]


def runtime_script(paths: LbPaths) -> Script:
    """Reads admin-socket commands on stdin, one a line; sends them in one `prompt`-mode session and prints what
    it answered followed by `\\x1e RC` (see parse_batch)."""
    return Script(RUNTIME, {"ADMIN": paths.admin_socket}, name="fleet-haproxy-runtime")


def status_script(paths: LbPaths) -> Script:
    return Script(STATUS, paths.env(), name="fleet-haproxy-status")


def stop_script(paths: LbPaths) -> Script:
    """SIGTERM to the master (workers hard-stop with it), SIGKILL whatever is left after 10 s."""
    return Script(STOP, paths.env(), name="fleet-haproxy-stop")


def runtime_input(commands: list[str]) -> str:
    """The runtime script's stdin; a command may not hold a newline or `;` (HAProxy's command separator)."""
    for cmd in commands:
        if not isinstance(cmd, str) or not cmd.strip() or any(c in cmd for c in "\n\r;" + REPLY_END):
            raise ValueError(f"runtime command: expected one non-empty line without ';', got {cmd!r}")
    return "".join(f"{cmd}\n" for cmd in commands)


@dataclass(frozen=True)
class Reply:
    """One admin-socket command's reply; `rc` is socat's exit status (non-zero: the socket was unreachable)."""

    command: str
    text: str
    rc: int


def parse_replies(commands: list[str], text: str) -> list[Reply]:
    """The servers script's `replies` section (each `del server` sent on its own, each reply followed by
    `\\x1e RC`) split into one reply per command, in order. The runtime script sends one session: parse_session."""
    replies = []
    rest = text
    for cmd in commands:
        m = re.search(r"\n\x1e (\d+)\n", rest)
        if m is None:
            raise ScriptOutputError(f"no reply for {cmd!r} in runtime output: {rest[:80]!r}")
        replies.append(Reply(cmd, rest[:m.start()], int(m[1])))
        rest = rest[m.end():]
    return replies


@dataclass(frozen=True)
class ScriptOutput:
    """A script's report: its result word, plus the text of each named section."""

    result: str
    sections: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def section(self, name: str) -> str:
        return self.sections.get(name, "")


def parse_script_output(text: str) -> ScriptOutput:
    """Sections start at `@@fleet NAME [VALUE]`; the last `@@fleet result WORD` is the outcome."""
    sections: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    current: list[str] | None = None
    result = None
    # Split at newlines only: str.splitlines would also split at the \x1e that ends each runtime reply.
    for line in text.removesuffix("\n").split("\n"):
        if line.startswith(MARK + " "):
            name, _, value = line[len(MARK) + 1:].strip().partition(" ")
            if name == "result":
                result = value.strip()
                current = None
                continue
            values[name] = value.strip()
            current = sections.setdefault(name, [])
        elif current is not None:
            current.append(line)
    if not result:
        raise ScriptOutputError(f"no `{MARK} result` line in script output: {text[-200:]!r}")
    return ScriptOutput(result, {k: "\n".join(v) for k, v in sections.items()}, values)


def alert_lines(text: str) -> list[str]:
    """HAProxy's `[ALERT]` lines (the reasons a config was refused or a load failed), prefix trimmed."""
    out = []
    for line in text.splitlines():
        if "[ALERT]" in line:
            out.append(re.sub(r"^\[ALERT\]\s+(\(\d+\)\s+)?:\s*(config\s+:\s*)?", "", line.strip()))
    return out
