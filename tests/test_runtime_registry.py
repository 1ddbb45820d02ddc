"""Pulls with registry credentials: the exact command (the password in neither argv nor the script), and (lab) the
ctr driver's pull against Debian's docker-registry with htpasswd auth on loopback and a private containerd: the
right password pulls, a wrong one is refused with the registry's 401, and the password shows up nowhere."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import free_port
from local_containerd import Containerd, available, local_containerd

from fleet.core.errors import DigestError, RuntimeCommandError
from fleet.core.model import CommandResult, RegistryLogin
from fleet.core.shell import Script
from fleet.engine.digests import resolve_digest, split_reference
from fleet.engine.retention import removable, retained
from fleet.image.demo import build_demo
from fleet.node.runtime.ctr import CtrDriver, parse_login_pull
from fleet.node.runtime.nerdctl import NerdctlDriver
from fleet.results.records import Revision

PASSWORD = "s3cret-Zq9'\"$(id)"


def bcrypt_line(user: str, password: str) -> str:
    """An htpasswd line (docker-registry reads bcrypt only): glibc's crypt makes `$2b$` hashes, and Python 3.11's
    crypt module (deprecated, removed in 3.13) reaches it without another dependency."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: every request checks it
    assert hashed.startswith("$2"), "this libc's crypt has no bcrypt"
    return f"{user}:{hashed}\n"


def test_login_pull_keeps_the_password_off_the_command_line():
    call = CtrDriver(namespace="fleet").image_pull_login("10.0.0.9:5000/web:v1", "alice", plain_http=True)
    assert isinstance(call.command, Script)
    assert call.command.env["PULL"] == ("ctr -n fleet images pull --plain-http --user alice 10.0.0.9:5000/web:v1")
    assert "script -q -e -E never" in call.command.text  # echo off from the start: see the lab test below
    assert call.stdin_path is None
    nerd = NerdctlDriver(namespace="fleet").image_pull_login("10.0.0.9:5000/web:v1", "alice")
    assert isinstance(nerd.command, Script) and "--password-stdin" in nerd.command.text
    assert nerd.command.env["LOGIN_USER"] == "alice" and nerd.command.env["REGISTRY"] == "10.0.0.9:5000"


def test_references_split_and_only_tags_in_a_registry_are_resolved():
    assert split_reference("10.0.0.9:5000/team/web:v1") == ("10.0.0.9:5000", "team/web", "v1")
    assert split_reference("10.0.0.9:5000/web") == ("10.0.0.9:5000", "web", "latest")
    assert split_reference("busybox:1.36") == ("docker.io", "library/busybox", "1.36")
    assert split_reference("localhost:5000/web:v1") == ("localhost:5000", "web", "v1")
    assert split_reference("fleet.local/demo:v1") is None
    assert split_reference("r.io/web:v1@sha256:" + "a" * 64) is None


def test_a_resolved_digest_is_part_of_the_hash_and_history_but_not_of_the_intent():
    from fleet.config.spec import from_playbook_dict, parse_playbook, to_playbook_dict
    from fleet.plan.rollout.decide import intent_hash

    spec = parse_playbook("services:\n  web:\n    image: r.io/web:v1\n", "pb.yaml").services[0]
    a, b = (replace(spec, image_digest="sha256:" + c * 64) for c in "ab")
    assert (a.image_ref, spec.image_ref) == ("r.io/web:v1@sha256:" + "a" * 64, "r.io/web:v1")
    assert len({spec.spec_hash(), a.spec_hash(), b.spec_hash()}) == 3  # a re-pushed tag is a change that rolls
    assert intent_hash(a) == intent_hash(b) == intent_hash(spec)  # reconcile does not re-resolve
    back = from_playbook_dict("web", to_playbook_dict(a))
    assert back.image_digest == a.image_digest and back.spec_hash() == a.spec_hash()


