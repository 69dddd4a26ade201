"""Spark == Polars on the same input, and the golden values through Spark (one shared session)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netflowgen.features import FeatureConfig, build_features
from netflowgen.schema import FLOW_SCHEMA

from .golden_flows import N2, T0
from .test_golden import EXPECTED, SPREAD_F9, check_table


def random_flows(path, n=4000, seed=3, exporters=False):
    """Random flows over 40 IPs (some v6), 90 minutes with a gap, every protocol and flag mix.
    `exporters`: records carry one of three exporters (mostly by destination), and exporter "e2"
    is silent in minutes 60-64; else the exporter is null."""
    rng = np.random.default_rng(seed)
    ips = np.array([f"10.0.{i // 8}.{i}" for i in range(30)] + [f"2001:db8::{i:x}" for i in range(10)])
    start = (T0.timestamp() * 1000 + rng.integers(0, 90, n) * 60_000 + rng.integers(0, 60_000, n))
    start = np.where((start - T0.timestamp() * 1000) // 60_000 == 40, start + 60_000, start)  # a gap
    dst = rng.integers(0, len(ips), n)
    exporter = pa.nulls(n, pa.string())
    if exporters:
        names = np.array(["e1", "e2", "e3"])[np.where(rng.random(n) < 0.9, dst % 3, rng.integers(0, 3, n))]
        minute = (start - T0.timestamp() * 1000) // 60_000
        exporter = pa.array(np.where((names == "e2") & (minute >= 60) & (minute < 65), "e1", names))
    t = pa.table({
        "ts_start": pa.array(start.astype(np.int64)).cast(pa.timestamp("ms", tz="UTC")),
        "ts_end": pa.array((start + rng.integers(0, 200_000, n)).astype(np.int64)).cast(
            pa.timestamp("ms", tz="UTC")),
        "src_ip": ips[rng.integers(0, len(ips), n)], "dst_ip": ips[dst],
        "src_port": rng.choice([0, 53, 80, 123, 443, 22, 8080, 50000], n).astype(np.uint16),
        "dst_port": rng.integers(0, 65536, n).astype(np.uint16),
        "proto": rng.choice([1, 6, 17, 47, 58, 132], n).astype(np.uint8),
        "tcp_flags": rng.choice([0, 16, 24, 2, 17, 18, 4, 25, 27], n).astype(np.uint8),
        "packets": rng.integers(1, 10_000, n), "bytes": rng.integers(40, 10_000_000, n),
        "sampling_rate": rng.choice([1, 10, 1000], n).astype(np.uint32),
        "exporter": exporter, "in_if": pa.nulls(n, pa.uint32()),
        "out_if": pa.nulls(n, pa.uint32())}, schema=FLOW_SCHEMA)
    pq.write_table(t, path)
    return path


@pytest.mark.spark
def test_spark_equals_polars_exactly(spark, tmp_path):
    flows = random_flows(tmp_path / "random.parquet", exporters=True)
    cfg = FeatureConfig(min_flows=50, chunk_rows=500)  # blocks of 5 nodes: exercises the blocking
    a = build_features([flows], tmp_path / "polars.parquet", cfg)
    # missing_by = "exporter": e2's nodes are missing in its 5 silent minutes, besides the gap.
    assert a.missing_by == "exporter" and a.missing_node_minutes > a.nodes * a.missing_minutes
    cfg.engine = "spark"
    b = build_features([flows], tmp_path / "spark.parquet", cfg, spark=spark)
    assert (b.missing_by, b.missing_node_minutes) == (a.missing_by, a.missing_node_minutes)
    pa_, pb = pl.read_parquet(tmp_path / "polars.parquet"), pl.read_parquet(tmp_path / "spark.parquet")
    assert a.nodes > 20 and a.missing_minutes == 1 and pa_.height == a.nodes * a.minutes
    assert pa_.select(pl.col(pl.Float64).sum()).row(0)[0] > 0
    assert pa_.equals(pb)  # integer sums: bit-identical
    assert pq.read_schema(tmp_path / "spark.parquet").metadata == \
        pq.read_schema(tmp_path / "polars.parquet").metadata


@pytest.mark.spark
def test_spark_golden_spread(spark, golden, tmp_path):
    flows, customers = golden
    cfg = FeatureConfig(engine="spark", customers=str(customers), spread_over_minutes=True)
    build_features([flows], tmp_path / "spark.parquet", cfg, spark=spark)
    expected = dict(EXPECTED)
    expected[(N2, 3)] = expected[(N2, 4)] = SPREAD_F9
    check_table(tmp_path / "spark.parquet", expected, 5, {2})
