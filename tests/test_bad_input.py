"""Bad input is refused before anything changes: every refusal names file and line (or node), never a traceback.

Loading is pure, so "nothing changed" means the loader raised before any engine call; through the CLI it means
exit 2 with the message, and no connection to any node (the inventory's node is a listening socket on loopback
that counts the connections it is offered).
"""

from __future__ import annotations

import ast
import asyncio
import errno
import json
import os
import socket
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
import yaml
from helpers import FLEET_CLI, INSTALLED_CLI, run_fleet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sshserver import SSHFarm

from fleet.api import Fleet
from fleet.config.inventory import load_inventory, parse
from fleet.config.spec import (
    MAX_COMMAND_LINE_BYTES,
    MAX_DURATION,
    MAX_ENV_VALUE_BYTES,
    NODE_DIRS,
    ConfigSpec,
    ServiceSpec,
    VolumeSpec,
    format_duration,
    from_playbook_dict,
    load_playbooks,
    parse_duration,
    parse_playbook,
    to_playbook_dict,
)
from fleet.config.yamlmarks import MAX_ALIASED, MAX_BYTES
from fleet.core.errors import ConfigError, InventoryError, SpecError
from fleet.core.labels import LbLabel
from fleet.core.model import Inventory, Node, Resources
from fleet.core.ports import STATS_PORT
from fleet.engine.lb import Balancers, Rotation
from fleet.engine.lb import config as lb_config
from fleet.engine.nodes import NodeReport
from fleet.engine.resolve import Resolved, resolve_nodes
from fleet.engine.runspec import run_spec
from fleet.node.runtime.ctr import CtrDriver
from fleet.plan.checks import lb_port_conflicts
from fleet.plan.reconcile import Replica
from fleet.plan.scheduler import Assignment
from fleet.transport import Pool

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def playbook_problems(tmp_path: Path, text: str, name: str = "p.yaml") -> tuple[str, list[str]]:
    path = write(tmp_path, name, text)
    with pytest.raises(SpecError) as info:
        load_playbooks([path])
    return path, [str(p) for p in info.value.problems]


def service_problems(tmp_path: Path, snippet: str) -> tuple[str, list[str]]:
    """Problems of a one-service playbook whose body ends with `snippet` (at line 4)."""
    return playbook_problems(tmp_path, f"services:\n  web:\n    image: busybox\n    {snippet}\n")


