"""The POSIX sh the ctr driver (fleet.node.runtime.ctr) runs on a node, as values; the driver fills in their
variables and parses what they print."""

# A task's init PID from its bundle in containerd's state directory (the v2 runtime writes it there), when that
# process runs in the container's cgroup: no ctr (a Go client and a containerd call). Fails otherwise (another state
# directory, no task, its process gone): `tasks ls` decides then.
TASK_PID_FN = r"""
fleet_in_cgroup() { # PID: whether it runs in the container's cgroup (read: no process started)
  while IFS= read -r l; do
    case $l in */"$ID") return 0 ;; esac
  done 2>/dev/null <"/proc/$1/cgroup"
  return 1
}
fleet_task_pid() {
  p=
  read -r p 2>/dev/null <"$STATE/io.containerd.runtime.v2.task/$NS/$ID/init.pid" || [ -n "$p" ] || return 1
  case $p in ''|*[!0-9]*) return 1 ;; esac
  fleet_in_cgroup "$p" && printf '%s' "$p"
}
"""

# After `out=$(ctr run …)`: ctr refuses an ID in use itself (`snapshot "ID": already exists`: the snapshot is made
# before the container), so no `containers info` precedes every start. Such a refusal, when the container exists,
# is a container that is not this start's, left as it is (exit EXISTS_RC); any other failure is cleaned up.
RUN_FAILED = r"""rc=$?
[ -z "$out" ] || printf '%s\n' "$out" >&2
if [ "$rc" -ne 0 ]; then
  case $out in *"already exists"*)
    if c containers info "$ID" >/dev/null 2>&1; then
      echo "ctr: container \"$ID\": already exists" >&2; exit EXISTS_RC
    fi ;;
  esac
  c containers rm "$ID" >/dev/null 2>&1; exit "$rc"
fi
"""

# Clearing the restart label comes first (or the restart monitor would revive the task), and says whether the
# container exists (`label` fails on one that does not); it prints every label, the image's stop signal with them
# (`io.containerd.image.config.stop-signal`, what `ctr tasks kill` would send; SIGTERM without it). The task's PID
# comes from its bundle (`fleet_task_pid`), else from `ctr tasks ls`. A process known to be the container's (in its
# cgroup, by its start time) gets that signal by `kill` when it is a common one, with no ctr (and no runc) run for
# it; else through `ctr tasks kill`. The task's process is then watched through its /proc entry (its start time, so
# a reused PID does not count), one `sleep` a tick instead of a `ctr tasks ls` (a Go client and a containerd call:
# three to eight of those a stop cost more node CPU than the rest of the script); where that entry cannot be read or
# is not in the container's cgroup (containerd in another PID namespace) `tasks ls` is polled as before. TICKS is
# the grace period in ticks. containerd records the exit a moment after the process is gone: `tasks rm` is asked
# again while it says the task runs.
STOP_SCRIPT = r"""
if ! labels=$(c containers label "$ID" containerd.io/restart.status= 2>/dev/null); then
  echo '@@found false'; exit 0
fi
echo '@@found true'
case $labels in
  *io.containerd.image.config.stop-signal=*) sig=${labels#*io.containerd.image.config.stop-signal=}; sig=${sig%%,*} ;;
  *) sig=SIGTERM ;;
esac
case ${sig#SIG} in TERM|QUIT|INT|HUP|USR1|USR2|WINCH|KILL) sig=${sig#SIG} ;; *) sig= ;; esac
task() { c tasks ls 2>/dev/null | awk -v id="$ID" '$1==id {print $2, $3}'; }
started() { s=; read -r s 2>/dev/null <"/proc/$1/stat" || return 1; set -- ${s##*) }; shift 19; printf '%s' "$1"; }
alive() {
  if [ -n "$t0" ]; then [ "$(started "$pid")" = "$t0" ]; return; fi
  st=$(task); st=${st#* }; [ "$st" = RUNNING ] || [ "$st" = PAUSED ]
}
wait_exit() { i=0; while [ "$i" -lt "$1" ] && alive; do sleep 0.1; i=$((i + 1)); done; }
if pid=$(fleet_task_pid); then
  st=RUNNING t0=$(started "$pid")
else
  t=$(task); pid=${t%% *}; st=${t#* }
  t0=
  case $pid in ''|0|*[!0-9]*) ;; *) fleet_in_cgroup "$pid" && t0=$(started "$pid") || t0= ;; esac
fi
if [ "$st" = RUNNING ] || [ "$st" = PAUSED ] || [ "$st" = CREATED ]; then
  if [ -n "$t0" ] && [ -n "$sig" ]; then kill -s "$sig" "$pid" 2>/dev/null; else c tasks kill "$ID" >/dev/null 2>&1; fi
  wait_exit "$TICKS"
  if alive; then
    echo '@@killed true'
    c tasks kill -a -s SIGKILL "$ID" >/dev/null 2>&1
    wait_exit 100
  fi
fi
# REMOVE=0: the process is gone, its container (and its task) stay for DELETE_SCRIPT.
if [ "$REMOVE" = 0 ]; then echo '@@rc 0'; exit 0; fi
if [ -n "$st" ]; then
  echo '@@task true'
  if [ "$EXIT" = 1 ]; then
    echo '@@taskrm'
    i=0
    while out=$(c tasks rm "$ID" 2>&1 >/dev/null); [ "$i" -lt 40 ]; do
      case $out in *"must be stopped"*) sleep 0.05; i=$((i + 1)) ;; *) break ;; esac
    done
    printf '%s\n' "$out"
  fi
fi
echo '@@containerrm'
fleet_rm
[ -z "$out" ] || printf '%s\n' "$out"
echo "@@rc $rc"
"""

