"""Canonical flow records -> NetFlow v9 / IPFIX datagrams, and a paced UDP replay sender.

`encoder` turns record batches into export packets (templates, sequence numbers, sampling options);
`replay` sends them to a collector in real time, faster, or as fast as the link takes them.
"""

from netflowgen.export.encoder import PROTOCOLS, FlowEncoder
from netflowgen.export.replay import ReplayStats, replay

__all__ = ["PROTOCOLS", "FlowEncoder", "ReplayStats", "replay"]
