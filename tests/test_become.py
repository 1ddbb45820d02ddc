"""`become`: a node reached as a non-root user, every command run through `sudo -n` at the transport's edge
(exact command lines), a refusal that names the node and the sudoers line before anything runs, and the
inventory fields (fleet YAML, Ansible INI and YAML) with the Ansible variables fleet refuses by name and line."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest
from sshserver import Handler, SSHFarm, shell_handler

from fleet.config.inventory import load_inventory, parse
from fleet.core.errors import BecomeError, InventoryError
from fleet.core.model import CommandResult, Node
from fleet.core.shell import Script
from fleet.transport import Pool
from fleet.transport.command import line_for

PLAIN = Node("n1", "10.0.0.1", user="deploy")
BECOME = replace(PLAIN, become=True)


def test_a_node_without_become_gets_the_command_as_it_was() -> None:
    assert line_for(PLAIN, ["ctr", "-n", "fleet", "tasks", "ls"]) == "ctr -n fleet tasks ls"
    script = Script("echo \"$A\"", env={"A": "x y"}, args=("1",), name="t")
    assert line_for(PLAIN, script) == script.render()


def test_become_prefixes_every_argv_with_sudo_n_quoted_once() -> None:
    assert line_for(BECOME, ["ctr", "-n", "fleet", "tasks", "kill", "web 1;x"]) == \
        "sudo -n -- ctr -n fleet tasks kill 'web 1;x'"
    assert line_for(replace(BECOME, become_user="app"), ["id", "-u"]) == "sudo -n -u app -- id -u"


def test_become_runs_a_script_with_its_variables_after_sudo_through_env() -> None:
    script = Script('echo "$A" "$1"', env={"A": "x y", "B": "$(id)"}, args=("arg 1",), name="fleet-t")
    line = line_for(BECOME, script)
    assert line == ("sudo -n -- env 'A=x y' 'B=$(id)' /bin/sh -c 'echo \"$A\" \"$1\"' fleet-t 'arg 1'")
    assert shlex.split(line)[:4] == ["sudo", "-n", "--", "env"]
    assert line_for(BECOME, Script("true", name="bare")) == "sudo -n -- /bin/sh -c true bare"
    with pytest.raises(ValueError, match="not a shell variable name"):
        line_for(BECOME, Script("true", env={"A=B": "x"}))
    with pytest.raises(TypeError):
        line_for(BECOME, "rm -rf /")  # type: ignore[arg-type]


def recording(seen: list[str]) -> Handler:
    """The shell handler (commands run by /bin/sh here), recording each command line the server receives."""
    async def handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
        seen.append(process.command or "")
        await shell_handler(process)
    return handler


async def test_become_node_runs_through_real_sudo_with_stdin_passed_and_never_in_argv(tmp_path: Path) -> None:
    """Real sudo (this process runs as root): the server sees the probe, then each command behind `sudo -n --`;
    a secret on stdin arrives on stdin and appears in no command line."""
    seen: list[str] = []
    async with SSHFarm(tmp_path / "f", handler=recording(seen)) as farm:
        await farm.start(1)
        node = farm.node("n1", become=True)
        async with Pool() as pool:
            who = await pool.run(node, ["id", "-u"])
            secret = await pool.run(node, ["cat"], stdin="s3cret-value")
            script = await pool.run(node, Script('printf "%s|%s" "$A" "$1"', env={"A": "v w"}, args=("a b",)))
    assert who.ok and who.stdout == "0\n"
    assert secret.ok and secret.stdout == "s3cret-value"
    assert script.ok and script.stdout == "v w|a b"
    assert seen[0] == "sudo -n -- true"
    assert seen[1:3] == ["sudo -n -- id -u", "sudo -n -- cat"]
    assert seen[3].startswith("sudo -n -- env 'A=v w' /bin/sh -c ")
    assert not any("s3cret" in line for line in seen)


async def _refused(tmp_path: Path, stderr: bytes, status: int, calls: int, **node: object
                   ) -> tuple[list[CommandResult], list[str]]:
    """`calls` commands (`touch`) on a become node whose sudo answers `stderr` and `status`; the results, and
    every command line the server received."""
    seen: list[str] = []

    async def handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
        seen.append(process.command or "")
        if (process.command or "").startswith("sudo "):
            process.stderr.write(stderr)
            process.exit(status)
        else:
            await shell_handler(process)

    async with SSHFarm(tmp_path / "f", handler=handler) as farm:
        await farm.start(1)
        become = farm.node("n1", become=True, **node)
        async with Pool() as pool:
            results = list(await asyncio.gather(*(pool.run(become, ["touch", "/tmp/x"]) for _ in range(calls))))
            results.append(await pool.run(become, ["touch", "/tmp/x"]))
    return results, seen


async def test_a_user_without_passwordless_sudo_gets_the_node_and_sudoers_line_and_nothing_runs(
        tmp_path: Path) -> None:
    results, seen = await _refused(tmp_path, b"sudo: a password is required\n", 1, 3, user="deploy")
    for result in results:
        assert isinstance(result.failure, BecomeError) and result.error_kind == "auth"
    message = str(results[-1].failure)
    assert message.startswith("n1: deploy@127.0.0.1:")
    assert "sudo: a password is required" in message
    assert "`deploy ALL=(root) NOPASSWD: ALL`" in message and "/etc/sudoers.d/fleet" in message
    assert "nothing was run" in message
    # One probe, remembered: no command reached the node, and the refusal was not asked again.
    assert seen == ["sudo -n -- true"]


async def test_become_without_sudo_on_the_node_says_to_install_it(tmp_path: Path) -> None:
    results, seen = await _refused(tmp_path, b"sh: 1: sudo: not found\n", 127, 1, become_user="app")
    assert isinstance(results[0].failure, BecomeError)
    assert "sudo is not installed on n1" in (results[0].error or "")
    assert "`fleet ALL=(app) NOPASSWD: ALL`" in (results[0].error or "")
    assert seen == ["sudo -n -u app -- true"]


async def test_check_raises_the_become_error(tmp_path: Path) -> None:
    async with SSHFarm(tmp_path / "f", handler=_deny) as farm:
        await farm.start(1)
        async with Pool() as pool:
            with pytest.raises(BecomeError, match="NOPASSWD"):
                await pool.check(farm.node("n1", become=True), ["true"])


async def _deny(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stderr.write(b"sudo: a password is required\n")
    process.exit(1)


# ---- inventories -------------------------------------------------------------------------------------------


def test_fleet_yaml_become_for_all_and_per_node(tmp_path: Path) -> None:
    text = """\
