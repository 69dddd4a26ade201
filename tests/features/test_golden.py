"""Golden test: the hand-written flows of conftest -> every value of the node-minute table.

The expected numbers were worked out by hand from the flow list (recorded x sampling rate), not by
the code under test; every feature not listed for a node-minute must be exactly zero.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow.parquet as pq
import pytest

from netflowgen.features import FeatureConfig, build_features
from netflowgen.schema import FEATURE_NAMES, FEATURE_SET_HASH, NODE_MINUTE_SCHEMA

from .golden_flows import N1, N2, N6, T0


def trio(prefix: str, pkt: float, byt: float, flow: float) -> dict[str, float]:
    return {f"{prefix}_pkt": pkt, f"{prefix}_byt": byt, f"{prefix}_flow": flow}


# Non-zero features per (node, minute), default attribution (ts_start's minute).
EXPECTED: dict[tuple[str, int], dict[str, float]] = {
    (N1, 0): {  # F1 (x10), F4 (x2) in; F2, F3 out
        **trio("in_all", 28, 1672, 12), **trio("in_icmp", 8, 672, 2), **trio("in_udp", 20, 1000, 10),
        **trio("in_port0", 8, 672, 2), **trio("in_port53", 20, 1000, 10),
        **trio("out_all", 4, 376, 2), **trio("out_tcp", 3, 300, 1), **trio("out_udp", 1, 76, 1),
        **trio("out_port80", 3, 300, 1), **trio("out_port123", 1, 76, 1),
        "out_flag24_flow": 1,
    },
    (N2, 0): {  # F3 from the other node, F6 GRE
        **trio("in_all", 6, 5076, 2), **trio("in_udp", 1, 76, 1), **trio("in_other", 5, 5000, 1),
        **trio("in_port123", 1, 76, 1), **trio("in_port0", 5, 5000, 1),
    },
    (N6, 0): {**trio("out_all", 1, 64, 1), **trio("out_icmp", 1, 64, 1), **trio("out_port0", 1, 64, 1)},
    (N1, 1): {  # G1-G8 tcp out, G9 udp out (x100); H1-H6 in (H6 x4)
        **trio("out_all", 220, 31532, 108), **trio("out_tcp", 20, 1532, 8),
        **trio("out_udp", 200, 30000, 100),
        **trio("out_port0", 1, 40, 1), **trio("out_port53", 200, 30000, 100),
        **trio("out_port443", 1, 60, 1), **trio("out_portwk", 3, 120, 2),
        **trio("out_portreg", 4, 260, 2), **trio("out_portpriv", 11, 1052, 2),
        "out_flag0_flow": 1, "out_flag16_flow": 1, "out_flag2_flow": 1, "out_flag17_flow": 1,
        "out_flag18_flow": 1, "out_flag4_flow": 1, "out_flag25_flow": 1,
        **trio("in_all", 25, 13190, 9), **trio("in_tcp", 22, 12960, 7), **trio("in_udp", 3, 230, 2),
        **trio("in_port0", 1, 30, 1), **trio("in_port80", 12, 12000, 4),
        **trio("in_port443", 1, 60, 1), **trio("in_portwk", 4, 400, 1),
        **trio("in_portreg", 5, 500, 1), **trio("in_portpriv", 2, 200, 1),
    },
    (N2, 3): {**trio("out_all", 6, 600, 1), **trio("out_tcp", 6, 600, 1),
              **trio("out_portpriv", 6, 600, 1), "out_flag24_flow": 1},
}
# Spread: F9 (minutes 3-4) gives half of everything to each minute; the rest is unchanged.
SPREAD_F9 = {**trio("out_all", 3, 300, 0.5), **trio("out_tcp", 3, 300, 0.5),
             **trio("out_portpriv", 3, 300, 0.5), "out_flag24_flow": 0.5}
CUSTOMER = {N1: "A", N2: "B", N6: "D"}  # N2: /32 beats /24; N6: /64 beats /32


def check_table(path, expected, n_minutes, missing_minutes, customer=CUSTOMER, exact=True,
                first=T0):
    """Assert the dense table at `path` holds exactly `expected` (all else zero); minutes are
    counted from `first`."""
    meta = pq.read_schema(path).metadata
    assert meta[b"netflowgen.feature_set_hash"] == FEATURE_SET_HASH.encode()
    df = pl.read_parquet(path)
    assert df.columns == NODE_MINUTE_SCHEMA.names
    nodes = sorted(customer)
    assert df.height == len(nodes) * n_minutes
    assert df["node"].to_list() == [n for n in nodes for _ in range(n_minutes)]  # node, minute order
    assert df["customer"].to_list() == [customer[n] for n in nodes for _ in range(n_minutes)]
    minutes = [first + dt.timedelta(minutes=m) for m in range(n_minutes)]
    assert df["minute"].to_list() == minutes * len(nodes)
    assert df["missing"].to_list() == [m in missing_minutes for m in range(n_minutes)] * len(nodes)
    for row in df.iter_rows(named=True):
        m = int((row["minute"] - first).total_seconds() // 60)
        want = expected.get((row["node"], m), {})
        assert set(want) <= set(FEATURE_NAMES)
        got = {name: row[name] for name in FEATURE_NAMES}
        for name in FEATURE_NAMES:
            if exact:
                assert got[name] == want.get(name, 0.0), (row["node"], m, name)
            else:
                assert got[name] == pytest.approx(want.get(name, 0.0), rel=1e-12), (row["node"], m, name)


@pytest.mark.parametrize("chunk_rows", [262_144, 1])  # one block, or one block per node
@pytest.mark.parametrize("dense_max_gb", [3.0, 0.0])  # whole dense table, or the semi table
def test_golden_default_attribution(golden, tmp_path, chunk_rows, dense_max_gb):
    flows, customers = golden
    out = tmp_path / "features.parquet"
    s = build_features([flows], out, FeatureConfig(customers=str(customers), chunk_rows=chunk_rows,
                                                   dense_max_gb=dense_max_gb))
    # Range = minutes 0..3 (last start is in minute 3); minute 2 had no flow at all -> missing,
    # while minute 3 is a plain zero for N1 and N6 (N2 was active).
    check_table(out, EXPECTED, 4, {2})
    assert (s.flows, s.nodes, s.customers, s.minutes, s.missing_minutes, s.rows) == (23, 3, 3, 4, 1, 12)


def test_golden_spread_over_minutes(golden, tmp_path):
    flows, customers = golden
    out = tmp_path / "spread.parquet"
    build_features([flows], out, FeatureConfig(customers=str(customers), spread_over_minutes=True))
    expected = dict(EXPECTED)
    expected[(N2, 3)] = SPREAD_F9
    expected[(N2, 4)] = SPREAD_F9
    check_table(out, expected, 5, {2})  # F9 covers minute 4, so it exists and is not missing


def test_golden_explicit_range_cuts_and_pads(golden, tmp_path):
    flows, customers = golden
    out = tmp_path / "range.parquet"
    start = (T0 + dt.timedelta(minutes=1)).isoformat()
    end = (T0 + dt.timedelta(minutes=6)).isoformat()
    s = build_features([flows], out, FeatureConfig(customers=str(customers), start=start, end=end))
    assert s.outside_range == 6  # the six flows of minute 0 are cut, and said so
    # Minutes 1..5 become rows 0..4: minute 0 is cut, minutes 4 and 5 are padded and missing.
    shifted = {(n, m - 1): v for (n, m), v in EXPECTED.items() if m >= 1}
    check_table(out, shifted, 5, {1, 3, 4}, first=T0 + dt.timedelta(minutes=1))


def test_default_node_rule(golden, tmp_path):
    flows, _ = golden
    out = tmp_path / "default.parquet"
    # Flow records per destination: 192.0.2.9 11, 10.0.0.1 8, 10.0.0.2 2, two others 1 each.
    build_features([flows], out, FeatureConfig(min_flows=3))
    df = pl.read_parquet(out)
    assert df["node"].unique().sort().to_list() == ["10.0.0.1", "192.0.2.9"]
    assert set(df["customer"]) == {"default"}
    ext0 = df.filter((pl.col("node") == "192.0.2.9") & (pl.col("minute") == T0)).row(0, named=True)
    # 192.0.2.9 in minute 0: receives F2 (3, 300) and sends F1 (x10), F4 (x2), F6.
    assert (ext0["in_all_pkt"], ext0["in_all_byt"], ext0["in_all_flow"]) == (3, 300, 1)
    assert (ext0["out_all_pkt"], ext0["out_all_byt"], ext0["out_all_flow"]) == (33, 6672, 13)
    build_features([flows], out, FeatureConfig(min_flows=2))
    assert pl.read_parquet(out)["node"].unique().sort().to_list() == ["10.0.0.1", "10.0.0.2",
                                                                        "192.0.2.9"]


def test_spread_flow_cut_by_range_keeps_its_share(golden, tmp_path):
    """F9 covers minutes 3-4; with --end at minute 4 only minute 3 is kept, still with 1/2."""
    flows, customers = golden
    out = tmp_path / "cut.parquet"
    end = (T0 + dt.timedelta(minutes=4)).isoformat()
    build_features([flows], out, FeatureConfig(customers=str(customers), spread_over_minutes=True,
                                               end=end))
    check_table(out, {**EXPECTED, (N2, 3): SPREAD_F9}, 4, {2})


def test_no_nodes_gives_an_empty_table(golden, tmp_path):
    flows, _ = golden
    out = tmp_path / "none.parquet"
    s = build_features([flows], out, FeatureConfig(min_flows=1000))
    assert (s.nodes, s.rows, s.minutes) == (0, 0, 4)
    t = pq.read_table(out)
    assert t.num_rows == 0 and t.schema.equals(NODE_MINUTE_SCHEMA, check_metadata=True)