def test_parse_login_pull_reads_the_pull_status_not_the_script_status():
    ok = CommandResult("n1", 0, "unpacking linux/amd64 sha256:ab...\r\ndone: 5ms\t\r\n@@rc 0\n", "", 0.1)
    parse_login_pull(ok)
    refused = CommandResult("n1", 0, 'Password: \r\nctr: failed to resolve reference "r/web:v1": pulling from host '
                            "r failed with status code [manifests v1]: 401 Unauthorized\r\n@@rc 1\n", "", 0.1)
    with pytest.raises(RuntimeCommandError, match="401 Unauthorized") as exc:
        parse_login_pull(refused)
    assert exc.value.exit_status == 1
    with pytest.raises(RuntimeCommandError):
        parse_login_pull(CommandResult("n1", 127, "", "ctr: script(1) (util-linux) is not installed", 0.0))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry on 127.0.0.1 with htpasswd auth (user alice); stopped by PID."""
    d = tmp_path_factory.mktemp("registry")
    (d / "htpasswd").write_text(bcrypt_line("alice", PASSWORD))
    port = free_port()
    (d / "registry.yml").write_text(
        f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {d / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\nauth: {{htpasswd: {{realm: fleet, path: {d / 'htpasswd'}}}}}\n")
    yield from serving(["docker-registry", "serve", str(d / "registry.yml")], f"127.0.0.1:{port}",
                       d / "registry.log", auth=True)


def serving(argv: list[str], address: str, log_path: Path, auth: bool) -> Iterator[str]:
    """Run a registry (`argv`), yield its address once `/v2/` answers (401 with `auth`), stop it by PID at the end."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            try:
                direct.open(f"http://{address}/v2/", timeout=1).read()
                assert not auth, "the registry did not ask for credentials"
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 401 and auth, exc  # up, and asking for credentials
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(log_path.read_text()[-500:]) from None
                time.sleep(0.1)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def ctrd() -> Iterator[tuple[Containerd, CtrDriver]]:
    if reason := available():
        pytest.skip(reason)
    with local_containerd() as c:
        yield c, CtrDriver(namespace=c.namespace, address=c.address, log_dir=str(c.dir / "logs"),
                           logger=str(c.dir / "logger"))


@pytest.mark.lab
def test_pull_with_the_password_on_stdin_and_a_wrong_one_refused(registry: str, ctrd: tuple[Containerd, CtrDriver],
                                                                 tmp_path: Path):
    c, d = ctrd
    archive = build_demo("reg1", tmp_path / "demo.tar")
    ref = f"{registry}/demo:reg1"
    c.sh(d.image_import(archive.path).line(), stdin_path=archive.path)
    c.ctr("images", "tag", archive.name, ref)
    c.ctr("images", "push", "--user", f"alice:{PASSWORD}", ref)  # the test's own push, argv is fine here
    c.ctr("images", "rm", ref, archive.name)

    def pull(password: str) -> tuple[CommandResult, str]:
        call = d.image_pull_login(ref, "alice")
        (tmp_path / "stdin").write_text(password + "\n")
        proc = c.sh(call.line(), stdin_path=str(tmp_path / "stdin"))
        return CommandResult("local", proc.returncode, proc.stdout, proc.stderr, 0.0), call.line()

    wrong, line = pull("not-" + PASSWORD)
    with pytest.raises(RuntimeCommandError, match="401 Unauthorized"):
        parse_login_pull(wrong)
    assert ref not in c.ctr("images", "ls", "-q").stdout.split()
    right, line = pull(PASSWORD)
    parse_login_pull(right)
    assert ref in c.ctr("images", "ls", "-q").stdout.split()
    for seen in (wrong.stdout, wrong.stderr, right.stdout, right.stderr, line):
        assert PASSWORD not in seen and "not-s3cret" not in seen

    # The tag resolved from here to the digest the push gave it, and a node pulls that digest by name.
    login = RegistryLogin(registry, "alice", "regpass")
    digest = resolve_digest(ref, login, PASSWORD, plain=False)  # loopback: plain HTTP, as containerd does
    assert digest == archive.digest
    with pytest.raises(DigestError, match=f"registry {registry} refused the credentials as alice"):
        resolve_digest(ref, login, "not-" + PASSWORD, plain=False)
    with pytest.raises(DigestError, match="asks for credentials"):
        resolve_digest(ref, None, None, plain=False)
    with pytest.raises(DigestError, match="has no such tag"):
        resolve_digest(f"{registry}/demo:nope", login, PASSWORD, plain=False)
    pinned = f"{ref}@{digest}"
    call = d.image_pull_login(pinned, "alice")
    proc = c.sh(call.line(), stdin_path=str(tmp_path / "stdin"))
    parse_login_pull(CommandResult("local", proc.returncode, proc.stdout, proc.stderr, 0.0))
    assert c.ctr("images", "ls", "-q", f"name=={pinned}").stdout.split() == [pinned]


