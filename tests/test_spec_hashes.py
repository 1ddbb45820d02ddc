"""Pinned hashes of service specs: `spec_hash` (which replicas run which version), the intent and revision keys
and the recorded JSON must never change for an unchanged spec, or an upgrade of fleet would roll every service
of every fleet. The literals were computed on the code before the spec schema was reorganised."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from fleet.config.spec import (
    ServiceSpec,
    from_playbook_dict,
    load_playbooks,
    parse_playbook,
    to_playbook_dict,
    with_secret_digests,
)
from fleet.plan.rollout.decide import intent_hash, revision_key

REPO = Path(__file__).resolve().parent.parent

# One service per entry, each setting a different part of the schema; what is not set is the default.
SERVICES = {
    "minimal": """
        image: fleet.local/demo:v1
        """,
    "everything-rolling": """
        image: registry.local:5000/team/app:v2.1@sha256:""" + "ab" * 32 + """
        command: [/bin/app, --serve, "a b", "ü"]
        replicas: 7
        resources: {cpu: 250m, memory: 1.5GiB}
        port: 9000
        env:
          PLAIN: hello
          NUMBER: 42
          FLOAT: 1.5
          TOKEN: {secret: api-token}
          A_FIRST: "z"
        health:
          exec: [/bin/check, --deep]
          interval: 1500ms
          timeout: 0.25s
          failure_threshold: 5
          success_threshold: 2
          start_period: 1m30s
        placement:
          require: {zone: a, ssd: true, rack: 3}
          spread_by: rack
          strategy: pack
        lb: {port: 7000, mode: tcp, balance: leastconn}
        volumes:
          - {type: bind, source: /srv/data, target: /data, readonly: true}
          - {type: tmpfs, target: /scratch, size: 64MiB}
          - {type: volume, source: db-data, target: /var/lib/db, on_node_loss: start-empty}
          - {type: volume, source: cache, target: /cache}
          - {type: sshfs, source: shared, target: /shared, storage: store1}
          - {type: sshfs, source: other, target: /other, readonly: true}
        stop_grace_period: 45s
        update:
          strategy: rolling
          max_surge: 2
          max_unavailable: 1
          batch_size: 3
          ready_deadline: 2m
          min_ready: 0
        configs:
          - {target: /etc/app/app.conf, content: "listen 9000\\n"}
          - {target: /etc/app/extra.ini, content: "[x]\\ny = 1\\n", mode: "0640"}
        secrets:
          - {secret: api-token}
          - {secret: db-password, file: /etc/app/db.pw, mode: "0440"}
        """,
    "canary-hosts": """
        image: fleet.local/shop:v3
        replicas: 3
        health: {http: "/healthz?deep=1", interval: 3s, timeout: 2s}
        lb:
          hosts: [shop.example.test, www.shop.example.test]
          paths: [/api, /v2]
          balance: random
          tls: {secret: shop-tls, redirect: false, hsts: 31536000}
        update:
          strategy: canary
          max_surge: 1
          canary: {steps: [5, 25, 75], pause: 1m, auto_promote: false, max_error_rate_delta: 0.5}
        """,
    "canary-defaults-acme": """
        image: fleet.local/blog:v1
        health: {tcp: true}
        lb: {hosts: [blog.example.test], port: 8090, balance: source, tls: {acme: true}}
        update: {strategy: canary, max_unavailable: 1, max_surge: 0}
        """,
    "http-health-defaults": """
        image: fleet.local/api:v1
        replicas: 0
        health: {http: /}
        placement: {require: {}}
        lb: {port: 8081}
        update: {max_surge: 0, max_unavailable: 2}
        """,
}

# spec_hash, intent_hash, revision_key, sha256 of the recorded JSON (`json.dumps(to_playbook_dict, sort_keys=True)`)
PINNED: dict[str, tuple[str, str, str, str]] = {
    "canary-defaults-acme": (
        "69c5e00217d184652cb1f9f995da0d532df2567751a3f4fac7bb5a4e5903cf17",
        "7ce5e1a9cb0fee1b7e6dde5f8992cdc2456176f2ed86c0b2157045fec985e585",
        "9272dd756b11a740681956d7c8c3d0ade11d1267b8626ef5f40a3a3948528cae",
        "434978e598ec1206c3c7da67870fbe0367c36358b0818412deca47c4e333c09d",
    ),
    "canary-hosts": (
        "42551ff481580e0be3b129657b3aa9261fc532bf773ea0fb4cda81dcbd91a0cd",
        "3c9b71b015a7e92ffe2cf20f09da70e3ee0bee825de8d64d40a773293a7a68ba",
        "cc633f21cbfe55ba311429db23ce75d111e9d291f5e23265f36d487b17f10850",
        "df4e0ae0d0704adde214e8ee1dc8c998ad021e680d635d10ba96716fd949370d",
    ),
    "config-file": (
        "2be948a7786a3a90ef6f9d1093c23b1e660c38130ed15b5ecb57e70e302c2818",
        "90ab7465a07cc5034d8980c9d2005098764f572e9cec1c4e98809962d0b08ceb",
        "c0488eb738122d3de9103fc477384ea1e22f3afd5f23f7476534db55fc445cf1",
        "9d88ae6b06ea55fa0e9f0bf1e8f9bae71447c872583f9f9243662f06368caf83",
    ),
    "demo.api": (
        "5f7160127e14d0cbab9e2403f5fd1357218f40d4bd45ca4a885bcb88bfadda45",
        "20da4c3748ac7ac2a47e1896f36bb49c9b870b34d2c8a4be6d133c767c3c121c",
        "acfeab117f27ad605636ac1c5dceb91a5eb6124f2e3603ba9ed5264303d173a6",
        "404e4ea1b6ee2cbbcc2da9d5b46bddd3a64672e109f28efcbe537c317e00d770",
    ),
    "demo.web": (
        "e2a30660c95d5a687acd05d180991f861f0614bb789b9a1b909fd40594bed96c",
        "8e9d049d5f637f089ce77d355368c100cb1efaa206ff54f568801daa8d633275",
        "53b2a1f7dce9a9c12fc0cf1b9431253c0e6944a583d709d71c716ee28900a8bc",
        "d7fa5054257bee0c09daa826c6eaf445c537254f530761818f23f304f69e4698",
    ),
    "everything-rolling": (
        "62ddce542c8762d068f39d77694580efe26185b2b1a1093a961919923b1803c2",
        "2a00e3b3509a8d16b5bfc7f3fdff5c897e2f9a14fd8c66d309bef1182c274837",
        "31b05d259e7d948caeb67ef3871f8c005c5af21bb61fbb2c39f03ac338571315",
        "868fc3fcd69cdb54d0d2a0ba1c70ac4e903b395e306b753eb56f82853b8e889e",
    ),
    "http-health-defaults": (
        "9b86e5289b2d120e837ac2733d1b1c114a1acdff7a49eefc68c174d56c087481",
        "075f9131b38b56891a0cb190e0709c393241b53130282e2045641996724acb62",
        "3be4bc9eed14f1f7e092f22129a828c72448493613df99126263416b42e91083",
        "ec2716941882772a6aaf990e0f7fba2bb4756a3faa807acb4d579c85b677342b",
    ),
    "minimal": (
        "94c0e7576d7a20c3790d545b1a460dfd058adc90192893ef7aa021618e04c3d7",
        "559b25cd3efa8c11e5537d04d75ba0c9a688670fabe91c1d949a9ba2d73bf294",
        "5f05091fabaf1fb5fc2d09ca07ef5612c0e2249a11c96cba07b40a23a24a25c9",
        "9e80ec909ad359204d949c634aa6d70fc4e0c47d8c23c9c8e384450baf59dac6",
    ),
    "secret-digests": (
        "3972b8bf66b1a27146068e663ca549cc146db5b18d2335cdf1ee6ec3a9c84f3a",
        "c9d1c9fcb371f2b739bc04d945cadc5c94e3c3891e06734b730518d433372736",
        "c4b651d7f7cf8533f9c2089af0425a1d82d1669edd328dd63ed97d5c5d686352",
        "85390a93f97d65d94de472204e78698c395fbae98358deb788cfa3e043d47a1b",
    ),
    "tls-files": (
        "baf007eda133b3ba08bb80345db1b36a3751b8f36223cea2bb4e736215cf0977",
        "b0d2cf9714d79d2cab3fa9cb4af38a1a473ae0901e85b68b0ac2a568564fdf73",
        "5aaa4c064a3c8f752cae60a1861015a5dec5ef4b9aef52223fef9daa731b5ce4",
        "c1e9bee7d4e6f0a1cc62b243dc3ff4efb8c25a7d880e58d8c3e87db663ae5107",
    ),
}


def _service(name: str, body: str) -> ServiceSpec:
    text = "services:\n  " + name + ":\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"
    return parse_playbook(text, f"{name}.yaml").services[0]


def _digests(spec: ServiceSpec) -> tuple[str, str, str, str]:
    record = json.dumps(to_playbook_dict(spec), sort_keys=True)
    return spec.spec_hash(), intent_hash(spec), revision_key(spec), hashlib.sha256(record.encode()).hexdigest()


def _all_specs(tmp_path: Path) -> dict[str, ServiceSpec]:
    specs = {f"demo.{s.name}": s for s in load_playbooks([str(REPO / "playbooks")])}
    specs.update({name: _service(name, body) for name, body in SERVICES.items()})
    stamped = with_secret_digests(specs["everything-rolling"], {"api-token": "0" * 64, "db-password": "f" * 32,
                                                                 "unused": "1" * 64})
    specs["secret-digests"] = stamped
    # A config read from a file next to the playbook: its content, not its path, goes into the hashes.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "nginx.conf").write_text("worker_processes 2;\n")
    (tmp_path / "files.yaml").write_text(textwrap.dedent("""
        services:
          files:
            image: fleet.local/files:v1
            configs: [{source: conf/nginx.conf, target: /etc/nginx/nginx.conf}]
        """))
    specs["config-file"] = load_playbooks([str(tmp_path / "files.yaml")])[0]
    # TLS from certificate files, as recorded (absolute paths; not read back from disk).
    specs["tls-files"] = from_playbook_dict("tls-files", {
        "image": "fleet.local/tls:v1",
        "lb": {"hosts": ["tls.example.test"], "tls": {"cert": "/etc/fleet/tls.crt", "key": "/etc/fleet/tls.key"}},
    })
    return specs


def test_every_case_is_pinned(tmp_path: Path) -> None:
    assert sorted(_all_specs(tmp_path)) == sorted(PINNED)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_hashes_are_what_they_always_were(case: str, tmp_path: Path) -> None:
    spec = _all_specs(tmp_path)[case]
    assert _digests(spec) == PINNED[case]


@pytest.mark.parametrize("case", sorted(PINNED))
def test_record_round_trip_gives_an_equal_spec(case: str, tmp_path: Path) -> None:
    spec = _all_specs(tmp_path)[case]
    stored = json.loads(json.dumps(to_playbook_dict(spec), sort_keys=True))
    back = from_playbook_dict(spec.name, stored)
    assert back == spec
    assert to_playbook_dict(back) == to_playbook_dict(spec)
    assert _digests(back) == PINNED[case]
