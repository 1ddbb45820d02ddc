"""The nerdctl driver: exact commands and parsers.

NOT run against a real nerdctl: it is not packaged in Debian 12 and could not be installed here. The outputs in
tests/data/nerdctl/ were written by hand from nerdctl's source and documented formats (each file says which),
so these tests check the parsers against those formats, not against observed behaviour.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from fleet.core import labels as L
from fleet.core.model import CommandResult
from fleet.node.runtime import nerdctl
from fleet.node.runtime.base import ContainerExists, Mount, RunSpec, RuntimeCommandError, Script
from fleet.node.runtime.nerdctl import NerdctlDriver

DATA = Path(__file__).parent / "data" / "nerdctl"


def written(name: str) -> tuple[CommandResult, Any]:
    rec = json.loads((DATA / f"{name}.json").read_text())
    assert "NOT recorded" in rec["source"]
    return CommandResult("n1", rec["exit_status"], rec["stdout"], rec["stderr"], 0.0), rec["expect"]


def test_run_argv_exact():
    d = NerdctlDriver(namespace="fleet")
    spec = RunSpec(
        id="web-1-abc123", image="fleet.local/demo:v2", command=("httpd", "-f", "-p", "8080"),
        env={"PORT": "8080"}, env_file="/run/fleet/web.env",
        mounts=(Mount("bind", "/data", "/srv/data", readonly=True), Mount("tmpfs", "/scratch", options=("size=8m",))),
        cpu=0.5, memory=64 * 1024 * 1024, labels={"fleet.service": "web"}, restart="always",
    )
    assert d.run_argv(spec) == [
        "nerdctl", "-n", "fleet", "run", "-d", "--name", "web-1-abc123", "--restart", "always",
        "--network", "host", "-e", "PORT=8080", "--env-file", "/run/fleet/web.env",
        "--mount", "type=bind,source=/srv/data,target=/data,readonly", "--tmpfs", "/scratch:size=8m",
        "--security-opt", "no-new-privileges", "--log-opt", "max-size=10485760", "--log-opt", "max-file=3",
        "--cpus", "0.5", "--memory", "67108864", "-l", "fleet.service=web",
        "fleet.local/demo:v2", "httpd", "-f", "-p", "8080",
    ]


def test_run_script_refuses_an_existing_name_before_running():
    call = NerdctlDriver().run(RunSpec(id="web-1-abc123", image="img"))
    assert isinstance(call.command, Script)
    text = call.command.text
    assert text.index('n container inspect "$ID"') < text.index("nerdctl -n fleet run -d")
    with pytest.raises(ContainerExists):
        call.parse(CommandResult("n1", 17, "", 'nerdctl: container "web-1-abc123": already exists\n', 0.0))


def test_stop_rounds_grace_up_to_whole_seconds():
    call = NerdctlDriver().stop("w", 2.1)
    assert isinstance(call.command, Script) and call.command.env["GRACE"] == "3"


def test_other_argvs_exact():
    d = NerdctlDriver(namespace="fleet", address="/run/c.sock")
    pre = ["nerdctl", "-a", "/run/c.sock", "-n", "fleet"]
    assert d.metrics_argv("w") == [*pre, "stats", "--no-stream", "--format", "{{json .}}", "w"]
    assert d.logs_argv("w", 20, follow=True) == [*pre, "logs", "--tail", "20", "-f", "w"]
    assert d.exec_argv("w", ["sh", "-c", "id"]) == [*pre, "exec", "w", "sh", "-c", "id"]
    assert d.image_import("/tmp/x.tar").stdin_path == "/tmp/x.tar"
    assert d.image_import_argv() == [*pre, "load"]
    assert shlex.join(d.image_pull_argv("127.0.0.1:5000/d:v1", plain_http=True)).endswith(
        "pull --insecure-registry 127.0.0.1:5000/d:v1")


def test_parse_inspect_list_from_documented_format():
    result, expect = written("inspect_list")
    got = nerdctl.parse_list(result)
    assert [
        {"id": i.id, "status": i.status.value, "pid": i.pid, "exit_code": i.exit_code, "started_at": i.started_at,
         "service": (L.parse_labels(i.labels) or L.ContainerLabels("")).service or None}
        for i in got
    ] == expect
    assert got[0].labels["note"] == "a,b=c d"
    assert nerdctl.parse_list(written("inspect_empty")[0]) == []


@pytest.mark.parametrize("name", ["stop_killed", "stop_clean", "stop_missing"])
def test_parse_stop(name: str):
    result, expect = written(name)
    got = nerdctl.parse_stop(result, "w")
    assert (got.found, got.exit_code, got.killed) == (expect["found"], expect["exit_code"], expect["killed"])


def test_parse_stop_without_completion_marker_is_an_error():
    with pytest.raises(RuntimeCommandError):
        nerdctl.parse_stop(CommandResult("n1", 0, "@@found true\n", "", 0.0))


def test_parse_stats_from_documented_format():
    result, expect = written("stats")
    usage = nerdctl.parse_stats(result)
    assert (usage.memory_bytes, usage.memory_limit, usage.pids, usage.cpu_ns) == (
        expect["memory_bytes"], expect["memory_limit"], expect["pids"], 0)


@pytest.mark.parametrize(("text", "size"), [("0B", 0), ("1.5MiB", 1572864), ("1.2kB", 1200), ("16EiB", 16 << 60)])
def test_parse_size(text: str, size: int):
    assert nerdctl.parse_size(text) == size


def test_parse_load_and_images_from_documented_format():
    result, expect = written("load")
    assert [{"name": i.name, "digest": i.digest} for i in nerdctl.parse_load(result)] == expect
    result, expect = written("images")
    assert nerdctl.parse_images(result) == expect
