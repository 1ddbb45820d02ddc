"""Playbook loading: resolved values, defaults, every problem with file:line: field, hostile input refused."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.config.spec import (
    HealthSpec,
    SecretRef,
    ServiceSpec,
    from_playbook_dict,
    load_playbook_files,
    load_playbooks,
    parse_duration,
    parse_playbook,
    playbook_files,
    to_playbook_dict,
)
from fleet.core.errors import SpecError
from fleet.core.model import Resources

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def problems_of(paths: list[str]) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_playbooks(paths)
    return [str(p) for p in info.value.problems]


def one(text: str) -> ServiceSpec:
    services = parse_playbook(textwrap.dedent(text), "t.yaml").services
    assert len(services) == 1
    return services[0]


def test_demo_playbook_loads_with_resolved_values() -> None:
    services = {s.name: s for s in load_playbooks([str(REPO / "playbooks")])}
    web, api = services["web"], services["api"]
    assert web.image == api.image == "fleet.local/demo:v1"
    assert web.replicas == 4 and api.replicas == 2
    assert web.resources == Resources(cpu=0.1, memory=32 * MiB)
    assert web.health is not None and web.health.kind == "http" and web.health.path == "/healthz"
    assert web.lb is not None and web.lb.port == 8080 and web.lb.mode == "http" and web.lb.balance == "roundrobin"
    assert web.placement.spread_by == "zone"
    assert api.lb is not None and api.lb.port == 8081
    assert "GREETING" in api.env and isinstance(api.env["GREETING"], str)
    assert web.source_file.endswith("playbooks/demo.yaml") and web.source_line == 3


def test_defaults_are_resolved_to_plain_values() -> None:
    s = one("""
        services:
          web:
            image: busybox
    """)
    assert (s.replicas, s.port, s.command, s.health, s.lb, s.volumes) == (1, 8080, None, None, None, ())
    assert s.resources == Resources(0.1, 64 * MiB)
    assert s.stop_grace_period == 10.0
    assert (s.update.strategy, s.update.max_surge, s.update.max_unavailable, s.update.batch_size) == (
        "rolling", 1, 0, 1)
    assert (s.update.ready_deadline, s.update.min_ready, s.update.canary) == (60.0, 2.0, None)
    assert s.placement.strategy == "spread" and dict(s.placement.require) == {}


def test_full_service_resolves_units_and_health() -> None:
    s = one("""
        services:
          api:
            image: 127.0.0.1:5000/team/api:v2
            command: [/bin/api, --listen, "0.0.0.0"]
            replicas: 0
            resources: {cpu: 500m, memory: 1.5GiB}
            port: 9000
            env: {A: "1", N: 42, TOKEN: {secret: api-token}}
            health: {exec: [/bin/check, --quick], interval: 500ms, timeout: 250ms, failure_threshold: 5,
                     success_threshold: 2, start_period: 1m30s}
            placement: {require: {zone: a, ssd: true}, strategy: pack}
            lb: {port: 9443, mode: tcp, balance: leastconn}
            volumes:
              - {type: bind, source: /srv/data, target: /data, readonly: true}
              - {type: tmpfs, target: /scratch, size: 8MiB}
              - {type: volume, source: api-cache, target: /cache}
            stop_grace_period: 30s
            update:
              strategy: canary
              max_surge: 2
              canary: {steps: [5, 25, 50], pause: 10s, auto_promote: false, max_error_rate_delta: 0.5}
    """)
    assert s.command == ("/bin/api", "--listen", "0.0.0.0")
    assert s.resources == Resources(0.5, int(1.5 * 1024 * MiB))
    assert dict(s.env) == {"A": "1", "N": "42", "TOKEN": SecretRef("api-token")}
    assert s.secret_names() == ("api-token",)
    assert s.health == HealthSpec("exec", None, ("/bin/check", "--quick"), 0.5, 0.25, 5, 2, 90.0)
    assert dict(s.placement.require) == {"zone": "a", "ssd": "true"} and s.placement.strategy == "pack"
    assert [(v.type, v.source, v.target, v.readonly, v.size) for v in s.volumes] == [
        ("bind", "/srv/data", "/data", True, None), ("tmpfs", None, "/scratch", False, 8 * MiB),
        ("volume", "api-cache", "/cache", False, None)]
    assert s.stop_grace_period == 30.0
    assert s.update.batch_size == 2
    assert s.update.canary is not None
    assert (s.update.canary.steps, s.update.canary.pause, s.update.canary.auto_promote) == ((5, 25, 50), 10.0, False)


def test_bad_playbook_lists_every_problem_with_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", """
        services:
          web:
            image: fleet.local/demo:v1
            replicas: three
            resources: {cpu: lots, memory: 12 parsecs}
            health:
              http: /healthz
              interval: soon
            lb: {port: 8080, mode: udp}
            bogus: 1
            env:
              GOOD: x
              "BAD NAME": y
              FLAG: yes
            volumes:
              - {type: bind, target: /data}
          api:
            lb: {port: 70000}
    """)
    assert problems_of([path]) == [
        f"{path}:4: services.web.replicas: expected an integer, got 'three'",
        f"{path}:5: services.web.resources.cpu: expected a CPU amount such as 0.5 or 500m, got 'lots'",
        f"{path}:5: services.web.resources.memory: expected a memory size such as 512MiB or 2GiB, got '12 parsecs'",
        f"{path}:8: services.web.health.interval: expected a duration such as 2s, 500ms or 1m, got 'soon'",
        f"{path}:9: services.web.lb.mode: expected 'http' or 'tcp', got 'udp'",
        f"{path}:10: services.web.bogus: unknown field (did you mean 'logs'?)",
        f"{path}:13: services.web.env.BAD NAME: invalid variable name 'BAD NAME' (letters, digits, _)",
        f"{path}:14: services.web.env.FLAG: expected a string, got True (quote it)",
        f"{path}:16: services.web.volumes[0]: a bind volume needs source: /host/path",
        f"{path}:17: services.api.image: required field is missing",
        f"{path}:18: services.api.lb.port: expected a port number from 1 to 65535, got 70000",
    ]


@pytest.mark.parametrize(("name", "bad"), [
    ("Web", "uppercase"), ("web_1", "underscore"), ("1web", "digit first"), ("a" * 32, "too long"),
    ("web\n    bind 0.0.0.0:1", "newline"), ("web 1", "space"), ("web#1", "hash"), ("we'b", "quote"),
])
def test_hostile_service_names_are_refused(tmp_path: Path, name: str, bad: str) -> None:
    path = write(tmp_path, "h.yaml", f"services:\n  {json.dumps(name)}:\n    image: busybox\n")
    problems = problems_of([path])
    assert len(problems) == 1, bad
    assert problems[0].startswith(f"{path}:2: services.") and "invalid service name" in problems[0]


@pytest.mark.parametrize("path", [
    "/healthz\n    bind 0.0.0.0:1", "/health z", "/healthz#x", '/he"alth', "/he'alth", "healthz", "/a\r\nX: y",
    "/a\\b", "/${HOME}", "/%zz", "",
])
def test_hostile_health_paths_are_refused(path: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_playbook(f"services:\n  web:\n    image: busybox\n    health: {{http: {json.dumps(path)}}}\n", "t.yaml")
    assert [p.field for p in info.value.problems] == ["services.web.health.http"]


@pytest.mark.parametrize("path", ["/healthz", "/", "/a/b-c_d.e~f", "/status?full=1&x=%20y", "/api/v1:ping"])
def test_ordinary_health_paths_are_accepted(path: str) -> None:
    s = one(f"services:\n  web:\n    image: busybox\n    health: {{http: {json.dumps(path)}}}\n")
    assert s.health is not None and s.health.path == path


@pytest.mark.parametrize(("snippet", "field", "fragment"), [
    ("health: {http: /h, tcp: true}", "services.web.health", "exactly one of"),
    ("health: {interval: 1s}", "services.web.health", "exactly one of"),
    ("placement: {require: {'bad key!': a}}", "services.web.placement.require", "invalid label key"),
    ("placement: {require: {zone: 'a b'}}", "services.web.placement.require", "invalid value"),
    ("volumes: [{type: tmpfs, source: /x, target: /t}]", "services.web.volumes[0]", "takes no source"),
    ("volumes: [{type: bind, source: '/a,b', target: /t}]", "services.web.volumes[0]", "absolute path"),
    ("volumes: [{type: bind, source: /a/../etc, target: /t}]", "services.web.volumes[0]", "absolute path"),
    ("volumes: [{type: volume, source: /abs, target: /t}]", "services.web.volumes[0]", "named volume"),
    ("volumes: [{type: tmpfs, target: /t}, {type: tmpfs, target: /t}]", "services.web.volumes", "two volumes"),
    ("update: {max_surge: 0}", "services.web.update", "cannot both be 0"),
    ("update: {canary: {steps: [10]}}", "services.web.update", "need strategy: canary"),
    ("update: {strategy: canary}", "services.web", "needs lb"),
    ("update: {strategy: canary, canary: {steps: [50, 10]}}", "services.web.update.canary.steps", "increase"),
    ("env: {PORT: '80'}", "services.web.env.PORT", "reserved"),
    ("env: {S: {secret: 'a b'}}", "services.web.env.S", "{secret: NAME}"),
    ("command: []", "services.web.command", "non-empty"),
    ("resources: {cpu: 0}", "services.web.resources.cpu", "more than 0"),
    ("replicas: -1", "services.web.replicas", "greater than or equal to 0"),
    ("replicas: 2.5", "services.web.replicas", "expected an integer"),
    ("stop_grace_period: -1s", "services.web.stop_grace_period", "duration"),
])
def test_invalid_fields_are_named(snippet: str, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_playbook(f"services:\n  web:\n    image: busybox\n    {snippet}\n", "t.yaml")
    assert [(p.field, fragment in p.message) for p in info.value.problems] == [(field, True)], info.value


def test_bad_image_reference_is_refused() -> None:
    with pytest.raises(SpecError, match=r"t.yaml:3: services.web.image: expected an image reference"):
        parse_playbook("services:\n  web:\n    image: 'busybox; rm -rf /'\n", "t.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "services:\n  web:\n    image: [unclosed\n")
    problems = problems_of([path])
    assert len(problems) == 1 and problems[0].startswith(f"{path}:") and "invalid YAML" in problems[0]


def test_duplicate_service_names_and_lb_ports_across_files_name_both_places(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", """
        services:
          web: {image: busybox, lb: {port: 80}}
    """)
    b = write(tmp_path, "b.yml", """
        services:
          other: {image: busybox}
          web: {image: busybox}
          api: {image: busybox, lb: {port: 80}}
    """)
    assert problems_of([str(tmp_path)]) == [
        f"{b}:3: services.web: service 'web' is already defined at {a}:2",
        f"{b}:4: services.api.lb.port: lb port 80 is already used by service 'web' at {a}:2",
    ]


def test_problems_from_several_files_are_reported_together(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "services:\n  web: {image: busybox, replicas: x}\n")
    b = write(tmp_path, "b.yaml", "nodes: {}\n")
    assert problems_of([a, b]) == [
        f"{a}:2: services.web.replicas: expected an integer, got 'x'",
        f"{b}:1: expected a mapping with `services:` and/or `jobs:`",
    ]


def test_directories_expand_to_sorted_yaml_files(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "services:\n  b: {image: busybox}\n")
    write(tmp_path, "a.yaml", "services:\n  a: {image: busybox}\n  c: {image: busybox}\n")
    write(tmp_path, "notes.txt", "not yaml")
    assert [Path(p).name for p in playbook_files([str(tmp_path)])] == ["a.yaml", "b.yml"]
    assert [s.name for s in load_playbooks([str(tmp_path)])] == ["a", "c", "b"]
    books = load_playbook_files([str(tmp_path)])
    assert books[0].line_of("c") == 3 and books[1].line_of("b") == 2


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    assert problems_of([str(tmp_path)]) == [f"{tmp_path}: no playbook files (*.yaml, *.yml) found"]


BASE = """
services:
  web:
    image: fleet.local/demo:v1
    replicas: 2
    env: {A: "1", TOKEN: {secret: tok}}
    lb: {port: 8080}
