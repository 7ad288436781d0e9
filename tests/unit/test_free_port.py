"""broker.harness.free_port never hands out the same port twice in a row, nor vpcd's."""

from __future__ import annotations

from typing import Any

import pytest

from broker import harness


def test_a_port_the_kernel_gives_again_is_not_handed_out_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ports = iter([41001, 41001, 41001, 35967, 41002])  # the same port again, then vpcd's

    class FakeSocket:
        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def bind(self, address: tuple[str, int]) -> None:
            assert address == ("127.0.0.1", 0)
            self.port = next(ports)

        def getsockname(self) -> tuple[str, int]:
            return "127.0.0.1", self.port

    monkeypatch.setattr(harness, "_handed_out", harness.deque(maxlen=256))
    monkeypatch.setattr(harness.socket, "socket", FakeSocket)
    assert [harness.free_port(), harness.free_port()] == [41001, 41002]


def test_real_ports_in_a_row_differ() -> None:
    ports = [harness.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
