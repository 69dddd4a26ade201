"""Fixtures of the live-path tests: free loopback ports, a collector that always stops, a tiny
pcap (helpers in live_helpers.py)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Iterator

import pytest

# the test modules import live_helpers (and each other) by name, whatever pytest's import mode
sys.path.insert(0, str(Path(__file__).parent))
from live_helpers import need, write_tiny_pcap  # noqa: E402

from netflowgen.live import Collector, CollectorConfig


@pytest.fixture
def free_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def collector(tmp_path: Path, free_port: int) -> Iterator[Collector]:
    """A started Collector on a free port writing under tmp_path/out; stopped whatever happens."""
    need("nfcapd", "nfdump")
    c = Collector(CollectorConfig(listen=f"127.0.0.1:{free_port}", out=str(tmp_path / "out"),
                                  rotate=60, poll=0.2))
    c.start()
    try:
        yield c
    finally:
        if c.running:
            c.stop()


@pytest.fixture
def tiny_pcap(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    path = tmp_path / "tiny.pcap"
    return path, write_tiny_pcap(path)
