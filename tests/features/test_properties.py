"""Properties that hold for any input: class breakdowns add up to the totals, and the totals equal
the flows' sampling-scaled sums computed directly from the flow table."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from netflowgen.features import FeatureConfig, build_features
from netflowgen.schema import MEASURES, PORT_CLASSES, PROTOCOL_CLASSES, TCP_FLAG_VALUES

from .test_engines import random_flows


def check_conservation(features: pl.DataFrame, flows: pl.DataFrame) -> None:
    assert features.height > 0
    tot = features.select(pl.exclude("node", "customer", "minute", "missing")).sum().row(0, named=True)
    for d in ("in", "out"):
        for m in MEASURES:
            assert sum(tot[f"{d}_{p}_{m}"] for p in PROTOCOL_CLASSES) == pytest.approx(tot[f"{d}_all_{m}"])
            assert sum(tot[f"{d}_{c}_{m}"] for c, _, _ in PORT_CLASSES) == pytest.approx(tot[f"{d}_all_{m}"])
    assert sum(tot[f"out_flag{f}_flow"] for f in TCP_FLAG_VALUES) <= tot["out_tcp_flow"]
    nodes = set(features["node"].unique())
    rate = pl.col("sampling_rate").cast(pl.Int64)
    for d, ip in (("in", "dst_ip"), ("out", "src_ip")):
        mine = flows.filter(pl.col(ip).is_in(list(nodes)))
        want = mine.select(pkt=(pl.col("packets") * rate).sum(), byt=(pl.col("bytes") * rate).sum(),
                           flow=rate.sum()).row(0, named=True)
        for m in MEASURES:
            assert tot[f"{d}_all_{m}"] == pytest.approx(want[m], rel=1e-12)
    # Missing minutes are all-zero for every node.
    assert features.filter("missing").select(pl.exclude("node", "customer", "minute", "missing")
                                             ).to_numpy().sum() == 0


@pytest.mark.parametrize("spread", [False, True])
def test_conservation_on_random_flows(tmp_path, spread):
    path = random_flows(tmp_path / "flows.parquet", n=3000, seed=11)
    out = tmp_path / "f.parquet"
    build_features([path], out, FeatureConfig(min_flows=20, spread_over_minutes=spread, chunk_rows=300))
    f = pl.read_parquet(out)
    check_conservation(f, pl.read_parquet(path))
    # Dense: every node x every minute, sorted by node then minute.
    assert f.height == f["node"].n_unique() * f["minute"].n_unique()
    assert f.select("node", "minute").equals(f.select("node", "minute").sort("node", "minute"))
    assert np.all(np.diff(f["minute"].unique().sort().cast(pl.Int64).to_numpy()) == 60_000)


@pytest.mark.real
def test_real_argus_trace(real_data, tmp_path):
    """A real CTU-13 Argus trace through the source reader, then the features."""
    from netflowgen.rejects import RejectCounter

    trace = real_data / "argus-slips" / "2013-10-21_capture-1.binetflow"
    out = tmp_path / "f.parquet"
    s = build_features([trace], out, FeatureConfig(min_flows=20), fmt="argus", rejects=RejectCounter())
    assert s.nodes > 0 and s.rows == s.nodes * s.minutes
    import pyarrow as pa

    from netflowgen.sources import open_source

    flows = pl.from_arrow(pa.Table.from_batches(list(open_source([trace], "argus"))))
    check_conservation(pl.read_parquet(out), flows)


def test_dense_and_semi_paths_agree(tmp_path):
    """The two Polars aggregation paths (whole dense table / semi table) give the same file,
    including the per-exporter missing rows and flows outside an explicit range."""
    from .test_engines import random_flows as rf

    path = rf(tmp_path / "flows.parquet", n=3000, seed=5, exporters=True)
    outs = []
    for gb in (3.0, 0.0):
        out = tmp_path / f"f{gb}.parquet"
        build_features([path], out, FeatureConfig(min_flows=20, dense_max_gb=gb, chunk_rows=700,
                                                  start="2024-01-01T00:05", end="2024-01-01T01:20"))
        outs.append(pl.read_parquet(out))
    assert outs[0].height > 0 and outs[0]["missing"].sum() > 0
    assert outs[0].equals(outs[1])


def test_dense_path_derives_all_traffic_from_protocols():
    """The dense path sums each all-traffic feature from the 4 protocol features of its direction
    and measure instead of scattering it (the protocol classes partition the flows); the paths'
    equality above checks the values."""
    from netflowgen.features.definition import FEATURES
    from netflowgen.features.polars_engine import derived_features, routing_slots

    derived = derived_features()
    assert sorted(FEATURES[i].name for i in derived) == sorted(
        f"{d}_all_{m}" for d in ("in", "out") for m in MEASURES)
    assert all(len(parts) == 4 for parts in derived.values())
    assert [len(s) for s in routing_slots(set(derived))] == [len(s) - 1 for s in routing_slots()]
