"""Flow records that last long: under start-minute attribution, all of one lands in its start minute,
so `features` warns when such records carry much of the traffic (a Zeek conn.log's hour-long call)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from netflowgen.features import FeatureConfig, build_features
from netflowgen.features.timeline import long_flows

from .golden_flows import at, flow, write_flows

HOST, EXT = "10.0.0.1", "192.0.2.9"


def flows_with_a_call(call_packets: int) -> list[dict]:
    """One short flow a minute for 20 minutes, and one 15-minute call starting in minute 2."""
    rows = [flow(m, EXT, 1234, HOST, 443, 6, 24, 10, 1000) for m in range(20)]
    rows.append(flow(2, EXT, 3478, HOST, 50000, 17, 0, call_packets, call_packets * 800,
                     end=at(2, 10) + dt.timedelta(minutes=15)))
    return rows


@pytest.mark.parametrize("call_packets, warned", [(1_000, True), (10, False)])
def test_features_warns_when_long_records_carry_the_traffic(tmp_path, call_packets, warned):
    path = write_flows(tmp_path / "flows.parquet", flows_with_a_call(call_packets))
    longs = long_flows([path])
    assert longs.flows == 1
    assert longs.packet_share == pytest.approx(call_packets / (call_packets + 200))
    (tmp_path / "c.csv").write_text("customer_id,prefix\nx,10.0.0.0/24\n")
    summary = build_features([path], tmp_path / "f.parquet", FeatureConfig(customers=str(tmp_path / "c.csv")))
    lines = [s for s in summary.lines() if s.startswith("warning:")]
    assert bool(lines) == warned
    if warned:
        assert "lasting over 5 minutes: 1, with 83 % of the packets" in lines[0] and "--spread-over-minutes" in lines[0]
        # what the warning is about: the whole call sits in its start minute
        pk = pl.read_parquet(tmp_path / "f.parquet").sort("minute")["in_all_pkt"].to_list()
        assert pk[2] == 10 + call_packets and pk[3] == 10
    spread = build_features([path], tmp_path / "s.parquet",
                            FeatureConfig(customers=str(tmp_path / "c.csv"), spread_over_minutes=True))
    assert spread.long_flows is None and not any(s.startswith("warning:") for s in spread.lines())
