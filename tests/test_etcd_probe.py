"""The probe that spares a read the whole etcdctl timeout when no member runs: run here, on this machine's real
socket tables, against a port something listens on and one nothing does."""

from __future__ import annotations

import socket
import subprocess

import pytest

from fleet.node.etcd import listening_argv


def _probe(port: int) -> str:
    return subprocess.run(listening_argv(port), capture_output=True, text=True, check=True, timeout=10).stdout.strip()


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_listening_port_is_seen_and_a_closed_one_is_not(family: int, host: str) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        port = server.getsockname()[1]
        # Bound but not listening: nothing would answer etcdctl.
        assert _probe(port) == "closed"
        server.listen()
        assert _probe(port) == "listening"
        # A connection to the port is not a listener on another: the row of the client's end must not count.
        with socket.create_connection((host, port)) as client:
            client_port = client.getsockname()[1]
            assert _probe(client_port) == "closed"
    assert _probe(port) == "closed"
