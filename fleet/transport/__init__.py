"""The transport: the only package of fleet that speaks SSH (asyncssh); everything above it gets values."""

from ..errors import SessionError
from ..shell import Script
from .fanout import fanout
from .ssh import CIPHERS, DEFAULT_COMMAND_TIMEOUT, KEX_ALGS, NO_DEADLINE, Command, Pool, RemoteStream, render

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