defaults: {user: deploy, become: true}
nodes:
  n1: {address: 10.0.0.1}
  n2: {address: 10.0.0.2, become_user: app}
  n3: {address: 10.0.0.3, user: root, become: false}
"""
    inv = parse(text, "inv.yaml")
    got = {n.name: (n.user, n.become, n.become_user) for n in inv.nodes}
    assert got == {"n1": ("deploy", True, "root"), "n2": ("deploy", True, "app"), "n3": ("root", False, "root")}
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    first, cached = load_inventory(str(path)), load_inventory(str(path))
    assert [(n.become, n.become_user) for n in cached.nodes] == [(n.become, n.become_user) for n in first.nodes]
    assert cached.node("n2").become_user == "app"


def test_fleet_yaml_become_values_checked_at_their_line() -> None:
    text = "nodes:\n  n1:\n    address: 10.0.0.1\n    become: 'yes'\n    become_user: 'root; id'\n"
    with pytest.raises(InventoryError) as raised:
        parse(text, "inv.yaml")
    message = str(raised.value)
    assert "inv.yaml:4: nodes.n1.become" in message
    assert "inv.yaml:5: nodes.n1.become_user" in message and "expected a user name" in message


def test_ansible_ini_become_variables() -> None:
    text = """\
[workers]
w1 ansible_host=10.0.0.1 ansible_user=deploy ansible_become=true
w2 ansible_host=10.0.0.2 ansible_user=deploy ansible_become=yes ansible_become_user=app ansible_become_method=sudo
w3 ansible_host=10.0.0.3 ansible_connection=ssh
[lb]
lb1 ansible_host=10.0.0.9
[lb:vars]
ansible_become=True
ansible_user=ops
"""
    inv = parse(text, "hosts.ini")
    got = {n.name: (n.user, n.become, n.become_user) for n in inv.nodes}
    assert got == {"w1": ("deploy", True, "root"), "w2": ("deploy", True, "app"), "w3": ("root", False, "root"),
                   "lb1": ("ops", True, "root")}


@pytest.mark.parametrize(("line", "field", "words"), [
    ("w1 ansible_host=10.0.0.1 ansible_password=hunter2", "w1.ansible_password", "SSH keys only"),
    ("w1 ansible_host=10.0.0.1 ansible_ssh_pass=hunter2", "w1.ansible_ssh_pass", "SSH keys only"),
    ("w1 ansible_host=10.0.0.1 ansible_user=deploy ansible_become_password=x", "w1.ansible_become_password",
     "`deploy ALL=(root) NOPASSWD: ALL`"),
    ("w1 ansible_host=10.0.0.1 ansible_connection=local", "w1.ansible_connection", "over SSH"),
    ("w1 ansible_host=10.0.0.1 ansible_become_method=su", "w1.ansible_become_method", "sudo only"),
    ("w1 ansible_host=10.0.0.1 ansible_become=maybe", "w1.ansible_become", "expected true or false"),
])
def test_ansible_ini_unsupported_variables_refused_by_name_and_line(line: str, field: str, words: str) -> None:
    with pytest.raises(InventoryError) as raised:
        parse(f"# fleet hosts\n[workers]\n{line}\n", "hosts.ini")
    message = str(raised.value)
    assert f"hosts.ini:3: {field}: " in message and words in message
    assert "hunter2" not in message


def test_ansible_ini_refusal_in_group_vars_names_the_vars_line() -> None:
    text = "[workers]\nw1 ansible_host=10.0.0.1\n[workers:vars]\nansible_user=deploy\nansible_become_pass=pw\n"
    with pytest.raises(InventoryError) as raised:
        parse(text, "hosts.ini")
    assert "hosts.ini:5: w1.ansible_become_pass: not supported" in str(raised.value)


def test_ansible_yaml_become_and_refusal_at_their_lines() -> None:
    text = """\