# Without `tasks rm` (EXIT=0), `containers rm` deletes the stopped task itself, once containerd has its exit: asked
# again while it says the task runs, for up to 2 s. A task still running after 1 s was started again, and is killed:
# containerd 1.6's restart monitor reads a container's labels and its task's status apart, so a pass that read the
# restart label before the stop cleared it starts the task again once the stop is done (what the 12-service bench
# once met, in about 400 service rollouts: a removal 1-3 s after its stop found the task running); the label is
# gone, so nothing starts it after that. Sets `out` and `rc`.
RM_FN = r"""
fleet_rm() {
  i=0
  while out=$(c containers rm "$ID" 2>&1); rc=$?; [ "$rc" -ne 0 ] && [ "$i" -lt 40 ]; do
    case $out in *"non stopped"*) ;; *) break ;; esac
    [ "$i" = 20 ] && c tasks kill -a -s SIGKILL "$ID" >/dev/null 2>&1
    sleep 0.05; i=$((i + 1))
  done
}
"""

# What a stop with REMOVE=0 left: the container and its stopped task (its log stays); gone already is fine (a task
# started again meanwhile: see RM_FN).
DELETE_SCRIPT = r"""
fleet_rm
case $rc:$out in 0:*|*"not found"*) exit 0 ;; esac
printf '%s\n' "$out" >&2
exit "$rc"
"""

# An exec without a terminal. `ctr tasks exec` (containerd 1.6) may lose what the process printed: it deletes the
# process, closing its FIFOs, once the exit status is in, without waiting for its copy of the output (fixed in
# containerd's ctr in 2026, PR 13931). On a busy node an `echo` printed nothing in 3 of 200 and 6 of 300 runs here.
# Where runc runs the container (its state under the shim's runc root), `runc exec` runs the command from the same
# process spec (the container's config.json: user, env, cwd, capabilities, no-new-privileges; the runas wrapper
# wrote the user there at create) with this command's stdin, stdout and stderr as its own: nothing copied, nothing
# lost. Otherwise (another runtime, runc not on PATH) ctr as before. Arguments: the runc root of the namespace, the
# container, the number of words of the ctr command, that command, then the command to run.
EXEC_SH = r"""r=$1 id=$2 n=$3
shift 3
if [ -f "$r/$id/state.json" ] && command -v runc >/dev/null 2>&1; then
  shift "$n"
  exec runc --root "$r" exec "$id" "$@"
fi
exec "$@"
"""