def laughs(levels: int, key: str = "l") -> str:
    lines = [f"{key}0: &{key}0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


class Listener:
    """A node that only counts: a listening socket on loopback; a connection offered to it stays in its backlog,
    so `offered()` sees it even though nothing accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def offered(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def node() -> Iterator[Listener]:
    listener = Listener()
    try:
        yield listener
    finally:
        listener.sock.close()


def inventory_for(tmp_path: Path, node: Listener) -> str:
    return write(tmp_path, "inventory.yaml", f"""
        nodes:
          n1: {{address: 127.0.0.1, port: {node.port}, roles: [worker, lb]}}
    """)


def cli(*args: str, cwd: Path | None = None,
        using: tuple[str, ...] = INSTALLED_CLI) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS` as a user starts it (`using` FLEET_CLI: the checkout's code, wherever the install points)."""
    env = {**os.environ, "COLUMNS": "400", "FLEET_LAB_ROOT": "/nonexistent"}
    env.pop("FLEET_INVENTORY", None)
    env.pop("FLEET_PLAYBOOKS", None)
    return run_fleet(*args, env=env, timeout=60, cwd=cwd, cli=using)


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Error:" not in output.replace("error:", ""), output
    for line in expected:
        assert line in result.stderr, result.stderr


# ---- 1. recursive and exploding aliases -------------------------------------------------------------------

def test_recursive_alias_in_a_playbook_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path, problems = playbook_problems(tmp_path, """
        services:
          web: &web
            image: busybox
            command: [*web]
    """)
    assert problems == [f"{path}:4: alias *web refers to a node that contains it (a recursive alias)"]


def test_billion_laughs_playbook_is_refused_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    path, problems = playbook_problems(tmp_path, laughs(9) + "services:\n  web: {image: busybox, command: *l9}\n")
    assert time.monotonic() - start < 2
    assert problems == [f"{path}:6: aliases expand the document by more than {MAX_ALIASED} values (at *l4)"]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("nodes: &n\n  n1: {address: 10.0.0.1, labels: *n}\n", 2, "alias *n refers to a node that contains it"),
    ("defaults: {user: root}\nnodes:\n  n1: &n {address: 10.0.0.1, reserved: [*n]}\n", 3, "recursive alias"),
    ("all:\n  hosts:\n    a: &a {ansible_host: 10.0.0.1, x: [*a]}\n", 3, "recursive alias"),
    ("all: &all\n  children: {lb: *all}\n", 2, "recursive alias"),
    (laughs(9) + "nodes:\n  n1: {address: 10.0.0.1, labels: {a: *l9}}\n", 6, "aliases expand the document"),
    (laughs(9, "v") + "all:\n  vars: {x: *v9}\n  hosts: {a: {ansible_host: 10.0.0.1}}\n", 6,
     "aliases expand the document"),
])
def test_recursive_and_exploding_aliases_in_inventories_are_refused_with_file_and_line(
        tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        load_inventory(str(path))
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (str(path), line) and message in problem.message


def test_cli_plan_refuses_a_recursive_playbook_with_exit_2_and_contacts_no_node(tmp_path: Path,
                                                                                node: Listener) -> None:
    inv = inventory_for(tmp_path, node)
    book = write(tmp_path, "web.yaml", "services:\n  web: &w {image: busybox, command: [*w]}\n")
    assert_refused(cli("plan", book, "-i", inv),
                   f"{book}:2: alias *w refers to a node that contains it (a recursive alias)")
    assert node.offered() == 0


def test_cli_refuses_an_exploding_inventory_with_exit_2(tmp_path: Path) -> None:
    inv = write(tmp_path, "inv.yaml", laughs(9) + "nodes:\n  n1: {address: 10.0.0.1, labels: {a: *l9}}\n")
    book = write(tmp_path, "web.yaml", "services:\n  web: {image: busybox}\n")
    assert_refused(cli("plan", book, "-i", inv), f"{inv}:6: aliases expand the document by more than")
    assert_refused(cli("nodes", "-i", inv), f"{inv}:6: aliases expand the document by more than")


# ---- 1b. bounded in bytes: expanded documents, env values, the start command ------------------------------

def big_aliases(times: int) -> str:
    """A playbook whose 64 KiB string is aliased `times` times in its command (at line 5)."""
    return (f"big: &b {'x' * 65536}\nservices:\n  web:\n    image: busybox\n"
            f"    command: [{', '.join(['*b'] * times)}]\n")


def test_a_playbook_that_expands_past_the_byte_limit_is_refused_at_the_alias(tmp_path: Path) -> None:
    start = time.monotonic()
    path, problems = playbook_problems(tmp_path, big_aliases(100))  # 66 KB of text, 6.5 MB expanded
    assert time.monotonic() - start < 2
    assert problems == [f"{path}:5: aliases expand the document to more than 4 MiB ({MAX_BYTES} bytes) (at *b)"]


def test_a_playbook_file_larger_than_the_byte_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("services:\n  web: {image: busybox}\n" + "#" * MAX_BYTES + "\n")
    with pytest.raises(SpecError) as info:
        load_playbooks([str(path)])
    assert [str(p) for p in info.value.problems] == [
        f"{path}: the playbook is larger than 4 MiB ({MAX_BYTES} bytes), the most fleet reads"]


def test_a_200_kib_env_value_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    path, problems = playbook_problems(
        tmp_path, f"services:\n  web:\n    image: busybox\n    env:\n      SMALL: ok\n      BIG: {'v' * 204800}\n")
    assert problems == [f"{path}:6: services.web.env.BIG: the value is 204800 bytes; an env value can be at most "
                        f"{MAX_ENV_VALUE_BYTES} (64 KiB): put large values in a config file"]


@pytest.mark.parametrize("value", ["a" * 50_000, "'" * 20_000])  # plain, and quoting's worst case
def test_env_values_that_together_overflow_the_start_command_are_refused(tmp_path: Path, value: str) -> None:
    path, problems = playbook_problems(
        tmp_path, f'services:\n  web:\n    image: busybox\n    env:\n      A: "{value}"\n      B: "{value}"\n')
    [problem] = problems
    assert problem.startswith(f"{path}:4: services.web.env: env, command and mounts take ")
    assert problem.endswith(f"at most {MAX_COMMAND_LINE_BYTES} (96 KiB), as a node's shell takes at most 128 KiB: "
                            "put large values in a config file")


def test_the_largest_accepted_service_starts_with_a_command_a_node_can_execute() -> None:
    """At the bound, with the values that quote worst and many mounts, the command sent to the node stays under
    Linux's 128 KiB per argument: `execve` (what sshd does with `sh -c COMMAND`) takes it."""
    configs = tuple(ConfigSpec(f"/etc/app/{'c' * 60}{i}.conf", "x", "0444") for i in range(40))
    volumes = tuple(VolumeSpec("bind", f"/mnt/{'t' * 60}{i}", f"/srv/{'s' * 60}{i}") for i in range(20))
    n = 1
    while True:
        spec = ServiceSpec(name="web", image="busybox", command=("sh", "-c", "'$x'"), configs=configs,
                           volumes=volumes, env={"A": "'" * (n + 1), "B": "a'b" * 1000})
        if spec.command_line_bytes() > MAX_COMMAND_LINE_BYTES:
            break
        n += 1
    spec = ServiceSpec(name="web", image="busybox", command=("sh", "-c", "'$x'"), configs=configs, volumes=volumes,
                       env={"A": "'" * n, "B": "a'b" * 1000})
    run = run_spec(spec, 7, Assignment("web", 0, "n1", 18080, Resources(0.1, 64 << 20), "new"), "/run/x.env",
                   now=0)
    command = CtrDriver("fleet", None).run(run).line()
    assert len(command.encode()) < 128 * 1024, len(command.encode())
    assert subprocess.run(["/bin/sh", "-c", "exit 0", "sh", command], timeout=10).returncode == 0
    with pytest.raises(OSError) as too_big:  # the limit this guards against, shown on this kernel
        subprocess.run(["/bin/sh", "-c", "exit 0", "sh", "x" * 128 * 1024], timeout=10)
    assert too_big.value.errno == errno.E2BIG


def test_cli_refuses_an_expanding_playbook_and_a_huge_env_value_before_contacting_any_node(
        tmp_path: Path, node: Listener) -> None:
    inv = inventory_for(tmp_path, node)
    book = write(tmp_path, "big.yaml", big_aliases(100))
    env = write(tmp_path, "env.yaml", f"services:\n  web:\n    image: busybox\n    env: {{BIG: {'v' * 204800}}}\n")
    for verb in ("plan", "apply"):
        assert_refused(cli(verb, book, "-i", inv, using=FLEET_CLI),
                       f"{book}:5: aliases expand the document to more than 4 MiB")
        assert_refused(cli(verb, env, "-i", inv, using=FLEET_CLI),
                       f"{env}:4: services.web.env.BIG: the value is 204800 bytes")
    assert node.offered() == 0


# ---- 2. non-finite, negative and float numbers ------------------------------------------------------------

DURATION_FIELDS = [
    ("health: {{http: /h, interval: {v}}}", "services.web.health.interval"),
    ("health: {{http: /h, timeout: {v}}}", "services.web.health.timeout"),
    ("health: {{tcp: true, start_period: {v}}}", "services.web.health.start_period"),
    ("update: {{ready_deadline: {v}}}", "services.web.update.ready_deadline"),
    ("update: {{min_ready: {v}}}", "services.web.update.min_ready"),
    ("stop_grace_period: {v}", "services.web.stop_grace_period"),
    ("lb: {{port: 80}}\n    update: {{strategy: canary, canary: {{pause: {v}}}}}", "services.web.update.canary.pause"),
]
BAD_DURATIONS = [
    (".inf", "a duration can be at most 24h (86400s), got inf"),
    ("-.inf", "a duration cannot be negative, got -inf"),
    (".nan", "expected a duration such as 2s or 500ms, got nan"),
    ("-1", "a duration cannot be negative, got -1"),
    ("-0.5", "a duration cannot be negative, got -0.5"),
    ("25h", "a duration can be at most 24h (86400s), got '25h'"),
    ("86400.001", "a duration can be at most 24h (86400s), got 86400.001"),
    ("1.0e-7", "durations are counted in whole milliseconds, got 1e-07"),
    ("0.0001s", "durations are counted in whole milliseconds, got '0.0001s'"),
    ("1" + "0" * 400, "a duration can be at most 24h (86400s), got 1" + "0" * 400),
]


@pytest.mark.parametrize(("template", "field"), DURATION_FIELDS)
@pytest.mark.parametrize(("value", "message"), BAD_DURATIONS)
def test_bad_durations_are_refused_in_every_duration_field(tmp_path: Path, template: str, field: str, value: str,
                                                           message: str) -> None:
    path, problems = service_problems(tmp_path, template.format(v=value))
    line = 5 if "canary" in field else 4
    assert problems == [f"{path}:{line}: {field}: {message}"]


@pytest.mark.parametrize(("snippet", "field", "message"), [
    ("replicas: 3.0", "services.web.replicas", "expected an integer, got 3.0"),
    ("port: 80.0", "services.web.port", "expected an integer, got 80.0"),
    ("lb: {port: 8080.0}", "services.web.lb.port", "expected an integer, got 8080.0"),
    ("health: {tcp: true, failure_threshold: 2.0}", "services.web.health.failure_threshold",
     "expected an integer, got 2.0"),
    ("update: {max_surge: 1.0}", "services.web.update.max_surge", "expected an integer, got 1.0"),
    ("update: {batch_size: .inf}", "services.web.update.batch_size", "expected an integer, got inf"),
    ("resources: {memory: 1.5e+9}", "services.web.resources.memory",
     "expected a memory size with a unit such as 512MiB, got 1500000000.0"),
    ("resources: {memory: .inf}", "services.web.resources.memory",
     "expected a memory size with a unit such as 512MiB, got inf"),
    ("resources: {memory: 2000000000000000000}", "services.web.resources.memory",
     "memory can be at most 1PiB, got 2000000000000000000"),
    ("resources: {cpu: .nan}", "services.web.resources.cpu",
     "expected a finite CPU amount such as 0.5 or 500m, got nan"),
    ("resources: {cpu: .inf}", "services.web.resources.cpu",
     "expected a finite CPU amount such as 0.5 or 500m, got inf"),
    ("resources: {cpu: 0.0005}", "services.web.resources.cpu",
     "cpu is counted in whole millicores (0.001 or 1m), got 0.0005"),
    ("resources: {cpu: 1.5m}", "services.web.resources.cpu",
     "cpu is counted in whole millicores (0.001 or 1m), got '1.5m'"),
    ("volumes: [{type: tmpfs, target: /t, size: 1.0e+6}]", "services.web.volumes[0].size",
     "expected a memory size with a unit such as 512MiB, got 1000000.0"),
])
def test_floats_and_non_finite_numbers_are_refused_where_they_cannot_be(tmp_path: Path, snippet: str, field: str,
                                                                        message: str) -> None:
    path, problems = service_problems(tmp_path, snippet)
    assert problems == [f"{path}:4: {field}: {message}"]


@pytest.mark.parametrize(("snippet", "expected"), [
    ("health: {http: /h, interval: .inf}", "4: services.web.health.interval: a duration can be at most 24h (86400s), "
                                           "got inf"),
    ("update: {min_ready: .nan}", "4: services.web.update.min_ready: expected a duration such as 2s or 500ms, got nan"),
    ("replicas: 3.0", "4: services.web.replicas: expected an integer, got 3.0"),
])
def test_cli_plan_refuses_bad_numbers_with_exit_2_and_contacts_no_node(tmp_path: Path, node: Listener,
                                                                       snippet: str, expected: str) -> None:
    inv = inventory_for(tmp_path, node)
    book = write(tmp_path, "web.yaml", f"services:\n  web:\n    image: busybox\n    {snippet}\n")
    assert_refused(cli("plan", book, "-i", inv), f"{book}:{expected}")
    assert node.offered() == 0


@pytest.mark.parametrize(("value", "message"), [
    ("10.0", "expected an integer, got 10.0"), ("[10.5]", "expected an integer, got 10.5"),
    (".nan", "expected an integer, got nan"),
])
def test_canary_steps_must_be_integers(tmp_path: Path, value: str, message: str) -> None:
    steps = value if value.startswith("[") else f"[{value}]"
    path, problems = service_problems(tmp_path, f"lb: {{port: 80}}\n    update: {{strategy: canary, canary: "
                                                f"{{steps: {steps}}}}}")
    assert problems == [f"{path}:5: services.web.update.canary.steps[0]: {message}"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-1", "100.5"])
def test_canary_error_rate_delta_is_a_finite_percentage(tmp_path: Path, value: str) -> None:
    path, problems = service_problems(tmp_path, f"lb: {{port: 80}}\n    update: {{strategy: canary, canary: "
                                                f"{{max_error_rate_delta: {value}}}}}")
    assert len(problems) == 1 and problems[0].startswith(
        f"{path}:5: services.web.update.canary.max_error_rate_delta: expected percentage points from 0 to 100")


@pytest.mark.parametrize(("snippet", "field", "message"), [
    ("port: 22.0", "nodes.a.port", "expected an integer, got 22.0"),
    ("port: .inf", "nodes.a.port", "expected an integer, got inf"),
    ("capacity: {cpu: .inf}", "nodes.a.capacity.cpu", "expected a finite CPU amount such as 0.5 or 500m, got inf"),
    ("capacity: {cpu: .nan}", "nodes.a.capacity.cpu", "expected a finite CPU amount such as 0.5 or 500m, got nan"),
    ("reserved: {cpu: infm}", "nodes.a.reserved.cpu",
     "expected a finite CPU amount such as 0.5 or 500m, got 'infm'"),
    ("capacity: {memory: 4.5e+9}", "nodes.a.capacity.memory",
     "expected a memory size with a unit such as 512MiB, got 4500000000.0"),
    ("capacity: {memory: " + "9" * 400 + "GiB}", "nodes.a.capacity.memory", "memory size too large"),
])
def test_inventory_numbers_are_refused_with_file_line_and_field(snippet: str, field: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse(f"nodes:\n  a:\n    address: 10.0.0.1\n    {snippet}\n", "inv.yaml")
    assert [str(p) for p in info.value.problems] == [f"inv.yaml:4: {field}: {message}"] or (
        message == "memory size too large" and str(info.value).startswith(f"inv.yaml:4: {field}: {message}"))


# ---- 3. durations round-trip through the revision history (see also the property test in test_spec) --------

@pytest.mark.parametrize(("text", "seconds", "stored"), [
    ("0s", 0.0, "0s"), ("1ms", 0.001, "0.001s"), ("500ms", 0.5, "0.5s"), ("1m30.25s", 90.25, "90.25s"),
    ("1h0.001s", 3600.001, "3600.001s"), ("23h59m59s999ms", 86399.999, "86399.999s"), ("24h", 86400.0, "86400s"),
    (0.1, 0.1, "0.1s"), (2, 2.0, "2s"),
])
def test_durations_are_whole_milliseconds_and_stored_exactly(text: object, seconds: float, stored: str) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == stored
    assert parse_duration(stored) == seconds


def test_stored_durations_keep_their_old_spelling() -> None:
    """Records written before hold `f"{x:g}s"`; a duration that formatted exactly then is spelled the same now, so
    intent and revision hashes computed from `to_playbook_dict` do not change under existing records."""
    for millis in [*range(0, 100_000, 7), *range(0, 86_400_001, 99_991)]:
        seconds = millis / 1000
        if float(f"{seconds:g}") == seconds:
            assert format_duration(seconds) == f"{seconds:g}s"


def test_a_spec_with_extreme_durations_round_trips_through_json() -> None:
    spec = parse_playbook(textwrap.dedent("""
        services:
          web:
            image: busybox
            lb: {port: 80}
            health: {http: /h, interval: 1ms, timeout: 23h59m59.999s, start_period: 86400}
            stop_grace_period: 0.001
            update: {strategy: canary, ready_deadline: 1h0.001s, min_ready: 0, canary: {pause: 12345.678s}}
            resources: {cpu: 1023.999, memory: 1PiB}
    """.replace("1PiB", str(2**50))), "p.yaml").services[0]
    stored = json.loads(json.dumps(to_playbook_dict(spec)))
    back = from_playbook_dict("web", stored)
    assert back == spec and back.spec_hash() == spec.spec_hash()
    assert stored["health"]["timeout"] == "86399.999s" and stored["update"]["canary"]["pause"] == "12345.678s"


def test_a_history_record_with_a_bad_duration_is_refused_naming_the_record() -> None:
    spec = parse_playbook("services:\n  web: {image: busybox}\n", "p.yaml").services[0]
    data = to_playbook_dict(spec)
    data["stop_grace_period"] = "1e-07s"
    with pytest.raises(SpecError) as info:
        from_playbook_dict("web", data, "<history web@3>")
    assert [str(p) for p in info.value.problems] == [
        "<history web@3>: services.web.stop_grace_period: expected a duration such as 2s, 500ms or 1m, got '1e-07s'"]


def test_the_bound_is_a_day() -> None:
    assert MAX_DURATION == 86400.0


# ---- 4. load balancer ports -------------------------------------------------------------------------------

def test_the_stats_port_is_the_one_the_engine_binds() -> None:
    from fleet.engine import lb

    assert lb.STATS_PORT == STATS_PORT == 8404


@pytest.mark.parametrize(("port", "message"), [
    (str(STATS_PORT), f"port {STATS_PORT} is fleet's own on the lb nodes (HAProxy's stats and metrics frontend); "
                      "choose another"),
    ("0", "expected a port number from 1 to 65535, got 0"),
    ("-80", "expected a port number from 1 to 65535, got -80"),
    ("65536", "expected a port number from 1 to 65535, got 65536"),
    ("'80'", "expected an integer, got '80'"),
])
def test_bad_lb_ports_are_refused_with_file_and_line(tmp_path: Path, port: str, message: str) -> None:
    path, problems = service_problems(tmp_path, f"lb: {{port: {port}}}")
    assert problems == [f"{path}:4: services.web.lb.port: {message}"]


def test_two_services_on_one_lb_port_are_refused_in_one_file(tmp_path: Path) -> None:
    path, problems = playbook_problems(tmp_path, """
        services:
          web: {image: busybox, lb: {port: 7001}}
          api: {image: busybox, lb: {port: 7001}}
    """)
    assert problems == [f"{path}:3: services.api.lb.port: lb port 7001 is already used by service 'web' at {path}:2"]


def test_cli_plan_refuses_the_stats_port_and_contacts_no_node(tmp_path: Path, node: Listener) -> None:
    inv = inventory_for(tmp_path, node)
    book = write(tmp_path, "web.yaml", f"services:\n  web:\n    image: busybox\n    lb: {{port: {STATS_PORT}}}\n")
    assert_refused(cli("plan", book, "-i", inv), f"{book}:4: services.web.lb.port: port {STATS_PORT} is fleet's own")
    assert node.offered() == 0


def _specs(text: str) -> list:  # type: ignore[type-arg]
    return list(parse_playbook(textwrap.dedent(text), "p.yaml").services)


SPECS = """
    services:
      web: {image: busybox, lb: {port: 7001}}
      api: {image: busybox, lb: {port: 7002}}
      worker: {image: busybox}
"""


def test_lb_port_taken_by_another_process_on_an_lb_node_is_named_with_the_nodes() -> None:
    specs = _specs(SPECS)
    listening = {"lb1": {22, 7001, STATS_PORT}, "lb2": {22, STATS_PORT}, "lb3": {7001}}
    assert lb_port_conflicts(specs, listening, owned={}) == [
        "web: lb.port 7001 is already in use on lb1, lb3 (not by fleet's HAProxy)"]


def test_lb_port_served_by_the_same_services_haproxy_frontend_is_fine() -> None:
    specs = _specs(SPECS)
    listening = {"lb1": {22, 7001, 7002, STATS_PORT}}
    assert lb_port_conflicts(specs, listening, owned={"web": {7001}, "api": {7002}}) == []


def test_lb_port_of_another_service_not_in_these_playbooks_is_taken() -> None:
    specs = _specs(SPECS)
    listening = {"lb1": {7001, 7002}}
    assert lb_port_conflicts(specs, listening, owned={"web": {7001}, "legacy": {7002}}) == [
        "api: lb.port 7002 is already served by fleet's HAProxy for service 'legacy' (not in these playbooks)"]


def test_lb_ports_swapped_between_services_of_one_run_are_handed_over() -> None:
    specs = _specs("""
        services:
          web: {image: busybox, lb: {port: 7002}}
          api: {image: busybox, lb: {port: 7001}}
    """)
    listening = {"lb1": {7001, 7002}}
    assert lb_port_conflicts(specs, listening, owned={"web": {7001}, "api": {7002}}) == []


def test_lb_port_moving_to_a_port_another_process_holds_is_taken() -> None:
    specs = _specs("services:\n  web: {image: busybox, lb: {port: 7005}}\n")
    assert lb_port_conflicts(specs, {"lb1": {7001, 7005}}, owned={"web": {7001}}) == [
        "web: lb.port 7005 is already in use on lb1 (not by fleet's HAProxy)"]


def test_lb_port_conflicts_has_no_io() -> None:
    tree = ast.parse((REPO / "fleet" / "plan" / "checks.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "collections.abc", "fleet.core.ports", "fleet.config.spec"}, imported


# ---- 5. bind volumes --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("volume", "field", "message"), [
    ("{type: bind, source: /, target: /host}", "services.web.volumes[0]",
     "a bind volume cannot mount the node's root directory (source '/')"),
    ("{type: bind, source: //, target: /host}", "services.web.volumes[0]",
     "a bind volume cannot mount the node's root directory (source '//')"),
    ("{type: bind, source: ///, target: /host}", "services.web.volumes[0]",
     "a bind volume cannot mount the node's root directory (source '///')"),
    ("{type: bind, source: /./, target: /host}", "services.web.volumes[0]",
     "expected an absolute path of letters, digits and . _ @ + / -, got '/./'"),
    ("{type: bind, source: /srv/.., target: /host}", "services.web.volumes[0]",
     "expected an absolute path of letters, digits and . _ @ + / -, got '/srv/..'"),
    ("{type: bind, source: data, target: /data}", "services.web.volumes[0]",
     "a bind volume's source must be an absolute host path, got 'data'"),
    ("{type: bind, source: ./data, target: /data}", "services.web.volumes[0]",
     "a bind volume's source must be an absolute host path, got './data'"),
    ("{type: bind, source: /var/lib/fleet, target: /f}", "services.web.volumes[0]",
     "a bind volume cannot mount /var/lib/fleet: it is fleet's own directory /var/lib/fleet or inside it "
     "(secrets, HAProxy config and sockets, logs)"),
    ("{type: bind, source: /var/lib/fleet//secrets/, target: /s}", "services.web.volumes[0]",
     "a bind volume cannot mount /var/lib/fleet/secrets: it is fleet's own directory /var/lib/fleet or inside it "
     "(secrets, HAProxy config and sockets, logs)"),
    ("{type: bind, source: /var//lib, target: /v}", "services.web.volumes[0]",
     "a bind volume cannot mount /var/lib: it holds fleet's own directory /var/lib/fleet (secrets, HAProxy config "
     "and sockets, logs)"),
    ("{type: tmpfs, target: //}", "services.web.volumes[0].target", "cannot mount over /"),
    ("{type: tmpfs, target: /etc/hosts}", "services.web.volumes[0].target",
     "cannot mount over /etc/hosts: fleet mounts its own /etc/hosts in every container"),
    ("{type: bind, source: /srv, target: /etc/}", "services.web.volumes[0].target",
     "cannot mount over /etc: fleet mounts its own /etc/hosts in every container"),
    ("{type: volume, source: x, target: /etc/resolv.conf}", "services.web.volumes[0].target",
     "cannot mount over /etc/resolv.conf: fleet mounts its own /etc/resolv.conf in every container"),
])
def test_dangerous_volumes_are_refused_with_file_and_line(tmp_path: Path, volume: str, field: str,
                                                          message: str) -> None:
    path, problems = service_problems(tmp_path, f"volumes:\n      - {volume}")
    assert problems == [f"{path}:5: {field}: {message}"]


def test_two_volumes_at_one_target_spelled_differently_are_refused(tmp_path: Path) -> None:
    path, problems = service_problems(tmp_path, "volumes: [{type: tmpfs, target: /t}, {type: tmpfs, target: //t/}]")
    assert problems == [f"{path}:4: services.web.volumes: two volumes mount at /t"]


@pytest.mark.parametrize("source", ["/srv/data", "/srv/data/", "/var/lib/fleetish", "/var/log", "/var/lib/other"])
def test_ordinary_bind_sources_are_kept_as_written(tmp_path: Path, source: str) -> None:
    spec = parse_playbook(f"services:\n  web:\n    image: busybox\n    volumes: [{{type: bind, source: {source}, "
                          "target: /data}]\n", "p.yaml").services[0]
    assert spec.volumes[0].source == source


def test_the_protected_node_dirs_are_the_engines() -> None:
    from fleet.engine import runspec

    assert set(NODE_DIRS) == {runspec.PATHS.base, runspec.PATHS.run} == {"/var/lib/fleet", "/run/fleet"}


def test_a_bind_of_fleets_tmpfs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="fleet's own directory /run/fleet"):
        parse_playbook("services:\n  web:\n    image: busybox\n    volumes: [{type: bind, source: /run/fleet/secrets, "
                       "target: /data}]\n", "p.yaml")


def test_cli_plan_refuses_a_root_bind_and_contacts_no_node(tmp_path: Path, node: Listener) -> None:
    inv = inventory_for(tmp_path, node)
    book = write(tmp_path, "web.yaml", "services:\n  web:\n    image: busybox\n    volumes:\n"
                                       "      - {type: bind, source: //, target: /host}\n")
    assert_refused(cli("plan", book, "-i", inv),
                   f"{book}:5: services.web.volumes[0]: a bind volume cannot mount the node's root directory")
    assert node.offered() == 0


# ---- 6. nodes named by host name: accepted if well-formed, refused with file:line if not -------------------

def test_host_names_are_accepted_in_every_inventory_format() -> None:
    fleet_yaml = parse("nodes:\n  web1: {address: web1.example.test}\n  lo: {address: localhost}\n", "inv.yaml")
    assert [n.address for n in fleet_yaml.nodes] == ["web1.example.test", "localhost"]
    ansible_yaml = parse("all:\n  hosts:\n    web1: {ansible_host: web1.example.test}\n    db.example.test:\n",
                         "hosts.yml")
    assert [(n.name, n.address) for n in ansible_yaml.nodes] == [("web1", "web1.example.test"),
                                                                  ("db.example.test", "db.example.test")]
    ini = parse("[web]\nweb1 ansible_host=web1.example.test\nweb2.example.test\n[lb]\nedge ansible_host=::1\n",
                "hosts.ini")
    assert [(n.name, n.address) for n in ini.nodes] == [("web1", "web1.example.test"),
                                                        ("web2.example.test", "web2.example.test"), ("edge", "::1")]


@pytest.mark.parametrize(("text", "file", "expected"), [
    ("nodes:\n  a: {address: 'web 1'}\n", "inv.yaml",
     "inv.yaml:2: nodes.a.address: expected an IP address or a host name, got 'web 1'"),
    ("nodes:\n  a:\n    address: 10.0.0\n", "inv.yaml",
     "inv.yaml:3: nodes.a.address: expected an IP address or a host name, got '10.0.0'"),
    ("nodes:\n  a: {address: 'http://web1/'}\n", "inv.yaml",
     "inv.yaml:2: nodes.a.address: expected an IP address or a host name, got 'http://web1/'"),
    ("all:\n  hosts:\n    a: {ansible_host: 'x;reboot'}\n", "hosts.yml",
     "hosts.yml:3: a.ansible_host: expected an IP address or a host name, got 'x;reboot'"),
    ("[web]\nweb1 ansible_host=-bad.example.test\n", "hosts.ini",
     "hosts.ini:2: web1.ansible_host: expected an IP address or a host name, got '-bad.example.test'"),
    ("[web]\n'web 1' ansible_host=10.0.0.1\n", "hosts.ini",
     "hosts.ini:2: web 1: invalid host name (letters, digits, . _ -; at most 63 characters)"),
])
def test_malformed_addresses_and_host_names_are_refused_with_file_and_line(text: str, file: str,
                                                                           expected: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse(text, file)
    assert [str(p) for p in info.value.problems] == [expected]


# Resolution happens once per run in the engine (fleet.engine.resolve), never while loading. `localhost` resolves
# from /etc/hosts here; a name under .invalid is answered without asking DNS (RFC 6761), so no test sends a query
# off this machine.

def test_host_names_resolve_once_to_ip_addresses_and_literals_are_kept() -> None:
    nodes = [Node("lo", "localhost"), Node("v4", "10.0.0.1"), Node("v6", "::1"), Node("lo2", "localhost")]
    resolved = asyncio.run(resolve_nodes(nodes, inventory="inv.yaml"))
    assert resolved == Resolved({"lo": "127.0.0.1", "v4": "10.0.0.1", "v6": "::1", "lo2": "127.0.0.1"}, {})


def test_a_name_under_invalid_does_not_resolve_and_dns_is_not_asked() -> None:
    async def no_dns(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        raise AssertionError(f"DNS asked for {args}")

    nodes = [Node("web1", "10.0.0.1"), Node("db", "nosuchhost.invalid", source_line=7)]
    resolved = asyncio.run(resolve_nodes(nodes, inventory="/etc/fleet/inv.yaml", getaddrinfo=no_dns))
    assert resolved.addresses == {"web1": "10.0.0.1"}
    assert resolved.errors == {"db": "host name 'nosuchhost.invalid' does not resolve (a name under .invalid never "
                                     "resolves, RFC 6761); node db, address in /etc/fleet/inv.yaml:7"}


def test_a_lookup_that_fails_or_hangs_is_a_message_naming_host_node_and_inventory() -> None:
    async def resolver(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        if host == "gone.example.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        await asyncio.sleep(10)
        return []

    nodes = [Node("a", "gone.example.test", source_line=3), Node("b", "slow.example.test")]
    resolved = asyncio.run(resolve_nodes(nodes, inventory="inv.yaml", timeout=0.05, getaddrinfo=resolver))
    assert resolved.addresses == {}
    assert resolved.errors == {
        "a": "host name 'gone.example.test' does not resolve (name or service not known); node a, address in "
             "inv.yaml:3",
        "b": "host name 'slow.example.test' does not resolve (no answer within 0.05s); node b, address in inv.yaml"}


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[SSHFarm]:
    async with SSHFarm(tmp_path / "farm") as f:
        yield f


async def test_fleet_reaches_a_node_named_localhost_and_reports_an_unresolvable_one_without_contacting_it(
        farm: SSHFarm) -> None:
    await farm.start(2)
    inv = Inventory("/srv/fleet/inventory.yaml", (farm.node("n1", address="localhost", source_line=2),
                                                  farm.node("n2", address="nosuchhost.invalid", source_line=5)))
    async with Pool() as pool:
        reports = await Fleet(inv, pool).nodes()
    n1, n2 = reports
    assert n1.status != "unreachable" and n1.facts is not None and n1.ip == n1.ip_address == "127.0.0.1"
    assert (n2.status, n2.ip, n2.ip_address, n2.facts) == ("unreachable", None, None, None)
    assert n2.reason == ("host name 'nosuchhost.invalid' does not resolve (a name under .invalid never resolves, "
                         "RFC 6761); node n2, address in /srv/fleet/inventory.yaml:5")
    assert farm.servers["n1"].connections == 1 and farm.servers["n2"].connections == 0


async def test_cli_nodes_names_the_unresolvable_node_and_the_inventory_file(farm: SSHFarm, tmp_path: Path) -> None:
    await farm.start(1)
    inv = write(tmp_path, "inv.yaml", f"""
        defaults: {{user: fleet, key: {farm.client_key_path}, known_hosts: {farm.known_hosts_path}}}
        nodes:
          n1: {{address: localhost, port: {farm.servers["n1"].port}}}
          n2: {{address: nosuchhost.invalid}}
    """)
    proc = await asyncio.create_subprocess_exec(*INSTALLED_CLI, "nodes", "-i", inv, "--json",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b"Traceback" not in stdout + stderr, stderr
    n1, n2 = json.loads(stdout)["nodes"]
    assert (n1["name"], n1["address"]) == ("n1", "localhost") and n1["status"] != "unreachable"
    assert (n2["name"], n2["status"]) == ("n2", "unreachable")
    assert n2["reason"] == (f"host name 'nosuchhost.invalid' does not resolve (a name under .invalid never "
                            f"resolves, RFC 6761); node n2, address in {inv}:4")


async def test_host_keys_pinned_under_a_host_name_are_matched_by_that_name(farm: SSHFarm, tmp_path: Path) -> None:
    await farm.start(1)
    server = farm.servers["n1"]
    own = server.host_key.export_public_key().decode().split()
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    pinned, changed = tmp_path / "pinned", tmp_path / "changed"
    pinned.write_text(f"[localhost]:{server.port} {own[0]} {own[1]}\n")
    changed.write_text(f"[localhost]:{server.port} {other[0]} {other[1]}\n")
    async with Pool() as pool:
        ok = await pool.run(farm.node("n1", address="localhost", known_hosts=str(pinned)), ["true"])
        refused = await pool.run(farm.node("n1", address="localhost", known_hosts=str(changed)), ["true"])
    assert ok.ok, ok
    assert (refused.error_kind, refused.error) == (
        "hostkey", f"host key for localhost does not match the one pinned in {changed} (it changed?); refusing to "
                   "connect")


def test_haproxy_config_gets_ip_addresses_for_nodes_named_by_host_name() -> None:
    worker = NodeReport(Node("w1", "localhost"), "ready", None, None, 0.0, ip="127.0.0.1")
    lb_node = NodeReport(Node("lb1", "localhost", roles=("lb",)), "ready", None, None, 0.0, ip="127.0.0.1")
    lost = NodeReport(Node("w2", "nosuchhost.invalid"), "unreachable", "does not resolve", None, 0.0)
    balancers = Balancers(None, [worker, lb_node, lost])  # type: ignore[arg-type]  # no pool: nothing is sent
    rotation = Rotation()
    for node_name, port in (("w1", 20001), ("w2", 20002)):
        rotation.put(Replica(node_name, f"web-{port}-abc", "web", port - 20000, 1, "h", port, True, Resources(),
                             "busybox", lb=LbLabel(8080, "http", "roundrobin")))
    text = lb_config(rotation, balancers.addresses, balancers.addresses["lb1"])
    assert "server web-20001-abc 127.0.0.1:20001" in text and "web-20002-abc" not in text
    assert f"bind 127.0.0.1:{STATS_PORT}" in text
    assert [lb.node.name for lb in balancers.nodes] == ["lb1"] and balancers.unreachable == []


def test_cli_plan_refuses_a_malformed_address_with_exit_2(tmp_path: Path) -> None:
    inv = write(tmp_path, "hosts.ini", "[web]\nweb1 ansible_host=web1.example.test\nweb2 ansible_host='web 2'\n")
    book = write(tmp_path, "web.yaml", "services:\n  web: {image: busybox}\n")
    assert_refused(cli("plan", book, "-i", inv),
                   f"{inv}:3: web2.ansible_host: expected an IP address or a host name, got 'web 2'")


# ---- 7. nothing but ConfigError escapes the loaders -------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("all:\n  vars: [1]\n  hosts: {a: {}}\n", "hosts.yml:2: all.vars: expected a mapping of variable name → value"),
    ("all:\n  hosts: [a, b]\n", "hosts.yml:2: all.hosts: expected a mapping of host name → variables"),
    ("all:\n  children: [lb]\n", "hosts.yml:2: all.children: expected a mapping of group name → group"),
    ("all:\n  hosts: {a: 1}\n", "hosts.yml:2: all.hosts.a: host variables must be a mapping"),
    ("all:\n  hosts:\n    a: {fleet_roles: 5}\n", "hosts.yml:3: a.fleet_roles: expected a list of roles "
                                                    "(worker, lb, storage, record), got 5"),
    ("all:\n  hosts:\n    ~: {}\n", "hosts.yml:3: all.hosts.None: expected a host name, got None"),
    ("all:\n  hosts:\n    a: {ansible_ssh_port: x}\n", "hosts.yml:3: a.ansible_ssh_port: expected a port number from "
                                                         "1 to 65535, got 'x'"),
    ("all:\n  vars: {a: !!int x}\n", "hosts.yml:2: all.vars.a: cannot read !!int value 'x': invalid literal for int() "
                                     "with base 10: 'x'"),
    ("all:\n  vars:\n    <<: 1\n", "hosts.yml:3: all.vars: a merge key (<<) takes a mapping or a list of mappings"),
])
def test_ansible_yaml_shapes_that_used_to_crash_are_problems_with_line(text: str, expected: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse(text, "hosts.yml")
    assert [str(p) for p in info.value.problems] == [expected]


def test_unreadable_and_non_utf8_files_are_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"services:\n  web: {image: \xff}\n")
    with pytest.raises(SpecError) as info:
        load_playbooks([str(bad)])
    assert [str(p) for p in info.value.problems] == [f"{bad}:2: not UTF-8 text (byte 0xff at offset 25)"]
    with pytest.raises(InventoryError) as inv_info:
        load_inventory(str(bad))
    assert [str(p) for p in inv_info.value.problems] == [f"{bad}:2: not UTF-8 text (byte 0xff at offset 25)"]
    with pytest.raises(InventoryError, match=r"is a directory|cannot read inventory"):
        load_inventory(str(tmp_path))


def test_cli_refuses_a_non_utf8_playbook_with_exit_2(tmp_path: Path, node: Listener) -> None:
    inv = inventory_for(tmp_path, node)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"services:\n  web: {image: \xff}\n")
    assert_refused(cli("plan", str(bad), "-i", inv), f"{bad}:2: not UTF-8 text")
    assert node.offered() == 0


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.sampled_from([10**400, -(10**400), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["1s", "500ms", "-1s", "1e400", ".inf", "0x10", "1_000", "512MiB", "~",
                                           "/", "//", "/var/lib/fleet", "localhost", "nosuchhost.invalid", "8404"]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3)),
    max_leaves=12)
_SERVICE_KEYS = st.sampled_from(["image", "command", "replicas", "resources", "port", "env", "health", "placement",
                                 "lb", "volumes", "stop_grace_period", "update", "bogus"])
_NODE_KEYS = st.sampled_from(["address", "port", "user", "key", "known_hosts", "namespace", "labels", "reserved",
                              "capacity", "roles", "insecure_registries"])
_HOST_KEYS = st.sampled_from(["ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
                              "fleet_labels", "fleet_roles", "ansible_ssh_common_args", "hosts", "vars", "children"])


def _dump(data: object) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_SERVICE_KEYS, _VALUES, max_size=6), st.sampled_from(["web", "Web", 5, None]))
def test_any_playbook_shape_loads_or_is_a_spec_error(body: dict[str, object], name: object) -> None:
    for data in ({"services": {name: body}}, {"services": body}, body):
        try:
            parse_playbook(_dump(data), "p.yaml")
        except SpecError as exc:
            assert exc.problems and all(p.file == "p.yaml" for p in exc.problems)