def test_inventory_registries_give_every_node_the_login_and_survive_the_cache(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    from fleet.config.inventory import load_inventory
    from fleet.core.errors import InventoryError
    from fleet.core.model import RegistryLogin

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    inv = tmp_path / "inventory.yaml"
    inv.write_text("nodes:\n  n1: {address: 10.0.0.1}\n  n2: {address: 10.0.0.2, insecure_registries: [other:5000]}\n"
                   "registries:\n  10.0.0.9:5000: {username: alice, password: {secret: regpass}, insecure: true}\n")
    for _ in range(2):  # validated, then read back from the cache
        nodes = load_inventory(str(inv)).nodes
        assert [n.login_for("10.0.0.9:5000") for n in nodes] == [RegistryLogin("10.0.0.9:5000", "alice", "regpass")] * 2
        assert [n.insecure_registries for n in nodes] == [("10.0.0.9:5000",), ("other:5000", "10.0.0.9:5000")]
        assert nodes[0].login_for("docker.io") is None
    inv.write_text("nodes:\n  n1: {address: 10.0.0.1}\nregistries:\n  r:5000: {username: 'a:b', password: hunter2}\n")
    with pytest.raises(InventoryError) as exc:
        load_inventory(str(inv))
    text = str(exc.value)
    assert "inventory.yaml:4: registries.r:5000.username: expected a registry user name" in text
    assert "inventory.yaml:4: registries.r:5000.password" in text and "hunter2" not in text


def _rev(service: str, n: int, image: str, digest: str | None = None) -> Revision:
    spec = {"image": image, **({"image_digest": digest} if digest else {})}
    return Revision(service, n, "h", image, "u", 0.0, None, "succeeded", "", json.dumps(spec))


def test_retention_keeps_the_last_revisions_the_accepted_one_and_what_containers_use():
    d = ["sha256:" + c * 64 for c in "abcd"]
    history = {
        "web": [_rev("web", i + 1, "r.io/web:v1", d[i]) for i in range(4)],  # one tag, re-pushed: four digests
        "api": [_rev("api", 1, "fleet.local/api:v1"), _rev("api", 2, "fleet.local/api:v2")],
        "old": [_rev("old", 1, "r.io/web:v1", d[1])],  # another service still on an old digest: kept
    }
    plan = retained(history, {"web": 4, "api": 1, "old": 1}, keep=2)
    assert plan.old == {f"r.io/web:v1@{d[0]}"}
    assert plan.kept == {f"r.io/web:v1@{d[1]}", f"r.io/web:v1@{d[2]}", f"r.io/web:v1@{d[3]}", "fleet.local/api:v1",
                         "fleet.local/api:v2"}
    node = {f"r.io/web:v1@{d[0]}": d[0], f"r.io/web:v1@{d[3]}": d[3], "fleet.local/next:v9": "sha256:9",
            "busybox:latest": "sha256:8"}
    assert removable(node, set(), plan) == [f"r.io/web:v1@{d[0]}"]
    # Never an image a container on the node was made from, nor one fleet never ran (pushed for the next apply).
    assert removable(node, {f"r.io/web:v1@{d[0]}"}, plan) == []
    assert retained(history, {"web": 4, "api": 2, "old": 1}, keep=1).old == {
        f"r.io/web:v1@{d[0]}", f"r.io/web:v1@{d[2]}", "fleet.local/api:v1"}


async def test_a_pinned_service_runs_its_digest_and_deploy_of_another_image_drops_it():
    from harness import Harness, service, worker

    h = Harness([worker("w1")])
    digest = "sha256:" + "e" * 64
    pinned_spec = replace(service("web", 2, cpu=0.25, image="r.io/web:v1"), image_digest=digest)
    assert (await h.apply(pinned_spec)).ok
    assert {r.image for r in h.ops.of("web")} == {f"r.io/web:v1@{digest}"}
    _, result = await h.fresh_engine().turn("deploy", "web", image="r.io/web:v2")
    assert result.ok and {r.image for r in h.ops.of("web")} == {"r.io/web:v2"}