all:
  vars:
    ansible_user: deploy
    ansible_become: true
  children:
    workers:
      hosts:
        w1: {ansible_host: 10.0.0.1}
        w2:
          ansible_host: 10.0.0.2
          ansible_become_user: app
"""
    inv = parse(text, "hosts.yaml")
    assert {n.name: (n.user, n.become, n.become_user) for n in inv.nodes} == {
        "w1": ("deploy", True, "root"), "w2": ("deploy", True, "app")}
    bad = text.replace("ansible_become: true", "ansible_become: true\n    ansible_password: pw")
    with pytest.raises(InventoryError) as raised:
        parse(bad, "hosts.yaml")
    message = str(raised.value)
    assert "hosts.yaml:5: w1.ansible_password: not supported" in message
    assert "hosts.yaml:5: w2.ansible_password" in message


async def test_a_sudo_that_hangs_is_a_session_error_within_the_connect_timeout(tmp_path: Path) -> None:
    async def hang(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await process.channel.wait_closed()

    async with SSHFarm(tmp_path / "f", handler=hang) as farm:
        await farm.start(1)
        async with Pool(connect_timeout=0.5) as pool:
            result = await pool.run(farm.node("n1", become=True), ["true"])
    assert result.error_kind == "ssh" and "`sudo -n true` did not finish within 0.5s" in (result.error or "")
    assert "/etc/hosts" in (result.error or "")
