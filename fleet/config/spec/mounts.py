"""The playbook's mounts as written: volumes, config files and secret files, each a section of the pydantic schema
(fleet.config.spec.inputs) that a service and a job (fleet.config.spec.jobs) both take; `Strict` is the base of
every section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, field_validator, model_validator

from fleet.config.spec.rules import FileMode, FileTarget, Memory, check_mount_path
from fleet.config.spec.values import (
    DEFAULT_CONFIG_MODE,
    DEFAULT_SECRET_FILE_MODE,
    FLEET_MOUNTS,
    NODE_DIRS,
    SECRET_NAME_RE,
    VOLUME_NAME_RE,
    ConfigSpec,
    SecretFileSpec,
    VolumeSpec,
    normal_path,
    within,
)
from fleet.core.names import NAME_RE


class Strict(BaseModel):
    """A section of the playbook: unknown keys refused. Each default is the value's own (`HealthSpec.interval`), so
    what a playbook leaves out resolves to what the value holds unset, and a default is written once."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VolumeInput(Strict):
    type: Literal["bind", "tmpfs", "volume", "sshfs"]
    source: str | None = None
    target: str
    readonly: StrictBool = VolumeSpec.readonly
    size: Memory | None = None
    on_node_loss: Literal["wait", "start-empty"] | None = None
    storage: str | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        check_mount_path(v)
        target = normal_path(v)
        if target == "/":
            raise ValueError("cannot mount over /")
        for mount in FLEET_MOUNTS:
            if within(mount, target):
                raise ValueError(f"cannot mount over {target}: fleet mounts its own {mount} in every container")
        return v

    @model_validator(mode="after")
    def _by_type(self) -> VolumeInput:
        if self.type == "bind":
            if self.source is None:
                raise ValueError("a bind volume needs source: /host/path")
            if not self.source.startswith("/"):
                raise ValueError(f"a bind volume's source must be an absolute host path, got {self.source!r}")
            check_mount_path(self.source)
            source = normal_path(self.source)
            if source == "/":
                raise ValueError(f"a bind volume cannot mount the node's root directory (source {self.source!r})")
            for own in NODE_DIRS:
                if within(source, own):
                    raise ValueError(f"a bind volume cannot mount {source}: it is fleet's own directory {own} or "
                                     "inside it (secrets, HAProxy config and sockets, logs)")
                if within(own, source):
                    raise ValueError(f"a bind volume cannot mount {source}: it holds fleet's own directory {own} "
                                     "(secrets, HAProxy config and sockets, logs)")
        elif self.type in ("volume", "sshfs"):
            if self.source is None or not VOLUME_NAME_RE.match(self.source):
                raise ValueError(f"a named volume needs source: NAME (a-z, 0-9, . _ -), got {self.source!r}")
        elif self.source is not None:
            raise ValueError("a tmpfs volume takes no source")
        if self.size is not None and self.type != "tmpfs":
            raise ValueError("size applies to tmpfs volumes only")
        if self.on_node_loss is not None and self.type != "volume":
            raise ValueError("on_node_loss applies to named volumes (type: volume) only: other volumes do not "
                             "keep data on one node")
        if self.storage is not None and self.type != "sshfs":
            raise ValueError("storage applies to sshfs volumes only")
        if self.storage is not None and not NAME_RE.match(self.storage):
            raise ValueError(f"expected a storage node's name from the inventory, got {self.storage!r}")
        return self

    def value(self, line: int | None) -> VolumeSpec:
        return VolumeSpec(self.type, self.target, self.source, self.readonly, self.size, self.on_node_loss or "wait",
                          self.storage, line)

    @staticmethod
    def written(v: VolumeSpec) -> dict[str, Any]:
        """Unset fields left out, `on_node_loss` too when it is the default (`wait`)."""
        return {k: x for k, x in {"type": v.type, "source": v.source, "target": v.target, "readonly": v.readonly,
                                  "size": v.size, "storage": v.storage,
                                  "on_node_loss": None if v.on_node_loss == "wait" else v.on_node_loss,
                                  }.items() if x is not None}


class ConfigInput(Strict):
    target: FileTarget
    source: str | None = None
    content: str | None = None
    mode: FileMode = DEFAULT_CONFIG_MODE

    @model_validator(mode="after")
    def _one_origin(self) -> ConfigInput:
        if (self.source is None) == (self.content is None):
            raise ValueError("give exactly one of source: FILE (relative to the playbook) or content: TEXT")
        if self.source is not None and (not self.source or self.source.startswith("/") or "\x00" in self.source):
            raise ValueError(f"source: expected a file path relative to the playbook's directory, "
                             f"got {self.source!r}")
        return self

    @staticmethod
    def written(c: ConfigSpec) -> dict[str, Any]:
        """Its content, never its file: a recorded config restores what was applied."""
        return {"target": c.target, "mode": c.mode, "content": c.content}


class SecretFileInput(Strict):
    secret: str
    file: FileTarget | None = None
    mode: FileMode = DEFAULT_SECRET_FILE_MODE

    @field_validator("secret")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SECRET_NAME_RE.match(v):
            raise ValueError(f"invalid secret name {v!r} (letters, digits, . _ -)")
        return v

    @staticmethod
    def written(f: SecretFileSpec) -> dict[str, Any]:
        return {"secret": f.secret, "file": f.target, "mode": f.mode}
