"""Dates for the lines of a log file that has none: on ctr, fleet's logger (fleet.node.runtime.ctr) writes stdout
and stderr with no timestamps, appending across restarts (FACTS §2.3), so `fleet logs --since/--timestamps` dates
what it reads.

The node reports the file's size, birth and last-write times (one `stat`) before reading it, then prints the
lines up to that size (the backlog), a separator, and when following the bytes written after that size (live
lines). So a backlog line is known only to be written at or before the file's last write (and at or after its
birth, where the filesystem keeps one); a live line is dated by the moment fleet reads it, which trails the write
by tail -F's latency (inotify: at once; polling: up to 1 s) and the network's.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from fleet.core.shell import Script

MARK = "@fleet-log"


@dataclass(frozen=True)
class LogFile:
    """The log file as it was when reading began: `size` bytes, last written at `modified`, created at `born`
    (None where the filesystem does not say); Unix seconds."""

    size: int
    modified: float
    born: float | None


@dataclass(frozen=True)
class DatedLine:
    """One log line and what is known of when it was written: `live` lines at `at` (when read); backlog lines at
    or before `at` (the file's last write)."""

    text: str
    at: float
    live: bool
    file: LogFile


def dated_script(path: str, tail: int | None, follow: bool, token: str) -> Script:
    """`stat`, then the backlog (its last `tail` lines; all when None), the separator, and when `follow` every
    byte written after the backlog. `token` makes the marker lines unlike any line a container writes.

    The file is opened once (fd 3): its size, dates and backlog are that open file's even when a rotation renames
    it meanwhile (fleet.node.logrotate). Following goes on from the backlog's end by name when the name is still
    that file, else reads the rest of it and follows the name from the new file's start."""
    backlog = 'head -c "$1" /dev/fd/3' + (f" | tail -n {int(tail)}" if tail is not None else "")
    text = (
        '[ -r "$F" ] || { echo "cannot read $F" >&2; exit 1; }\n'
        'exec 3<"$F"\n'
        'set -- $(stat -L -c "%s %Y %W %i" /dev/fd/3)\n'
        '[ "$#" -eq 4 ] || { echo "cannot stat $F" >&2; exit 1; }\n'
        f'printf "%s %s %s %s\\n" {shlex.quote(MARK + token)} "$1" "$2" "$3"\n'
        # awk ends a last line that has no newline yet, so it never runs into the separator.
        f"{backlog} | awk 1\n"
        f'printf "%s live\\n" {shlex.quote(MARK + token)}\n'
    )
    if follow:
        # Without tail -F's notices of a rotation, which would land inside a line split between two files.
        text += (
            'if [ "$(stat -c %i "$F" 2>/dev/null)" = "$4" ]; then\n'
            '  exec 3<&- tail -c "+$(($1 + 1))" -F "$F" 2>/dev/null\n'
            'fi\n'
            'tail -c "+$(($1 + 1))" /dev/fd/3\n'
            'exec 3<&- tail -n +1 -F "$F" 2>/dev/null\n'
        )
    return Script(text, {"F": path})


class Dater:
    """Reads one container's dated-script output line by line: `feed` returns the log line with its date, or None
    for the script's own lines. Pure: the caller passes the time each line was read."""

    def __init__(self, token: str) -> None:
        self.mark = MARK + token
        self.file: LogFile | None = None
        self.live = False

    def feed(self, line: str, now: float) -> DatedLine | None:
        if self.file is None:
            self.file = parse_head(line, self.mark)
            return None
        if not self.live and line == f"{self.mark} live":
            self.live = True
            return None
        return DatedLine(line, now if self.live else self.file.modified, self.live, self.file)


def parse_head(line: str, mark: str) -> LogFile:
    """`MARK size modified born` → LogFile; ValueError for anything else (the script did not start as written)."""
    words = line.split()
    if len(words) != 4 or words[0] != mark:
        raise ValueError(f"expected the log file's size and times, got {line[:80]!r}")
    size, modified, born = (int(w) for w in words[1:])
    return LogFile(size, float(modified), float(born) if born > 0 else None)


Window = Literal["none", "all", "unknown"]


def backlog_since(file: LogFile, cutoff: float) -> Window:
    """Which backlog lines were written at or after `cutoff`: none (the file was last written before it), all
    (the file was created after it), or unknown (the file has no dates between)."""
    if file.size == 0 or file.modified < cutoff:
        return "none"
    if file.born is not None and file.born >= cutoff:
        return "all"
    return "unknown"
