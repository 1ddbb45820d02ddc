"""etcd as values (fleet.node.etcd): the member's config, the exact commands, and the parsers on recorded output."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from fleet.core.errors import ScriptOutputError
from fleet.node import etcd as E

DATA = Path(__file__).parent / "data" / "etcd"
RECORDED = sorted(DATA.glob("*.json"))


def _plain(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def test_recordings_cover_every_parser() -> None:
    used = {json.loads(p.read_text())["parser"] for p in RECORDED}
    assert used == {"parse_txn", "parse_get", "parse_lease_grant", "parse_keepalive", "parse_timetolive",
                    "parse_member_list", "parse_watch_line", "error_line", "parse_member_add", "parse_member_promote",
                    "parse_endpoint_status"}


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_parser_reads_recorded_output(path: Path) -> None:
    doc: dict[str, Any] = json.loads(path.read_text())
    assert doc["source"].startswith("recorded by")
    parser = getattr(E, doc["parser"])
    text = doc["stderr"] if doc["parser"] == "error_line" else doc["stdout"]
    assert _plain(parser(text)) == doc["expect"]
    # The recorded command is the builder's, so what the tests read is what fleet runs.
    if doc["parser"] == "parse_watch_line":
        # Each line of a watch is parsed on its own; a canceled one (compacted) ends it.
        assert doc["stdout"].count("\n") == 1
    start = doc["argv"].index("etcdctl")
    # promote alone is `-w simple`: etcdctl 3.4 has no JSON printer for it.
    output = "simple" if "promote" in doc["argv"] else "json"
    assert doc["argv"][start:start + 5] == ["etcdctl", "--endpoints=127.0.0.1:2379", "--command-timeout=5s", "-w",
                                            output]


def _load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return result


def test_txn_value_with_quotes_newline_and_unicode_round_trips() -> None:
    take = _load("txn_take")
    # The value went in through txn's stdin, Go-quoted; the get of the held branch shows it came back intact.
    put_line = take["stdin"].split("\n")[2]
    value = json.loads(put_line.split(" ", 3)[3])
    held = E.parse_txn(_load("txn_held")["stdout"])
    assert held.succeeded is False
    first = held.responses[0]
    assert isinstance(first, E.Range)
    assert first.kvs[0].value == value
    assert json.loads(value)["command"] == "fleet apply\nweb é ✓"


def test_lease_gone_is_an_error_not_json() -> None:
    gone = _load("keepalive_gone")
    assert gone["exit_status"] != 0 and gone["stdout"] == ""
    assert E.LEASE_GONE in E.error_line(gone["stderr"])
    assert E.parse_timetolive(_load("timetolive_gone")["stdout"]).alive is False
    assert E.parse_timetolive(_load("timetolive")["stdout"]).alive is True


def test_put_lease_is_hex_and_values_never_in_argv() -> None:
    assert E.Put("/k", "v", 255).line() == 'put --lease=ff "/k" "v"'
    assert shlex.join(E.txn_argv()) == ("timeout -k 1 5 etcdctl --endpoints=127.0.0.1:2379 --command-timeout=5s "
                                        "-w json txn")
    stdin = E.txn_input([E.Compare("create", "/fleet/lock", 7)], [E.Put("/a", 'x"\n\\')], [E.Get("/a", True)])
    assert stdin == 'create("/fleet/lock") = "7"\n\nput "/a" "x\\"\\n\\\\"\n\nget --prefix "/a"\n\n'


def test_get_argv_ends_options_before_the_key() -> None:
    assert E.get_argv("/fleet/events/", prefix=True, by_create=True, at=E.Endpoint(3000))[-6:] == [
        "get", "--prefix", "--sort-by=CREATE", "--order=ASCEND", "--", "/fleet/events/"]


@pytest.mark.parametrize("key", ["", " /a", '/a"b', "/a\\b", "/a\nb"])
def test_unsafe_keys_refused(key: str) -> None:
    with pytest.raises(ValueError, match="etcd key"):
        E.get_argv(key)


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"header": {}}', '{"header": {"revision": 1}, "kvs": 3}',
                                  '{"header": {"revision": 1}, "kvs": [{"key": "!!", "value": ""}]}'])
def test_parse_get_refuses_foreign_output(text: str) -> None:
    with pytest.raises(ValueError):
        E.parse_get(text)


def test_config_clients_on_loopback_peers_mutual_tls() -> None:
    members = (E.Member("lb1", "10.0.0.1"), E.Member("lb2", "10.0.0.2"), E.Member("w1", "10.0.0.3"))
    cfg = E.MemberConfig(members[1], members, cluster_token="fleet-abc")
    doc = json.loads(E.render_config(cfg))
    assert doc["listen-client-urls"] == doc["advertise-client-urls"] == "http://127.0.0.1:2379"
    assert doc["listen-peer-urls"] == "https://10.0.0.2:2380"
    assert doc["initial-cluster"] == ("lb1=https://10.0.0.1:2380,lb2=https://10.0.0.2:2380,"
                                      "w1=https://10.0.0.3:2380")
    assert doc["data-dir"] == "/var/lib/fleet/etcd/data"
    assert doc["enable-grpc-gateway"] is True  # off otherwise when etcd reads a config file
    tls = doc["peer-transport-security"]
    assert tls["client-cert-auth"] is True
    assert tls["trusted-ca-file"] == "/var/lib/fleet/etcd/pki/ca.crt"


def test_config_refuses_a_member_outside_the_cluster() -> None:
    with pytest.raises(ValueError, match="not among"):
        E.MemberConfig(E.Member("x", "10.0.0.9"), (E.Member("lb1", "10.0.0.1"),), cluster_token="t")
    with pytest.raises(ValueError, match="member name"):
        E.Member("a b", "10.0.0.1")


def test_start_script_carries_paths_in_env_not_text() -> None:
    cfg = E.MemberConfig(E.Member("n1", "10.0.0.1"), (E.Member("n1", "10.0.0.1"),), cluster_token="t")
    script = E.start_script(cfg, size=120)
    assert script.env["CFG"] == "/var/lib/fleet/etcd/etcd.conf.yml"
    assert script.env["EP"] == "127.0.0.1:2379"
    assert "setsid etcd --config-file" in script.text


def test_parse_start_outcomes() -> None:
    state = E.parse_start("@@fleet pid 42\n@@fleet log\nline one\n@@fleet result started\n")
    assert state == E.MemberState("started", 42, "line one") and state.running
    assert E.parse_start("@@fleet result stopped\n").running is False
    assert E.parse_start("@@fleet result not-running\n").running is False
    assert E.parse_start("@@fleet result killed\n").result == "killed"
    with pytest.raises(ScriptOutputError):
        E.parse_start("@@fleet result exploded\n")


def test_watch_argv_refuses_a_prefix_that_looks_like_a_flag() -> None:
    assert E.watch_argv("/fleet/", 7)[-4:] == ["watch", "--prefix", "--rev=7", "/fleet/"]
    with pytest.raises(ValueError, match="starting with '/'"):
        E.watch_argv("-x", 1)
    with pytest.raises(ValueError, match="revision"):
        E.watch_argv("/fleet/", 0)


def test_member_commands_exact_argv() -> None:
    new = E.Member("n4", "10.0.0.4")
    assert shlex.join(E.member_add_argv(new)) == (
        "etcdctl --endpoints=127.0.0.1:2379 --command-timeout=5s -w json member add n4 --learner "
        "--peer-urls=https://10.0.0.4:2380")
    assert E.member_add_argv(new, learner=False)[-2:] == ["n4", "--peer-urls=https://10.0.0.4:2380"]
    # Member IDs are decimal in JSON, hex on the command line, and may use all 64 bits.
    assert E.member_remove_argv(17936463364390793090)[-3:] == ["member", "remove", "f8eb1e6601522f82"]
    assert shlex.join(E.member_promote_argv(255)) == (
        "etcdctl --endpoints=127.0.0.1:2379 --command-timeout=5s -w simple member promote ff")
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="member id"):
            E.member_remove_argv(bad)


def test_a_member_added_but_not_started_has_no_name_and_is_a_learner() -> None:
    added = E.parse_member_add(_load("member_add_learner")["stdout"])
    assert added.member.name == "" and added.member.is_learner and added.member.client_urls == ()
    assert added.member in added.members
    pending = E.parse_member_list(_load("member_list_pending")["stdout"])
    assert [m.is_learner for m in pending].count(True) == 1
    after = E.parse_member_list(_load("member_list_four")["stdout"])
    joined = next(m for m in after if m.id == added.member.id)
    # Once started it has its name, and once promoted it votes.
    assert joined.name == "rec3" and not joined.is_learner
    assert E.parse_member_promote(_load("member_promote")["stdout"]) == added.member.id


def test_membership_refusals_read_as_one_line() -> None:
    assert E.error_line(_load("member_promote_behind")["stderr"]) == (
        "Error: etcdserver: can only promote a learner member which is in sync with leader")
    assert E.error_line(_load("member_remove_gone")["stderr"]) == "Error: etcdserver: member not found"
    with pytest.raises(ValueError, match="promoted in cluster"):
        E.parse_member_promote("panic: runtime error")


def test_a_promoted_member_id_of_fewer_than_16_digits_is_read() -> None:
    # etcdctl 3.4 prints the IDs with `%16x`: this line, padded, was printed in a lab run (and refused then).
    assert E.parse_member_promote("Member  fbc4e3e147f30cf promoted in cluster 758496a5f07aab73\n") == 0xfbc4e3e147f30cf


def test_endpoint_status_names_the_leader() -> None:
    [status] = E.parse_endpoint_status(_load("endpoint_status")["stdout"])
    assert status.leader == status.member_id and not status.is_learner
    [learner] = E.parse_endpoint_status(_load("endpoint_status_learner")["stdout"])
    assert learner.is_learner and learner.leader not in (0, learner.member_id)
    with pytest.raises(ValueError, match="JSON list"):
        E.parse_endpoint_status("{}")


def test_retire_script_moves_the_data_dir_aside() -> None:
    cfg = E.MemberConfig(E.Member("n1", "10.0.0.1"), (E.Member("n1", "10.0.0.1"),), cluster_token="t")
    script = E.retire_script(cfg)
    assert script.env["DATA"] == "/var/lib/fleet/etcd/data"
    assert 'mv "$DATA" "$to"' in script.text
    assert E.parse_retire("@@fleet stopped killed\n@@fleet moved /d.removed-1\n@@fleet result retired\n") == (
        "killed", "/d.removed-1")
    assert E.parse_retire("@@fleet stopped not-running\n@@fleet result retired\n") == ("not-running", None)
    with pytest.raises(ScriptOutputError):
        E.parse_retire("@@fleet result stopped\n")
