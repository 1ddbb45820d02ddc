"""The transport: the only package of fleet that speaks SSH (asyncssh); everything above it gets values."""

from fleet.core.errors import SessionError
from fleet.core.shell import Script
from fleet.transport.fanout import fanout
from fleet.transport.ssh import (
    CIPHERS,
    DEFAULT_COMMAND_TIMEOUT,
    KEX_ALGS,
    NO_DEADLINE,
    Command,
    Pool,
    RemoteStream,
    render,
)

__all__ = [
    "CIPHERS",
    "DEFAULT_COMMAND_TIMEOUT",
    "KEX_ALGS",
    "NO_DEADLINE",
    "Command",
    "Pool",
    "RemoteStream",
    "Script",
    "SessionError",
    "fanout",
    "render",
]