LOGIN_PULL_SCRIPT = r"""
if ! command -v script >/dev/null 2>&1; then
  echo "ctr: script(1) (util-linux) is not installed: ctr reads a registry password from a terminal it gives" >&2
  exit 127
fi
{ script -q -e -E never -c "$PULL" /dev/null; echo "@@rc $?"; } | tail -n 20
"""

# A container's log and its rotated files, oldest first: all of them (`N` empty), or their last N lines. From the
# live file back, an older file is read only while the newer ones hold N lines or fewer (tail seeks from a file's
# end: reading a few lines never reads whole files); the oldest one read gives its last N lines and the newer
# ones all of theirs, so a line a rotation split between two files is joined whole.
READ_LOGS = r"""
[ -r "$F" ] || exec cat "$F"
set -- "$F"
i=1
if [ -z "$N" ]; then
  while [ -f "$F.$i" ]; do set -- "$F.$i" "$@"; i=$((i + 1)); done
  exec cat "$@"
fi
while [ -f "$F.$i" ] && [ "$(tail -n "$((N + 1))" "$1" | wc -l)" -le "$N" ]; do set -- "$F.$i" "$@"; i=$((i + 1)); done
oldest=$1
shift
{ tail -n "$N" "$oldest" && if [ "$#" -gt 0 ]; then cat "$@"; fi; } | tail -n "$N"
"""

REMOVE_SCRIPT = r"""
if c containers info "$ID" >/dev/null 2>&1; then
  c containers label "$ID" containerd.io/restart.status= >/dev/null 2>&1
  c tasks rm -f "$ID" >/dev/null 2>&1
  c containers rm "$ID" || exit 1
fi
rm -f "$LOG" "$LOG.rotate" "$LOG".[0-9] "$LOG".[0-9][0-9]
"""

# Lines starting with '@@' are section markers; `ctr containers info` pretty-prints JSON, whose lines start
# with a brace or a space, and JSON escapes newlines inside strings, so a hostile label cannot fake a marker.
# The info is cut where its last key, "Spec" (the OCI runtime spec: most of its bytes, none of them read), begins
# at the top level (4 spaces in); `parse_list` closes the object. Every listing sends a few KiB per container less.
# Read in this order: the containers, their tasks' states, then each one's OOM kills, so a kill that stops a task
# while the listing runs is always counted beside its STOPPED (read before the states, under load, a container
# STOPPED by its OOM kill was listed with no kill), and a container is never listed without a task it already had.
LIST_SCRIPT = r"""
ids=$(c containers ls -q)
for id in $ids; do
  printf '\n@@container %s\n' "$id"
  c containers info "$id" 2>/dev/null | sed -n '/^    "Spec": /q;p'
done
tasks=$(c tasks ls)
for id in $ids; do
  oom=
  if [ -r "/sys/fs/cgroup/memory/$NS/$id/memory.oom_control" ]; then
    oom=$(awk '$1 == "oom_kill" {print $2}' "/sys/fs/cgroup/memory/$NS/$id/memory.oom_control")
  elif [ -r "/sys/fs/cgroup/$NS/$id/memory.events" ]; then
    oom=$(awk '$1 == "oom_kill" {print $2}' "/sys/fs/cgroup/$NS/$id/memory.events")
  fi
  printf '\n@@oom %s %s\n' "$id" "$oom"
done
echo '@@tasks'
printf '%s\n' "$tasks"
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
printf '@@proc %s %s\n' "$(awk '$1 == "btime" {print $2}' /proc/stat)" "$hz"
printf '%s\n' "$tasks" | awk 'NR > 1 && $2 > 0 {print $2}' | while read -r pid; do
  s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
  printf '%s %s\n' "$pid" "$(printf '%s\n' "${s##*) }" | awk '{print $20}')"
done
"""
