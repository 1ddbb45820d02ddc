"""The transport: the only package of fleet that speaks SSH (asyncssh); everything above it gets values."""

from fleet.core.errors import SessionError
from fleet.core.shell import Script
from fleet.transport.command import Command, render
from fleet.transport.connect import CIPHERS, KEX_ALGS
from fleet.transport.fanout import fanout
from fleet.transport.ssh import DEFAULT_COMMAND_TIMEOUT, NO_DEADLINE, Pool
from fleet.transport.streams import RemoteStream
from fleet.transport.tunnel import Refused, Tunnel

__all__ = [
    "CIPHERS",
    "DEFAULT_COMMAND_TIMEOUT",
    "KEX_ALGS",
    "NO_DEADLINE",
    "Command",
    "Pool",
    "Refused",
    "RemoteStream",
    "Script",
    "SessionError",
    "Tunnel",
    "fanout",
    "render",
]
