"""The `fleet` CLI for the suite's many runs, started without paying for its imports each time.

A CLI start spends most of its CPU importing fleet (about 0.6 s here, before any node is contacted), and the lab
tests start it hundreds of times on a 2-core machine. This server imports every command and the façade once,
then forks a child per run: the child takes the run's argv, environment, working directory and standard streams
(passed as file descriptors), calls `fleet.cli.main.main()` exactly as `python -m fleet.cli.main` does, and
sends its exit status back. Each run is still its own process, with its own event loop, signals and exit.

Used by `helpers.run_fleet` for the default CLI (`FLEET_CLI`); a run that names another (`INSTALLED_CLI`, the
console script as a user starts it) or FLEET_TEST_FORK=0 in the environment gets a plain subprocess, and
tests/test_cli_server.py holds the forked runs to the same output and exit codes as plain ones.

    python tests/cli_server.py SOCKET   (started by helpers.cli_server(), one per pytest process)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import traceback

# The checkout this file is in, first: `python tests/cli_server.py` puts tests/ on the path, not the working
# directory, so without it `import fleet` would find the installed package (another checkout's code) instead of
# the one `python -m fleet.cli.main` runs from here.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_child(conn: socket.socket, request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the run, then report its exit status on `conn`."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the CLI waits for its own subprocesses
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    code: int = 1
    try:
        os.chdir(str(request["cwd"]))
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update(env)
        argv = request["argv"]
        assert isinstance(argv, list)
        from fleet.cli import main

        # As `python -m fleet.cli.main` starts: click names the program from these ("python -m fleet.cli.main").
        sys.argv = [str(main.__file__), *argv]
        sys.modules["__main__"].__package__ = "fleet.cli"

        try:
            main.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
    except BaseException:  # what an uncaught exception does to the interpreter
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: the status is still sent
                stream.flush()
        try:
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        finally:
            os._exit(code & 0xFF)


def serve(path: str) -> None:
    from fleet.cli import main

    main.build()  # every command module
    import fleet.api  # noqa: F401 (the façade, which the commands import when they run)

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel; each reports on its socket
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        conn, _ = server.accept()
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            while not data.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    break
                data += more
            request = json.loads(data)
        except (OSError, ValueError):
            conn.close()
            continue
        try:
            pid = os.fork()
        except OSError:  # no run: the client sees the socket close with no status (-9)
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        if pid == 0:
            server.close()
            _run_child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
