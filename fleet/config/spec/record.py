"""The record round trip: a service spec as the playbook input kept in the fleet's history (what a user would
write, secrets by name only) and back, validated exactly as a playbook is."""

from __future__ import annotations

from typing import Any

from fleet.config.spec.loading import checked, parse_doc
from fleet.config.spec.values import SecretRef, ServiceSpec, format_duration
from fleet.config.yamlmarks import Marked


def to_playbook_dict(spec: ServiceSpec) -> dict[str, Any]:
    """The service as playbook input (what a user would write); `from_playbook_dict` reads it back.

    Secrets appear as `{secret: NAME}` references only, so the history never holds a secret's value.
    """
    out: dict[str, Any] = {
        "image": spec.image,
        "replicas": spec.replicas,
        "resources": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
        "port": spec.port,
        "env": {k: ({"secret": v.name} if isinstance(v, SecretRef) else v) for k, v in spec.env.items()},
        "placement": {"require": dict(spec.placement.require), "strategy": spec.placement.strategy},
        "stop_grace_period": format_duration(spec.stop_grace_period),
        "update": {
            "strategy": spec.update.strategy, "max_surge": spec.update.max_surge,
            "max_unavailable": spec.update.max_unavailable, "batch_size": spec.update.batch_size,
            "ready_deadline": format_duration(spec.update.ready_deadline),
            "min_ready": format_duration(spec.update.min_ready),
        },
    }
    if spec.command is not None:
        out["command"] = list(spec.command)
    if spec.placement.spread_by:
        out["placement"]["spread_by"] = spec.placement.spread_by
    h = spec.health
    if h is not None:
        health: dict[str, Any] = {
            "interval": format_duration(h.interval), "timeout": format_duration(h.timeout),
            "failure_threshold": h.failure_threshold, "success_threshold": h.success_threshold,
            "start_period": format_duration(h.start_period),
        }
        if h.kind == "http":
            health["http"] = h.path
        elif h.kind == "tcp":
            health["tcp"] = True
        else:
            health["exec"] = list(h.command)
        out["health"] = health
    if spec.lb is not None:
        out["lb"] = {"mode": spec.lb.mode, "balance": spec.lb.balance}
        if spec.lb.port is not None:
            out["lb"]["port"] = spec.lb.port
        if spec.lb.hosts:
            out["lb"]["hosts"] = list(spec.lb.hosts)
        if spec.lb.paths:
            out["lb"]["paths"] = list(spec.lb.paths)
        t = spec.lb.tls
        if t is not None:
            tls: dict[str, Any] = {"redirect": t.redirect}
            if t.cert_file is not None:
                tls.update(cert=t.cert_file, key=t.key_file)
            if t.secret is not None:
                tls["secret"] = t.secret
            if t.acme:
                tls["acme"] = True
            if t.hsts is not None:
                tls["hsts"] = t.hsts
            out["lb"]["tls"] = tls
    if spec.volumes:
        out["volumes"] = [{k: v for k, v in {"type": vol.type, "source": vol.source, "target": vol.target,
                                             "readonly": vol.readonly, "size": vol.size, "storage": vol.storage,
                                             "on_node_loss": None if vol.on_node_loss == "wait" else vol.on_node_loss,
                                             }.items() if v is not None}
                          for vol in spec.volumes]
    if spec.configs:
        out["configs"] = [{"target": c.target, "mode": c.mode, "content": c.content} for c in spec.configs]
    if spec.secret_files:
        out["secrets"] = [{"secret": f.secret, "file": f.target, "mode": f.mode} for f in spec.secret_files]
    if spec.secret_digests:
        out["secret_digests"] = dict(sorted(spec.secret_digests.items()))
    c = spec.update.canary
    if c is not None:
        out["update"]["canary"] = {"steps": list(c.steps), "pause": format_duration(c.pause),
                                   "auto_promote": c.auto_promote, "max_error_rate_delta": c.max_error_rate_delta}
    return out


def from_playbook_dict(name: str, data: dict[str, Any], source: str = "<history>") -> ServiceSpec:
    """A ServiceSpec from `to_playbook_dict` output (as stored, e.g. through JSON), validated exactly as a playbook
    is; the values are read as they are, not through YAML's text rules."""
    return checked(*parse_doc(Marked(source, {"services": {name: data}}, {}), None, internal=True)).services[0]
