"""Live collection: NetFlow v5/v9/IPFIX over UDP -> rotated canonical Parquet files, with every
loss counted (kernel socket drops, sequence gaps, undecodable datagrams). See docs/live.md."""

from netflowgen.live.collector import Collector, CollectorConfig, CollectorError, RotationStats

__all__ = ["Collector", "CollectorConfig", "CollectorError", "RotationStats"]