_FIELDS = [
    "image", "command", "replicas", "resources.cpu", "resources.memory", "port", "env.A", "env.B.secret",
    "health.http", "health.tcp", "health.exec", "health.interval", "health.timeout", "health.failure_threshold",
    "health.success_threshold", "health.start_period", "placement.require.zone", "placement.spread_by",
    "placement.strategy", "lb.port", "lb.mode", "lb.balance", "volumes.0.type", "volumes.0.source",
    "volumes.0.target", "volumes.0.readonly", "volumes.0.size", "stop_grace_period", "update.strategy",
    "update.max_surge", "update.max_unavailable", "update.batch_size", "update.ready_deadline", "update.min_ready",
    "update.canary.steps", "update.canary.pause", "update.canary.auto_promote", "update.canary.max_error_rate_delta",
]


def _put(body: dict[str, object], path: str, value: object) -> None:
    parts = path.split(".")
    here: dict[str, object] = body
    for part in parts[:-1]:
        if part == "0":
            continue
        nxt = here.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            here[part] = [nxt] if part == "volumes" else nxt
        here = nxt
    here[parts[-1]] = value


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_FIELDS), st.one_of(_SCALARS, _VALUES)), min_size=1, max_size=4))
def test_any_value_in_any_playbook_field_loads_or_is_a_spec_error(values: list[tuple[str, object]]) -> None:
    body: dict[str, object] = {"image": "busybox", "lb": {"port": 80}, "update": {"strategy": "canary"},
                               "volumes": [{"type": "bind", "source": "/srv", "target": "/srv"}]}
    for path, value in values:
        _put(body, path, value)
    text = _dump({"services": {"web": body}})
    try:
        spec = parse_playbook(text, "p.yaml").services[0]
    except SpecError as exc:
        assert exc.problems and all(p.file == "p.yaml" and p.line is not None for p in exc.problems)
    else:
        back = from_playbook_dict("web", json.loads(json.dumps(to_playbook_dict(spec))))
        assert back == spec and back.spec_hash() == spec.spec_hash()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_NODE_KEYS, _VALUES, max_size=6), st.dictionaries(_HOST_KEYS, _VALUES, max_size=5))
