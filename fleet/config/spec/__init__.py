"""Service specs (playbooks): YAML under playbooks/ validated into frozen `ServiceSpec` values.

Every problem in every file is reported at once as `file:line: services.NAME.field: message`
(a `SpecError`); secrets stay `SecretRef` names here and are resolved only where a container starts.
This package's modules, by job: `values` (the resolved values and the spec hash), `inputs` (the schema of a
playbook), `jobs` (its `jobs:` section), `loading`, `checks` (between services and between fields), `record`
(the history's round trip).
"""

from fleet.config.spec.jobs import JobSpec, jobs_of  # before loading, which builds on it
from fleet.config.spec.loading import load_playbook_files, load_playbooks, parse_playbook, playbook_files
from fleet.config.spec.record import from_playbook_dict, to_playbook_dict
from fleet.config.spec.values import (
    DEFAULT_CONFIG_MODE,
    DEFAULT_RESOURCES,
    DEFAULT_SECRET_FILE_MODE,
    DIGEST_RE,
    ENV_NAME_RE,
    FILE_MODE_RE,
    FLEET_MOUNTS,
    HTTP_PATH_RE,
    IMAGE_RE,
    MAX_COMMAND_LINE_BYTES,
    MAX_CONFIG_BYTES,
    MAX_CONFIGS_BYTES,
    MAX_DURATION,
    MAX_ENV_VALUE_BYTES,
    MAX_MEMORY,
    MOUNT_PATH_RE,
    NODE_DIRS,
    SECRET_FILE_DIR,
    SECRET_NAME_RE,
    SERVICE_NAME_RE,
    SPEC_HASH_VERSION,
    VOLUME_NAME_RE,
    CanarySpec,
    ConfigSpec,
    HealthSpec,
    LbSpec,
    PlacementSpec,
    Playbook,
    SecretFileSpec,
    SecretRef,
    ServiceSpec,
    UpdateSpec,
    VolumeSpec,
    format_duration,
    normal_path,
    parse_duration,
    with_secret_digests,
)

__all__ = [
    "DEFAULT_CONFIG_MODE", "DEFAULT_RESOURCES", "DEFAULT_SECRET_FILE_MODE", "DIGEST_RE", "ENV_NAME_RE", "FILE_MODE_RE",
    "FLEET_MOUNTS", "HTTP_PATH_RE", "IMAGE_RE", "MAX_COMMAND_LINE_BYTES", "MAX_CONFIGS_BYTES", "MAX_CONFIG_BYTES",
    "MAX_DURATION", "MAX_ENV_VALUE_BYTES", "MAX_MEMORY", "MOUNT_PATH_RE", "NODE_DIRS", "SECRET_FILE_DIR",
    "SECRET_NAME_RE", "SERVICE_NAME_RE", "SPEC_HASH_VERSION", "VOLUME_NAME_RE", "CanarySpec", "ConfigSpec",
    "HealthSpec", "LbSpec", "PlacementSpec", "Playbook", "SecretFileSpec", "SecretRef", "ServiceSpec", "UpdateSpec",
    "VolumeSpec", "format_duration", "from_playbook_dict", "load_playbook_files", "load_playbooks", "normal_path",
    "parse_duration", "parse_playbook", "playbook_files", "to_playbook_dict", "with_secret_digests",
]
__all__ += ["JobSpec", "jobs_of"]
