"""Ports for the runner, the demo and the tests are chosen below the kernel's ephemeral range, where no
outbound connection can take one between the check and the server's bind."""

from __future__ import annotations

import socket

from kernel.embedded import _ephemeral_ports, free_port, free_port_range


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    ephemeral = _ephemeral_ports()
    for _ in range(20):
        base = free_port_range(5)
        assert base + 5 <= ephemeral.start
        for port in range(base, base + 5):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    assert free_port() < ephemeral.start


def test_a_taken_port_is_never_offered() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        taken = held.getsockname()[1]
        assert all(not (b <= taken < b + 5) for b in (free_port_range(5) for _ in range(50)))