def test_any_inventory_shape_loads_or_is_an_inventory_error(node: dict[str, object],
                                                            host: dict[str, object]) -> None:
    for text, file in ((_dump({"nodes": {"n1": node}}), "inv.yaml"), (_dump({"defaults": node}), "inv.yaml"),
                       (_dump({"all": {"hosts": {"h1": host}}}), "hosts.yml"), (_dump({"all": host}), "hosts.yml"),
                       (_dump({"all": {"children": {"lb": host}}}), "hosts.yml")):
        try:
            parse(text, file)
        except InventoryError as exc:
            assert exc.problems and all(p.file == file for p in exc.problems)


@settings(max_examples=200)
@given(st.lists(st.one_of(st.from_regex(r"[A-Za-z0-9_.\[\]:=' \"#;-]{0,30}", fullmatch=True),
                          st.sampled_from(["[web]", "[web:vars]", "[all:children]", "[lb]", "[x:y]", "[]"])),
                max_size=8))
def test_any_ini_inventory_loads_or_is_an_inventory_error(lines: list[str]) -> None:
    try:
        parse("\n".join(lines) + "\n", "hosts.ini")
    except InventoryError as exc:
        assert exc.problems


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_any_text_loads_or_is_a_config_error(text: str) -> None:
    for call in (lambda: parse_playbook(text, "p.yaml"), lambda: parse(text, "inv.yaml")):
        try:
            call()
        except ConfigError as exc:
            assert exc.problems
