"""Loading playbooks: YAML with line marks, validated by the schema (`inputs`) and the cross-checks (`checks`)
into `ServiceSpec` values, every problem in every file reported at once as `file:line: field: message`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from fleet.config.edge import bundle, read_pem, tls_spec
from fleet.config.schema import pydantic_problems
from fleet.config.spec.checks import FileTargets, cross_check
from fleet.config.spec.inputs import Files, PlaybookInput, ServiceInput
from fleet.config.spec.jobs import JOB_NAME_RE, JobInput, JobSpec, check_jobs
from fleet.config.spec.values import (
    ENV_NAME_RE,
    MAX_COMMAND_LINE_BYTES,
    MAX_CONFIG_BYTES,
    MAX_CONFIGS_BYTES,
    MAX_ENV_VALUE_BYTES,
    SECRET_FILE_DIR,
    SECRET_NAME_RE,
    SERVICE_NAME_RE,
    ConfigSpec,
    Playbook,
    SecretFileSpec,
    SecretRef,
    ServiceSpec,
)
from fleet.config.variables import expand
from fleet.config.yamlmarks import Marked, load, read_text
from fleet.core.errors import ConfigError, Problem, SpecError


def _env(raw: Mapping[Any, Any], doc: Marked, path: tuple[str | int, ...],
         problems: list[Problem]) -> dict[str, str | SecretRef]:
    out: dict[str, str | SecretRef] = {}
    for key, value in raw.items():
        where = (*path, key)
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            problems.append(doc.problem(where, f"invalid variable name {key!r} (letters, digits, _)"))
            continue
        if key == "PORT":
            problems.append(doc.problem(where, "PORT is reserved: fleet sets it to the replica's host port"))
            continue
        if isinstance(value, dict):
            name = value.get("secret")
            if set(value) != {"secret"} or not isinstance(name, str) or not SECRET_NAME_RE.match(name):
                problems.append(doc.problem(where, "expected a string or {secret: NAME}"))
                continue
            out[key] = SecretRef(name)
        elif isinstance(value, bool) or value is None:
            problems.append(doc.problem(where, f"expected a string, got {value!r} (quote it)"))
        elif isinstance(value, str | int | float):
            text = str(value)
            if "\x00" in text:
                problems.append(doc.problem(where, "a value cannot contain a NUL byte"))
                continue
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > MAX_ENV_VALUE_BYTES:
                problems.append(doc.problem(where, f"the value is {size} bytes; an env value can be at most "
                                                   f"{MAX_ENV_VALUE_BYTES} (64 KiB): put large values in a config "
                                                   "file"))
                continue
            out[key] = text
        else:
            problems.append(doc.problem(where, "expected a string or {secret: NAME}"))
    return out


def _read_config(source: str, base_dir: str) -> str:
    """The text of a config file named relative to the playbook's directory (which it may not leave)."""
    base = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(base, source))
    if os.path.commonpath([base, path]) != base:
        raise ValueError(f"{source!r} is outside the playbook's directory {base} (configs are read from there "
                         "and below only)")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{source!r} is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{source!r} is {st.st_size} bytes; a config can be at most {MAX_CONFIG_BYTES} bytes "
                             "(64 KiB): put bigger files in the image or a volume")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"no such file: {source!r} (looked for {path})") from None
    except OSError as exc:
        raise ValueError(f"cannot read {source!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source!r} is over {MAX_CONFIG_BYTES} bytes (64 KiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source!r} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                         "configs are text files") from None



def _files(name: str, svc: ServiceInput, doc: Marked, base_dir: str | None, internal: bool,
           problems: list[Problem]) -> Files:
    """The service's configs and secret files (see `files_at`), and the fields only fleet's records may hold."""
    where = ("services", name)
    if svc.secret_digests is not None and not internal:
        problems.append(doc.problem((*where, "secret_digests"), "fleet records this itself (the keyed digests of "
                                                                "the secrets' values); not a playbook setting"))
    if svc.restarts is not None and not internal:
        problems.append(doc.problem((*where, "restarts"), "fleet records this itself (`fleet restart`); not a "
                                                          "playbook setting"))
    return files_at(where, svc, doc, base_dir, problems)


def files_at(where: tuple[str, str], svc: ServiceInput | JobInput, doc: Marked, base_dir: str | None,
             problems: list[Problem]) -> Files:
    """The configs (read from their files) and secret files of the service or job at `where`, each target
    checked against the others and the volumes; every problem is added to `problems` at its item's line."""
    configs: list[ConfigSpec] = []
    targets = FileTargets(doc, [v.target for v in svc.volumes], problems)
    total = 0
    for i, c in enumerate(svc.configs):
        path = (*where, "configs", i)
        if not targets.claim(c.target, (*path, "target")):
            continue
        if c.content is not None:
            content = c.content
            if len(content.encode()) > MAX_CONFIG_BYTES:
                problems.append(doc.problem((*path, "content"), f"a config can be at most {MAX_CONFIG_BYTES} "
                                                                "bytes (64 KiB)"))
                continue
        elif base_dir is None:
            problems.append(doc.problem((*path, "source"), "a recorded config carries its content, not a file"))
            continue
        else:
            try:
                content = _read_config(c.source or "", base_dir)
            except ValueError as exc:
                problems.append(doc.problem((*path, "source"), str(exc)))
                continue
        total += len(content.encode())
        configs.append(ConfigSpec(c.target, content, c.mode, c.source))
    if total > MAX_CONFIGS_BYTES:
        problems.append(doc.problem((*where, "configs"), f"the configs of one service add up to {total} bytes; "
                                                         f"at most {MAX_CONFIGS_BYTES} (256 KiB)"))
    files: list[SecretFileSpec] = []
    for i, f in enumerate(svc.secrets):
        path = (*where, "secrets", i)
        target = f.file if f.file is not None else f"{SECRET_FILE_DIR}/{f.secret}"
        if targets.claim(target, (*path, "file")):
            files.append(SecretFileSpec(f.secret, target, f.mode))
    return tuple(configs), tuple(files)


def _parse(text: str, file: str) -> tuple[Playbook, list[Problem]]:
    try:
        doc = load(text, file)
    except ConfigError as exc:
        return Playbook(file, ()), list(exc.problems)
    return parse_doc(doc, os.path.dirname(os.path.abspath(file)))


def parse_doc(doc: Marked, base_dir: str | None, internal: bool = False) -> tuple[Playbook, list[Problem]]:
    """`base_dir`: where configs' files are read from (None: configs must carry their content); `internal`: the
    document is fleet's own record of a spec, which may hold `secret_digests` and `restarts`."""
    file = doc.file
    if not isinstance(doc.data, dict) or not {"services", "jobs"} & set(doc.data):
        return Playbook(file, ()), [Problem(file, 1, "", "expected a mapping with `services:` and/or `jobs:`")]
    problems: list[Problem] = []
    raw_services = doc.data.get("services")
    if isinstance(raw_services, dict):
        for name in raw_services:
            if not isinstance(name, str) or not SERVICE_NAME_RE.match(name):
                problems.append(doc.problem(
                    ("services", name),
                    f"invalid service name {name!r} (a-z first, then a-z, 0-9, -; at most 31 characters)"))
    try:
        model = PlaybookInput.model_validate(doc.data)
    except ValidationError as exc:
        model = None
        problems += pydantic_problems(exc, doc, (), PlaybookInput)
    envs: dict[str, dict[str, str | SecretRef]] = {}
    if isinstance(raw_services, dict):
        for name, body in raw_services.items():
            if isinstance(body, dict) and isinstance(body.get("env"), dict):
                envs[str(name)] = _env(body["env"], doc, ("services", name, "env"), problems)
    files: dict[str, Files] = {}
    if model is not None:
        for name, svc in (model.services or {}).items():
            files[name] = _files(name, svc, doc, base_dir, internal, problems)
        if base_dir is not None:
            for name, svc in (model.services or {}).items():
                _check_tls_files(name, svc, doc, base_dir, problems)
    services: tuple[ServiceSpec, ...] = ()
    if model is not None and not problems:
        services = tuple(svc.value(name, doc, envs.get(name, {}), files[name], base_dir)
                         for name, svc in (model.services or {}).items())
        for spec in services:
            size = spec.command_line_bytes()
            if size > MAX_COMMAND_LINE_BYTES:
                problems.append(doc.problem(
                    ("services", spec.name, "env"),
                    f"env, command and mounts take {size} bytes of the command that starts a container, once "
                    f"quoted; at most {MAX_COMMAND_LINE_BYTES} (96 KiB), as a node's shell takes at most 128 KiB: "
                    "put large values in a config file"))
    jobs = _jobs(doc, base_dir, problems)
    problems.sort(key=lambda p: (p.line or 0, p.field))
    if model is None or problems:
        return Playbook(file, ()), problems
    return Playbook(file, services, jobs), problems


def _jobs(doc: Marked, base_dir: str | None, problems: list[Problem]) -> tuple[JobSpec, ...]:
    """The playbook's `jobs:` (fleet.config.jobs), each validated as a service is; problems added at their lines."""
    raw = doc.data.get("jobs") if isinstance(doc.data, dict) else None
    if not isinstance(raw, dict):
        return ()
    out: list[JobSpec] = []
    for name, body in raw.items():
        where = ("jobs", name)
        if not isinstance(name, str) or not JOB_NAME_RE.match(name):
            problems.append(doc.problem(where, f"invalid job name {name!r} (a-z first, then a-z, 0-9, -; at most "
                                               "31 characters)"))
            continue
        try:
            job = JobInput.model_validate(body)
        except ValidationError as exc:
            problems += pydantic_problems(exc, doc, where, JobInput)
            continue
        env = _env(body["env"], doc, (*where, "env"), problems) if isinstance(body.get("env"), dict) else {}
        out.append(job.value(name, doc, env, files_at(where, job, doc, base_dir, problems)))
    return tuple(out)


def _check_tls_files(name: str, svc: ServiceInput, doc: Marked, base_dir: str, problems: list[Problem]) -> None:
    """A playbook's `lb.tls.cert`/`key` files: readable, and the certificate is the key's."""
    tls = svc.lb.tls if svc.lb is not None else None
    if tls is None or tls.cert is None or tls.key is None:
        return
    spec = tls_spec(tls, base_dir)
    assert spec.cert_file is not None and spec.key_file is not None
    try:
        bundle(read_pem(spec.cert_file, "certificate"), read_pem(spec.key_file, "key"))
    except ValueError as exc:
        problems.append(doc.problem(("services", name, "lb", "tls", "cert"), str(exc)))


def parse_playbook(text: str, file: str) -> Playbook:
    """One playbook from its text; raises SpecError listing every problem."""
    return checked(*_parse(text, file))


def checked(pb: Playbook, problems: list[Problem]) -> Playbook:
    """`pb` once its services are checked together too; raises SpecError listing every problem, its own first."""
    problems = [*problems, *cross_check([pb])]
    if problems:
        raise SpecError(problems)
    return pb


def playbook_files(paths: Iterable[str]) -> list[str]:
    """Files named by `paths`: a directory stands for its *.yaml and *.yml files, sorted."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(path, f)))
        else:
            out.append(path)
    return out


def load_playbook_files(paths: Iterable[str], variables: Mapping[str, str] | None = None) -> list[Playbook]:
    """Every playbook under `paths`, checked alone and together (duplicate names, duplicate lb ports); `${VAR}`
    in a file expanded from `variables` (default: the environment; see fleet.config.variables)."""
    variables = os.environ if variables is None else variables
    playbooks: list[Playbook] = []
    problems: list[Problem] = []
    paths = list(paths)
    try:
        files = playbook_files(paths)
    except OSError as exc:
        raise SpecError([Problem(exc.filename or ", ".join(paths), None, "",
                                 f"cannot list playbooks: {exc.strerror or exc}")]) from None
    if not files:
        raise SpecError([Problem(", ".join(paths) or ".", None, "", "no playbook files (*.yaml, *.yml) found")])
    for file in files:
        try:
            text = read_text(file, "playbook")
        except ConfigError as exc:
            problems += exc.problems
            continue
        text, unset = expand(text, file, variables)
        if unset:
            problems += unset
            continue
        pb, found = _parse(text, file)
        playbooks.append(pb)
        problems += found
    problems += cross_check(playbooks)
    problems += check_jobs(playbooks)
    if problems:
        raise SpecError(problems)
    return playbooks


def load_playbooks(paths: Iterable[str], variables: Mapping[str, str] | None = None) -> list[ServiceSpec]:
    """Every service under `paths` (files or directories), in file order then document order; `${VAR}` expanded
    from `variables` (default: the environment)."""
    return [s for pb in load_playbook_files(paths, variables) for s in pb.services]


