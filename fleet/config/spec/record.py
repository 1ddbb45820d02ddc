"""The record round trip: a service spec as the playbook input kept in the fleet's history (what a user would
write, secrets by name only) and back, validated exactly as a playbook is."""

from __future__ import annotations

from typing import Any

from fleet.config.spec.inputs import ServiceInput
from fleet.config.spec.loading import checked, parse_doc
from fleet.config.spec.values import ServiceSpec
from fleet.config.yamlmarks import Marked


def to_playbook_dict(spec: ServiceSpec) -> dict[str, Any]:
    """The service as playbook input (what a user would write); `from_playbook_dict` reads it back.

    Secrets appear as `{secret: NAME}` references only, so the history never holds a secret's value.
    """
    return ServiceInput.written(spec)


def from_playbook_dict(name: str, data: dict[str, Any], source: str = "<history>") -> ServiceSpec:
    """A ServiceSpec from `to_playbook_dict` output (as stored, e.g. through JSON), validated exactly as a playbook
    is; the values are read as they are, not through YAML's text rules."""
    return checked(*parse_doc(Marked(source, {"services": {name: data}}, {}), None, internal=True)).services[0]
