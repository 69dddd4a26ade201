"""Missing minutes per exporter (`missing_by`): an outage of one exporter marks its nodes missing,
not zero, while the other exporters' nodes stay plain zeros."""

from __future__ import annotations

import polars as pl
import pytest

from netflowgen.features import FeatureConfig, build_features

from .golden_flows import flow, write_flows

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"  # A, C behind exporter e1; B behind e2
EXT = "192.0.2.9"
CUSTOMERS = "customer_id,prefix\nx,10.0.0.0/24\n"


def two_exporter_flows() -> list[dict]:
    """Minutes 0..5. e1 reports every minute; e2 reports nothing in minutes 2 and 3. A is quiet in
    minutes 2-4 (but e1 reports C there); B sends one flow through e1 (a minority)."""
    rows = []

    def add(minute, src, dst, exporter):
        r = flow(minute, src, 1234, dst, 443, 6, 24, 2, 200)
        r["exporter"] = exporter
        rows.append(r)

    for m in (0, 1, 5):
        add(m, EXT, A, "e1")
    for m in range(6):
        add(m, C, EXT, "e1")
    for m in (0, 1, 4, 5):
        add(m, EXT, B, "e2")
        add(m, B, EXT, "e2")
    add(2, A, B, "e1")  # node to node, seen by e1 during e2's outage: B still belongs to e2
    return rows


def missing_minutes(path) -> dict[str, list[int]]:
    df = pl.read_parquet(path).with_columns(
        m=((pl.col("minute") - pl.col("minute").min()).dt.total_minutes()))
    return {n: sorted(g.filter("missing")["m"].to_list())
            for (n,), g in df.group_by("node", maintain_order=True)}


@pytest.mark.parametrize("customers", [True, False])
@pytest.mark.parametrize("dense_max_gb", [3.0, 0.0])  # both Polars aggregation paths
def test_exporter_outage_marks_only_its_nodes(tmp_path, customers, dense_max_gb):
    flows = write_flows(tmp_path / "f.parquet", two_exporter_flows())
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    cfg = FeatureConfig(customers=str(tmp_path / "c.csv") if customers else None, min_flows=1,
                        dense_max_gb=dense_max_gb)
    out = tmp_path / "o.parquet"
    s = build_features([flows], out, cfg)
    got = missing_minutes(out)
    assert got[A] == [] and got[B] == [2, 3]
    if customers:
        assert got[C] == []
    else:  # C never receives, so it is no node; EXT is, with 9 records via e1 and 8 via e2
        assert set(got) == {A, B, EXT} and got[EXT] == []
    assert s.missing_by == "exporter" and s.missing_minutes == 0 and s.missing_node_minutes == 2
    df = pl.read_parquet(out)
    # Traffic seen during the outage is still counted (A -> B via e1 in minute 2).
    b2 = df.filter((pl.col("node") == B) & pl.col("missing"))
    assert b2["in_all_flow"].to_list() == [1.0, 0.0]

    cfg.missing_by = "global"
    s = build_features([flows], out, cfg)
    assert all(v == [] for v in missing_minutes(out).values()) and s.missing_node_minutes == 0


def test_without_exporter_falls_back_to_global(tmp_path):
    rows = two_exporter_flows()
    for r in rows:
        r["exporter"] = None
    rows = [r for r in rows if not (r["ts_start"].minute == 3)]  # nothing at all in minute 3
    flows = write_flows(tmp_path / "f.parquet", rows)
    out = tmp_path / "o.parquet"
    s = build_features([flows], out, FeatureConfig(min_flows=1))
    assert s.missing_by == "exporter" and s.missing_minutes == 1
    assert all(v == [3] for v in missing_minutes(out).values())
    assert s.missing_node_minutes == s.nodes
    # a single source watching its own hosts: no outage inference, the quiet minute is zero traffic
    s = build_features([flows], out, FeatureConfig(min_flows=1, missing_by="none"))
    df = pl.read_parquet(out)
    assert s.missing_node_minutes == 0 and not df["missing"].any()
    assert df.filter(pl.col("minute").dt.minute() == 3)["in_all_flow"].sum() == 0


def test_spread_coverage_per_exporter(tmp_path):
    rows = two_exporter_flows()
    long = [r for r in rows if r["exporter"] == "e2"][2]  # minute 1, B -> EXT
    long["ts_end"] = long["ts_start"].replace(minute=long["ts_start"].minute + 2)  # covers 1..3
    flows = write_flows(tmp_path / "f.parquet", rows)
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    out = tmp_path / "o.parquet"
    build_features([flows], out, FeatureConfig(customers=str(tmp_path / "c.csv"),
                                               spread_over_minutes=True))
    assert missing_minutes(out)[B] == []  # e2's record covers its outage minutes


def test_exporter_hash_collision_fallback_gives_the_same_table(tmp_path, monkeypatch):
    """Exporters are keyed by a 64-bit hash of their text; when two known texts (or one and a
    null) share a hash, the survey groups on the text and the scatter on an Enum code instead."""
    from netflowgen.features import exporters

    rows = two_exporter_flows()
    rows[0]["exporter"] = None  # a record without exporter as well
    flows = write_flows(tmp_path / "f.parquet", rows)
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    cfg = FeatureConfig(customers=str(tmp_path / "c.csv"), min_flows=1)
    build_features([flows], tmp_path / "hashed.parquet", cfg)
    monkeypatch.setattr(exporters, "hashes_distinct", lambda names: False)
    build_features([flows], tmp_path / "texts.parquet", cfg)
    hashed, texts = pl.read_parquet(tmp_path / "hashed.parquet"), pl.read_parquet(tmp_path / "texts.parquet")
    assert hashed.equals(texts) and missing_minutes(tmp_path / "texts.parquet")[B] == [2, 3]


@pytest.mark.parametrize("dense_max_gb", [3.0, 0.0])
def test_several_flow_files_give_the_table_of_one(tmp_path, dense_max_gb):
    rows = two_exporter_flows()
    one = write_flows(tmp_path / "all.parquet", rows)
    first = write_flows(tmp_path / "a.parquet", rows[::2])
    second = write_flows(tmp_path / "b.parquet", rows[1::2])
    (tmp_path / "c.csv").write_text(CUSTOMERS)
    cfg = FeatureConfig(customers=str(tmp_path / "c.csv"), min_flows=1, dense_max_gb=dense_max_gb)
    build_features([one], tmp_path / "one.parquet", cfg)
    s = build_features([first, second], tmp_path / "two.parquet", cfg)
    assert s.flows == len(rows)
    assert pl.read_parquet(tmp_path / "one.parquet").equals(pl.read_parquet(tmp_path / "two.parquet"))
