"""Container log files rotated by size on the node, two ways with the same file names (`LOG.1` the newest rotated,
`max_files` files in all, the live one included):

- continuously, by the container's own logger on ctr (`LOGGER_SH`, which fleet.node.runtime.ctr installs and names
  in each container's log URI with its limits): the file is renamed once it holds `max_size` bytes and never
  grows past it, so an unattended container between fleet's runs stays bounded; `tail -F` (what `fleet logs -f`
  runs) follows the name to the new file after reading the old one to its end (a follower a whole file behind
  skips the files renamed meanwhile: it reopens the name);
- at every run (`ROTATE_SH`, in the node preparation fleet.engine.runspec.PREPARE_NODE, so `fleet watch` rotates
  every round and any `apply` or `reconcile` too) for the logs no logger rotates: containers started by an older
  fleet whose logger only appends. Only a file past its size is rotated, which a rotating logger's never is, so the
  two never rotate one file. A log past its size is copied to `.1` (older copies shifted up, the oldest dropped)
  and truncated in place: the old logger keeps its file open and writes at the end (O_APPEND: checked by
  tests/test_runtime_logs.py), so the next line lands at the start of the emptied file and `tail -F` goes on
  reading it. Lines written between the copy and the truncation are lost (copy-truncate's known gap). Each
  container's settings are a `.rotate` file beside its log (`SIZE FILES`), written where it starts; a log without
  one keeps the defaults.

nerdctl's json-file driver rotates its own logs (`--log-opt max-size/max-file`, fleet.node.runtime.nerdctl).
"""

from __future__ import annotations

from fleet.config.spec.imaging import LogsSpec

# containerd's binary logger protocol: the shim starts the logger with the container's stdout on fd 3, its stderr on fd
# 4, and waits for fd 5 to close (the logger closes it once its file is there, before it starts any process: the shim
# keeps its own read ends of the two pipes, so a container that writes before the logger reads is neither refused nor
# loses a byte, it waits on a full pipe at most); the URI's query comes as `key value` arguments, in no fixed order.
# Both streams, each read by its own `cat`, are merged into one pipe (a write of more than 4 KiB (PIPE_BUF) on one
# stream may be split by the other's) and appended to the log file, which the logger rotates itself: `head -c` copies
# exactly what is left below `size` (GNU head reads no further from a pipe; `stdbuf -o0` makes it write each read at
# once, where its stdio buffer would hold a line until 4 KiB came, so `fleet logs -f` sees a line as it comes), then
# FILE is renamed FILE.1 (older ones shifted up) and the next `head` starts a new FILE. A file ends at exactly `size`
# bytes, so a line may be split between two. A few processes per `size` bytes, none per line or per write
# (bench/logger.py). ctr's own `file://` loses the stderr of a container that exits at once (seen 9 times in 180 runs of
# `echo … >&2; exit 7` on containerd 1.6.20: an empty log, never written later; stdout 0 in 90; this logger 0 in 180),
# the output that matters most of a failed job or a crashing replica. On `tasks rm` the shim closes the pipes and sends
# TERM: ignored, so the logger ends (and the shim's delete returns) only once both copies have reached the end of their
# pipe and the log is complete. A redirection that fails on `:` (a special built-in) would end the shell: the loop uses
# `true`. Each subshell closes the fds it does not use with `exec` (dash keeps a saved copy of an fd redirected on a
# group or a function).
LOGGER_SH = """#!/bin/sh
# fleet's container logger (fleet.node.runtime.ctr): the container's stdout and stderr appended to `file`,
# renamed FILE.1 (older ones shifted up, `files` in all) when it reaches `size` bytes.
f= size= files=
while [ "$#" -ge 2 ]; do
  case $1 in file) f=$2 ;; size) size=$2 ;; files) files=$2 ;; esac
  shift 2
done
case $size$files in ''|*[!0-9]*) exit 2 ;; esac
[ -n "$f" ] && [ "$size" -gt 0 ] && [ "$files" -gt 0 ] || exit 2
trap '' TERM
: >>"$f" || exit 1
# The shim waits for fd 5 to close before it creates the task: closed once the file is there, before any process
# is started (what the container writes meanwhile waits in the pipes).
exec 5>&-
rotate() {
  i=$((files - 1))
  if [ "$i" -lt 1 ]; then true 2>/dev/null >"$f"; return; fi
  while [ "$i" -gt 1 ]; do
    j=$((i - 1))
    if [ -f "$f.$j" ]; then mv -f "$f.$j" "$f.$i"; fi
    i=$j
  done
  mv -f "$f" "$f.1"
}
copy() {
  cur=$(stat -c %s "$f" 2>/dev/null) || cur=0
  while :; do
    if [ "$cur" -ge "$size" ]; then rotate; cur=0; fi
    if ! stdbuf -o0 head -c "$((size - cur))" >>"$f"; then
      # A failed write (a full disk) drops that chunk; a second later the next is tried. A file that cannot be
      # opened any more (its directory gone) is given up: the rest is read and dropped (below), never blocking.
      sleep 1
      true 2>/dev/null >>"$f" || return 0
      continue
    fi
    # The file gone (removed by hand): the next head starts a new one.
    if ! now=$(stat -c %s "$f" 2>/dev/null); then cur=0; continue; fi
    # Nothing copied (head -c returns with nothing only at the end of its input): the end of both streams.
    [ "$now" -ne "$cur" ] || return 0
    cur=$now
  done
}
{
  exec 5>&-
  cat <&3 4<&- &
  cat <&4 3<&- &
  exec 3<&- 4<&-
  wait
} | {
  exec 3<&- 4<&- 5>&-
  copy
  # At the end this reads nothing; given up, or the end wrongly seen (the file changed by hand to the same size),
  # it reads the rest: the container is never blocked.
  cat >/dev/null
} &
exec 3<&- 4<&- 5>&-
wait
"""

ROTATE_SH = r"""
# Container logs past their size (fleet.node.logrotate).
for L in "$LOGS"/*/*.log; do
  [ -f "$L" ] || continue
  size=$LOG_SIZE; files=$LOG_FILES
  if [ -r "$L.rotate" ]; then read -r size files <"$L.rotate" || true; fi
  case "$size$files" in ''|*[!0-9]*) size=$LOG_SIZE; files=$LOG_FILES ;; esac
  cur=$(stat -c %s "$L" 2>/dev/null) || continue
  [ "$cur" -gt "$size" ] || continue
  i=$((files - 1))
  if [ "$i" -ge 1 ]; then
    rm -f "$L.$i"
    while [ "$i" -gt 1 ]; do
      j=$((i - 1))
      if [ -f "$L.$j" ]; then mv -f "$L.$j" "$L.$i"; fi
      i=$j
    done
    cp "$L" "$L.1"
  fi
  : >"$L"
done
"""


def rotate_env(logs_dir: str) -> dict[str, str]:
    """What ROTATE_SH reads: fleet's log directory and the default settings."""
    default = LogsSpec()
    return {"LOGS": logs_dir, "LOG_SIZE": str(default.max_size), "LOG_FILES": str(default.max_files)}
