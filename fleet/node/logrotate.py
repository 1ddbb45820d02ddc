"""Container log files rotated by size on the node, as a POSIX sh step that every run's node preparation carries
(fleet.engine.runspec.PREPARE_NODE), so `fleet watch` rotates every round and any `apply` or `reconcile` too.

A container on ctr has its stdout and stderr appended to one file (fleet's logger, fleet.node.runtime.ctr) that
nothing rotates. A log past its size is copied to `.1` (older copies shifted up, the oldest dropped) and truncated
in place: the logger keeps its file open and writes at the end (O_APPEND: checked by tests/test_runtime_logs.py),
so the next line lands at the start of the emptied file and `tail -F` (what `fleet logs -f` runs) goes on reading
it. Lines written between the copy and the truncation are lost (copy-truncate's known gap). Each container's
settings are a `.rotate` file beside its log (`SIZE FILES`), written where it starts; a log without one keeps the
defaults.
"""

from __future__ import annotations

from fleet.config.spec.imaging import LogsSpec

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
