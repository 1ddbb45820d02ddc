"""The playbook's `jobs:` section (fleet.config.spec.jobs): values, errors at file:line:field, hooks named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.config.spec import load_playbook_files, parse_playbook
from fleet.core.errors import SpecError

PLAYBOOK = """\
services:
  web:
    image: demo:v1
    before_deploy: migrate
    env: {DB: /data/db}
jobs:
  migrate:
    image: demo:v1
    command: [sh, -c, "echo migrated >> /data/log"]
    env: {MODE: up}
    volumes:
      - {type: volume, source: data, target: /data}
    retries: 2
    backoff: 2s
    deadline: 5m
    parallelism: 1
  nightly:
    image: demo:v1
    schedule: "0 3 * * *"
    timezone: Europe/Berlin
    catch_up: none
"""


def test_jobs_are_read_with_their_settings(tmp_path: Path) -> None:
    f = tmp_path / "pb.yaml"
    f.write_text(PLAYBOOK)
    (pb,) = load_playbook_files([str(f)])
    migrate, nightly = pb.jobs
    assert (migrate.retries, migrate.backoff, migrate.deadline, migrate.parallelism) == (2, 2.0, 300.0, 1)
    assert migrate.run.command == ("sh", "-c", "echo migrated >> /data/log") and migrate.run.env["MODE"] == "up"
    assert migrate.run.volumes[0].source == "data" and migrate.source_line == 7
    assert [migrate.backoff_before(n) for n in (2, 3, 4)] == [2.0, 4.0, 8.0]
    assert (nightly.schedule, nightly.timezone, nightly.catch_up) == ("0 3 * * *", "Europe/Berlin", "none")
    web = pb.services[0]
    assert web.before_deploy == "migrate"
    hook = migrate.with_service(web)
    assert hook.run.image == web.image and dict(hook.run.env) == {"DB": "/data/db", "MODE": "up"}


def test_before_deploy_is_not_in_the_spec_hash() -> None:
    a = parse_playbook("services: {web: {image: demo:v1}}\n", "a.yaml").services[0]
    text = "services: {web: {image: demo:v1, before_deploy: m}}\njobs: {m: {image: demo:v1}}\n"
    b = parse_playbook(text, "b.yaml").services[0]
    assert a.spec_hash() == b.spec_hash() and b.before_deploy == "m"


@pytest.mark.parametrize(("body", "expected"), [
    ("jobs:\n  m:\n    image: demo:v1\n    retries: 11\n", "pb.yaml:4: jobs.m.retries: Input should be less than or "
                                                         "equal to 10"),
    ("jobs:\n  m:\n    image: demo:v1\n    schedule: '61 * * * *'\n", "pb.yaml:4: jobs.m.schedule: minute: 61 is "
                                                                     "out of range 0-59"),
    ("jobs:\n  m:\n    image: demo:v1\n    schedule: '@daily'\n    timezone: Mars/Base\n",
     "pb.yaml:5: jobs.m.timezone: unknown time zone 'Mars/Base'"),
    ("jobs:\n  m:\n    image: demo:v1\n    catch_up: last\n", "pb.yaml:2: jobs.m: timezone and catch_up apply to "
                                                           "a job with a schedule"),
    ("jobs:\n  m:\n    image: demo:v1\n    replicas: 2\n", "pb.yaml:4: jobs.m.replicas: unknown field"),
    ("jobs:\n  Bad_Name:\n    image: demo:v1\n", "pb.yaml:2: jobs.Bad_Name: invalid job name"),
    ("services:\n  web:\n    image: demo:v1\n    before_deploy: nope\n",
     "pb.yaml:2: services.web.before_deploy: no job 'nope' in these playbooks (jobs: none)"),
    ("services:\n  web:\n    image: demo:v1\njobs:\n  web:\n    image: demo:v1\n",
     "pb.yaml:5: jobs.web: 'web' is also a service's name"),
    ("jobs:\n  m:\n    image: demo:v1\n    env: {PORT: '1'}\n", "pb.yaml:4: jobs.m.env.PORT: PORT is reserved"),
])
def test_bad_jobs_name_file_line_and_field(tmp_path: Path, body: str, expected: str) -> None:
    f = tmp_path / "pb.yaml"
    f.write_text(textwrap.dedent(body))
    with pytest.raises(SpecError) as err:
        load_playbook_files([str(f)])
    assert expected in str(err.value).replace(str(tmp_path) + "/", "")


def test_job_config_file_is_read_relative_to_the_playbook(tmp_path: Path) -> None:
    (tmp_path / "m.sql").write_text("select 1;\n")
    f = tmp_path / "pb.yaml"
    f.write_text("jobs:\n  m:\n    image: demo:v1\n    configs:\n      - {source: m.sql, target: /m.sql}\n")
    (pb,) = load_playbook_files([str(f)])
    assert pb.jobs[0].run.configs[0].content == "select 1;\n"