"""


@pytest.mark.parametrize(("old", "new"), [
    ("replicas: 2", "replicas: 5"),
    ("lb: {port: 8080}", "lb: {port: 9090, balance: leastconn}"),
    ("replicas: 2", "placement: {spread_by: zone}"),
    ("replicas: 2", "update: {max_surge: 3}"),
    ("replicas: 2", "stop_grace_period: 1m"),
    ("replicas: 2", "health: {http: /healthz}"),
])
def test_spec_hash_ignores_changes_that_need_no_new_container(old: str, new: str) -> None:
    assert one(BASE).spec_hash() == one(BASE.replace(old, new)).spec_hash()


@pytest.mark.parametrize(("old", "new"), [
    ("demo:v1", "demo:v2"),
    ('A: "1"', 'A: "2"'),
    ("secret: tok", "secret: tok2"),
    ("replicas: 2", "command: [/bin/sh]"),
    ("replicas: 2", "resources: {memory: 128MiB}"),
    ("replicas: 2", "port: 9000"),
    ("replicas: 2", "volumes: [{type: tmpfs, target: /t}]"),
    ("replicas: 2", "health: {exec: [/bin/true]}"),
])
def test_spec_hash_changes_when_the_container_must_change(old: str, new: str) -> None:
    assert one(BASE).spec_hash() != one(BASE.replace(old, new)).spec_hash()


def test_spec_hash_is_stable_and_hashes_secret_names_not_values() -> None:
    s = one(BASE)
    assert s.spec_hash() == one(BASE).spec_hash()
    assert len(s.spec_hash()) == 64
    assert s.hash_input()["env"] == {"A": "1", "TOKEN": {"secret": "tok"}}
    plain = one(BASE.replace("{secret: tok}", "tok"))
    assert plain.spec_hash() != s.spec_hash()
    assert "SecretRef" not in json.dumps(s.hash_input())


def test_secret_ref_repr_shows_only_the_name() -> None:
    assert repr(SecretRef("db-pass")) == "SecretRef('db-pass')"


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1m30s", 90.0), ("1h", 3600.0), ("0s", 0.0), (3, 3.0), (0.25, 0.25),
])
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "2", "s", "2 s", "2x", "-1s", "1s2", True, None, [1]])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(0, 1439), st.integers(0, 59), st.integers(0, 999))
def test_duration_parts_add_up_to_exact_milliseconds(minutes: int, seconds: int, millis: int) -> None:
    text = f"{minutes}m{seconds}s{millis}ms"
    assert parse_duration(text) == (minutes * 60_000 + seconds * 1000 + millis) / 1000


# ---- any valid spec round-trips through the revision history ----------------------------------------------

def _duration(low_ms: int = 0) -> st.SearchStrategy[object]:
    """A duration of 0-24 h in whole milliseconds, written any way a user may write it."""
    def spell(ms: int) -> st.SearchStrategy[object]:
        return st.sampled_from([
            f"{ms}ms", ms / 1000, f"{ms / 1000}s", f"{ms // 60_000}m{(ms % 60_000) / 1000}s",
            f"{ms // 3_600_000}h{(ms % 3_600_000) // 1000}s{ms % 1000}ms",
            *([ms // 1000, f"{ms // 1000}s"] if ms % 1000 == 0 else []),
        ])
    return st.integers(low_ms, 86_400_000).flatmap(spell)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
_LABEL_KEY = st.from_regex(r"[a-z][a-z0-9._/-]{0,10}", fullmatch=True)
_LABEL_VALUE = st.from_regex(r"[A-Za-z0-9._:@+-]{0,10}", fullmatch=True)
_TARGET = st.from_regex(r"/(srv|data|cache|var/x|opt)(/[a-z0-9_@+-]{1,8}){0,2}", fullmatch=True)


@st.composite
def _service(draw: st.DrawFn) -> dict[str, object]:
    body: dict[str, object] = {
        "image": draw(st.sampled_from(["busybox", "fleet.local/demo:v1", "127.0.0.1:5000/team/api:v2",
                                       "busybox@sha256:" + "a" * 64])),
        "replicas": draw(st.integers(0, 10_000)),
        "port": draw(st.integers(1, 65535)),
        "stop_grace_period": draw(_duration()),
    }
    if draw(st.booleans()):
        body["command"] = draw(st.lists(_TEXT, min_size=1, max_size=3))
    millicores = draw(st.integers(1, 1_024_000))
    body["resources"] = {
        "cpu": draw(st.sampled_from([millicores / 1000, f"{millicores}m", str(millicores / 1000)])),
        "memory": draw(st.one_of(st.integers(2**20, 2**50), st.integers(1, 2**20).map(lambda n: f"{n}MiB"),
                                 st.sampled_from(["1.5GiB", "512Mi", "2G", "64k" * 0 + "128MiB"]))),
    }
    body["env"] = draw(st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k != "PORT"),
        st.one_of(_TEXT, st.integers(-10**6, 10**6),
                  st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True).map(lambda n: {"secret": n})),
        max_size=4))
    kind = draw(st.sampled_from(["none", "http", "tcp", "exec"]))
    if kind != "none":
        health: dict[str, object] = {
            "http": {"http": draw(st.from_regex(r"/[a-z0-9._~-]{0,10}(\?[a-z=&]{0,6})?", fullmatch=True))},
            "tcp": {"tcp": True}, "exec": {"exec": draw(st.lists(_TEXT, min_size=1, max_size=2))},
        }[kind]
        for key, low in (("interval", 1), ("timeout", 1), ("start_period", 0)):
            if draw(st.booleans()):
                health[key] = draw(_duration(low))
        health["failure_threshold"] = draw(st.integers(1, 100))
        health["success_threshold"] = draw(st.integers(1, 100))
        body["health"] = health
    body["placement"] = {"require": draw(st.dictionaries(_LABEL_KEY, _LABEL_VALUE, max_size=2)),
                         "strategy": draw(st.sampled_from(["spread", "pack"]))}
    if draw(st.booleans()):
        body["placement"]["spread_by"] = draw(_LABEL_KEY)  # type: ignore[index]
    lb = draw(st.booleans())
    if lb:
        body["lb"] = {"port": draw(st.integers(1, 65535).filter(lambda p: p != 8404)),
                      "mode": draw(st.sampled_from(["http", "tcp"])),
                      "balance": draw(st.sampled_from(["roundrobin", "leastconn", "source", "random"]))}
    targets = draw(st.lists(_TARGET, max_size=3, unique=True))
    volumes = []
    for target in targets:
        vtype = draw(st.sampled_from(["bind", "tmpfs", "volume"]))
        vol: dict[str, object] = {"type": vtype, "target": target, "readonly": draw(st.booleans())}
        if vtype == "bind":
            vol["source"] = draw(_TARGET)
        elif vtype == "volume":
            vol["source"] = draw(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,10}", fullmatch=True))
        elif draw(st.booleans()):
            vol["size"] = draw(st.integers(2**20, 2**40))
        volumes.append(vol)
    body["volumes"] = volumes
    surge, unavailable = draw(st.tuples(st.integers(0, 5), st.integers(0, 5)).filter(lambda t: t != (0, 0)))
    update: dict[str, object] = {"max_surge": surge, "max_unavailable": unavailable,
                                 "ready_deadline": draw(_duration(1)), "min_ready": draw(_duration())}
    if draw(st.booleans()):
        update["batch_size"] = draw(st.integers(1, 10))
    if lb and draw(st.booleans()):
        update["strategy"] = "canary"
        update["canary"] = {
            "steps": sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=4))),
            "pause": draw(_duration()), "auto_promote": draw(st.booleans()),
            "max_error_rate_delta": draw(st.one_of(st.integers(0, 100), st.floats(0, 100))),
        }
    body["update"] = update
    return body


@given(st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True), _service())
def test_any_valid_spec_round_trips_through_the_history_to_an_equal_spec_and_hash(name: str,
                                                                                   body: dict[str, object]) -> None:
    import yaml

    text = yaml.safe_dump({"services": {name: body}}, allow_unicode=bool(len(name) % 2))
    spec = parse_playbook(text, "p.yaml").services[0]
    stored = json.loads(json.dumps(to_playbook_dict(spec), sort_keys=True))  # as the history keeps it
    back = from_playbook_dict(name, stored)
    assert back == spec
    assert back.spec_hash() == spec.spec_hash()
    assert to_playbook_dict(back) == to_playbook_dict(spec)


def test_a_directory_that_cannot_be_listed_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: str) -> list[str]:  # root reads every directory here: the refusal is simulated
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("fleet.config.spec.loading.os.listdir", denied)
    assert problems_of([str(tmp_path)]) == [f"{tmp_path}: cannot list playbooks: Permission denied"]
