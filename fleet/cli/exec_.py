"""`fleet exec`: run a command inside a running container, stream its output, exit with its exit code; with
`-i` its stdin is this one's, with `-t` it runs on a terminal (a pty over SSH, a console in the container)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from fleet.cli import common

if TYPE_CHECKING:
    from fleet.api import Session, Terminal


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    """The local terminal in raw mode (keys, ^C included, go to the remote command), restored on exit."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def pump(session: Session, stdin: int | None, stdout: int, terminal: Terminal | None) -> int:
    """Bytes from `stdin` (None: none) to the session, its end passed on as EOF, and from the session to
    `stdout`, the pty resized with the local terminal, until the remote command ends; its exit status."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        assert stdin is not None
        data = os.read(stdin, 65536)
        if data:
            session.write(data)
        else:
            loop.remove_reader(stdin)
            session.write_eof()

    if stdin is not None:
        loop.add_reader(stdin, readable)
    if terminal is not None:
        loop.add_signal_handler(signal.SIGWINCH, lambda: session.resize(*shutil.get_terminal_size()))
    try:
        while data := await session.read():
            os.write(stdout, data)
        return await session.wait()
    finally:
        if stdin is not None:
            loop.remove_reader(stdin)
        if terminal is not None:
            loop.remove_signal_handler(signal.SIGWINCH)


def exec_(container: Annotated[str, typer.Argument(help="Container ID, unique prefix, NODE/ID, or a service "
                                                  "with one replica.")],
          command: Annotated[list[str], typer.Argument(help="The command; put it after `--`.")],
          inventory: common.InventoryOpt = None,
          interactive: Annotated[bool, typer.Option("--interactive",
                                                    help="Pass this stdin to the command (-i is the inventory, as "
                                                         "in every fleet command).")] = False,
          terminal: Annotated[bool, typer.Option("-t", "--tty", help="Run the command on a terminal (a pty over "
                                                 "SSH).")] = False,
          both: Annotated[bool, typer.Option("-it", "-ti", help="--interactive and --tty, for a shell.")]
          = False) -> None:
    """Run CMD inside CONTAINER (stdout and stderr merged); exits with CMD's exit code.

    Example:

      fleet exec web -- cat /etc/hosts
      fleet exec -it web -- sh"""
    from fleet.api import Fleet, Terminal
    from fleet.core.errors import ContainerLookupError

    interactive, terminal = interactive or both, terminal or both
    if terminal and not sys.stdin.isatty():
        common.fail("-t: the input is not a terminal (drop -t, or run from one)")
    inv = common.inventory(inventory)
    if not (interactive or terminal):
        async def go() -> int:
            async with Fleet.connect(inv, connect_timeout=10) as f:
                try:
                    return await f.exec(container, list(command), _write)
                except ContainerLookupError as exc:
                    common.fail(str(exc))

        raise typer.Exit(common.run(go))

    size = shutil.get_terminal_size()
    term = Terminal(os.environ.get("TERM", "xterm"), size.columns, size.lines) if terminal else None
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    async def session() -> int:
        async with Fleet.connect(inv, connect_timeout=10, command_timeout=None) as f:
            try:
                opened = f.exec_session(container, list(command), term)
                async with opened as s:
                    with raw(stdin) if term is not None and interactive else contextlib.nullcontext():
                        return await pump(s, stdin if interactive else None, stdout, term)
            except ContainerLookupError as exc:
                common.fail(str(exc))

    raise typer.Exit(common.run(session))
