"""A service's container security settings (`user`, `read_only`, `cap_add`, `cap_drop`, `no_new_privileges`):
their value, and the playbook schema `ServiceInput` takes them from (a base class, so the service's schema gains
the fields without listing them). The defaults are containerd's: root unless the image says otherwise, a writable
root filesystem, Docker's default capability set, and no new privileges (setuid binaries gain nothing)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, field_validator

# Every Linux capability (capability.h, 0 to 40), without the CAP_ prefix.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
# What a container gets when the playbook says nothing: containerd's default spec, which is Docker's default set
# (`ctr oci spec` on containerd 1.6.20 lists these 14; nerdctl starts from the same spec).
DEFAULT_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})
# `1000`, `1000:1000`, `app`, `app:app`: a numeric uid or a name in the image's /etc/passwd, optionally a group.
USER_RE = re.compile(r"^(?:[0-9]{1,10}|[a-z_][a-z0-9_.-]{0,31})(?::(?:[0-9]{1,10}|[a-z_][a-z0-9_.-]{0,31}))?$")


@dataclass(frozen=True)
class SecuritySpec:
    """How a service's containers are confined. `cap_add`/`cap_drop` are capability names without `CAP_`,
    sorted; `cap_drop` may hold `ALL` (every capability, before `cap_add`)."""

    user: str | None = None
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = True

    def capabilities(self) -> frozenset[str]:
        """The capabilities the container's process has: the default set less `cap_drop`, plus `cap_add`."""
        kept = frozenset() if "ALL" in self.cap_drop else DEFAULT_CAPABILITIES - set(self.cap_drop)
        return kept | set(self.cap_add)

    def cap_changes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(added, dropped) against the runtime's default set, `CAP_`-prefixed and sorted: what the runtime is
        told (ctr takes no `ALL`, and accepts an unknown name silently, so fleet sends the exact difference)."""
        caps = self.capabilities()
        return (tuple(sorted(f"CAP_{c}" for c in caps - DEFAULT_CAPABILITIES)),
                tuple(sorted(f"CAP_{c}" for c in DEFAULT_CAPABILITIES - caps)))

    def hash_input(self) -> dict[str, Any]:
        """The settings that differ from the defaults (so a service without any keeps its hash); capabilities as
        the set they give, so `cap_drop: [ALL]` and dropping each of the defaults are the same container."""
        out: dict[str, Any] = {}
        if self.user is not None:
            out["user"] = self.user
        if self.read_only:
            out["read_only"] = True
        if self.capabilities() != DEFAULT_CAPABILITIES:
            out["capabilities"] = sorted(self.capabilities())
        if not self.no_new_privileges:
            out["no_new_privileges"] = False
        return out

    def written(self) -> dict[str, Any]:
        """The settings as playbook input, those at their default left out."""
        out: dict[str, Any] = {}
        if self.user is not None:
            out["user"] = self.user
        if self.read_only:
            out["read_only"] = True
        if self.cap_add:
            out["cap_add"] = list(self.cap_add)
        if self.cap_drop:
            out["cap_drop"] = list(self.cap_drop)
        if not self.no_new_privileges:
            out["no_new_privileges"] = False
        return out


def _capability(name: str, allow_all: bool) -> str:
    bare = name.upper().removeprefix("CAP_")
    if allow_all and bare == "ALL":
        return bare
    if bare not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r} (e.g. NET_ADMIN or CAP_NET_ADMIN"
                         + ("; ALL drops every one" if allow_all else "") + ")")
    return bare


class SecurityInput(BaseModel):
    """The security settings as a playbook's service writes them (fields of the service itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str | None = None
    read_only: StrictBool = SecuritySpec.read_only
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    no_new_privileges: StrictBool = SecuritySpec.no_new_privileges

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not USER_RE.match(v):
            raise ValueError(f"expected uid[:gid] or a user name (e.g. 1000, 1000:1000, app), got {v!r}")
        return v

    @field_validator("cap_add")
    @classmethod
    def _add(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else sorted({_capability(c, allow_all=False) for c in v})

    @field_validator("cap_drop")
    @classmethod
    def _drop(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else sorted({_capability(c, allow_all=True) for c in v})

    def security(self) -> SecuritySpec:
        return SecuritySpec(self.user, self.read_only, tuple(self.cap_add or ()), tuple(self.cap_drop or ()),
                            self.no_new_privileges)
