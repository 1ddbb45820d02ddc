"""`fleet logs --since/--timestamps` on log files that keep no times: the node-side script run by this machine's
/bin/sh on real files (stat, head, tail -F as on a node), its output dated by the pure Dater, and the CLI's rules."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import wait_until

from fleet.cli.logs import SinceFilter, stamp
from fleet.node.logdates import DatedLine, Dater, LogFile, backlog_since, dated_script, parse_head
from fleet.node.runtime.ctr import CtrDriver
from fleet.node.runtime.nerdctl import NerdctlDriver

TOKEN = "t0k3n"


def run(path: Path, tail: int | None) -> list[str]:
    script = dated_script(str(path), tail, False, TOKEN)
    out = subprocess.run(script.render(), shell=True, capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.splitlines()


def dated(lines: list[str], now: float = 0.0) -> list[DatedLine]:
    dater = Dater(TOKEN)
    return [d for d in (dater.feed(line, now) for line in lines) if d is not None]


def test_backlog_lines_are_dated_by_the_file_s_last_write(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("one\ntwo\nthree without newline")
    os.utime(log, (1_700_000_000, 1_700_000_000))
    got = dated(run(log, 2))
    assert [d.text for d in got] == ["two", "three without newline"]
    assert {(d.at, d.live) for d in got} == {(1_700_000_000.0, False)}
    assert got[0].file.size == len("one\ntwo\nthree without newline")
    assert [d.text for d in dated(run(log, None))] == ["one", "two", "three without newline"]


def test_an_empty_or_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "empty.log"
    log.write_text("")
    assert dated(run(log, 100)) == []
    script = dated_script(str(tmp_path / "gone.log"), 100, False, TOKEN)
    out = subprocess.run(script.render(), shell=True, capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "gone.log" in out.stderr


def test_following_dates_new_lines_when_read_and_never_repeats_the_backlog(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("old 1\nold 2\n")
    script = dated_script(str(log), 10, True, TOKEN)
    proc = subprocess.Popen(script.render(), shell=True, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        dater = Dater(TOKEN)
        seen: list[DatedLine] = []

        def read_until(text: str) -> bool:
            assert proc.stdout is not None
            line = proc.stdout.readline().rstrip("\n")
            got = dater.feed(line, time.time())
            if got is not None:
                seen.append(got)
            return line == text

        wait_until(lambda: read_until(f"@fleet-log{TOKEN} live"), timeout=10, message="the separator")
        with log.open("a") as f:
            f.write("new 1\n")
        written = time.time()
        wait_until(lambda: read_until("new 1"), timeout=10, message="the new line")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert [(d.text, d.live) for d in seen] == [("old 1", False), ("old 2", False), ("new 1", True)]
    assert abs(seen[-1].at - written) < 2.0


def test_head_line_is_checked() -> None:
    assert parse_head("@fleet-logX 12 1700000000 0", "@fleet-logX") == LogFile(12, 1_700_000_000.0, None)
    assert parse_head("@fleet-logX 12 1700000000 1690000000", "@fleet-logX").born == 1_690_000_000.0
    with pytest.raises(ValueError, match="expected the log file's size and times"):
        parse_head("hello", "@fleet-logX")
    with pytest.raises(ValueError):
        Dater("X").feed("a log line where the head should be", 0.0)


def test_what_since_can_tell_about_the_backlog() -> None:
    file = LogFile(100, modified=1000.0, born=500.0)
    assert backlog_since(file, 1001.0) == "none"  # nothing written since the cutoff
    assert backlog_since(file, 400.0) == "all"  # the file is younger than the cutoff
    assert backlog_since(file, 700.0) == "unknown"
    assert backlog_since(LogFile(100, 1000.0, None), 400.0) == "unknown"  # no birth time kept
    assert backlog_since(LogFile(0, 1000.0, 500.0), 400.0) == "none"


def test_since_filter_keeps_live_lines_and_counts_the_undatable() -> None:
    file = LogFile(100, modified=1000.0, born=None)
    keep = SinceFilter(700.0)
    assert keep.keep("n1/a", DatedLine("old", 1000.0, False, file))
    assert keep.keep("n1/a", DatedLine("new", 1200.0, True, file))
    assert not SinceFilter(1100.0).keep("n1/a", DatedLine("old", 1000.0, False, file))
    assert keep.undated == {"n1/a": 1}


def test_stamps_say_which_time_is_known() -> None:
    file = LogFile(1, 1_700_000_000.0, None)
    assert stamp(DatedLine("x", 1_700_000_000.25, True, file)) == "2023-11-14T22:13:20.250Z"
    assert stamp(DatedLine("x", 1_700_000_000.0, False, file)) == "<=2023-11-14T22:13:20Z"


def test_the_ctr_driver_reads_its_own_log_file_and_nerdctl_refuses() -> None:
    call = CtrDriver().logs_dated("web-1-abc", 5, True, TOKEN)
    assert call.command.env["F"] == CtrDriver().log_path("web-1-abc")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="this node runs nerdctl"):
        NerdctlDriver().logs_dated("web-1-abc", 5, True, TOKEN)
