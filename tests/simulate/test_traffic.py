"""Normal traffic of the simulated ISP: archetypes, seasonality, scale, sizes, flags, sampling."""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
from conftest import Sim

from netflowgen.simulate.run import Simulation


def test_archetypes_differ_in_port_mix(sim: Sim, quiet: pl.DataFrame) -> None:
    q = quiet
    top = {}
    for arch, expected in {"web": (6, 443), "dns": (17, 53), "ntp": (17, 123), "mail": (6, 25)}.items():
        inb = q.filter(pl.col("inbound") & (pl.col("archetype") == arch))
        counts = inb.group_by("proto", "dst_port").agg(pl.len().alias("n")).sort("n", descending=True)
        top[arch] = tuple(counts.row(0)[:2])
        assert top[arch] == expected, (arch, counts.head(3).rows())
        # the service stands out from everything else the node receives
        assert counts["n"][0] > 2 * counts["n"][1]
    # NAT'd pools initiate: their outgoing records leave from registered/private (NAT) ports and
    # a good part goes to registered/private ports (P2P, games), unlike servers
    out = q.filter(~pl.col("inbound"))
    nat, web = out.filter(pl.col("archetype") == "nat"), out.filter(pl.col("archetype") == "web")
    assert (nat["src_port"] >= 1024).mean() > 0.95 and (web["src_port"] >= 1024).mean() < 0.3
    assert (nat["dst_port"] >= 1024).mean() > 0.15
    # idle hosts are nearly silent: far less traffic per node than any service
    per_node = q.group_by("node", "archetype").agg(pl.col("est_pkts").sum())
    med = per_node.group_by("archetype").agg(pl.col("est_pkts").median()).sort("est_pkts")
    assert med["archetype"][0] == "idle", med


def test_daily_seasonality_in_autocorrelation(sim: Sim, quiet: pl.DataFrame) -> None:
    q = quiet.filter(pl.col("archetype").is_in(["web", "nat", "mail", "dns"]))
    hourly = q.with_columns((pl.col("minute") // 60).alias("h")).group_by("node", "h").agg(
        pl.col("est_pkts").count().alias("n"))
    hours = int(sim.cfg.time.days * 24)
    acf24, acf12 = [], []
    for _, g in hourly.group_by(["node"]):
        x = np.zeros(hours)
        x[g["h"].to_numpy()] = g["n"].to_numpy()
        if x.sum() < 500:
            continue
        x = x - x.mean()
        acf24.append(float((x[:-24] * x[24:]).sum() / (x * x).sum()))
        acf12.append(float((x[:-12] * x[12:]).sum() / (x * x).sum()))
    assert len(acf24) >= 5
    assert np.median(acf24) > 0.3 and np.median(acf24) > np.median(acf12) + 0.5


def test_weekly_seasonality(sim: Sim) -> None:
    # the rate model: offices (mail) quiet at weekends, homes (nat) busier; Jan 6 2024 = Saturday
    cfg = copy.deepcopy(sim.cfg)
    cfg.time.days = 7
    cfg.events.surges_per_day = 0.0  # no flash crowd in the way
    s = Simulation(cfg)
    arch = s.topo.node_archetype
    rng = np.random.default_rng(0)
    monday = s.gen.rates(0, 1440, rng)
    day_f = s.gen.day_factor
    saturday_minutes = np.arange(5 * 1440, 6 * 1440)
    s.gen.day_factor = np.repeat(day_f[:, :1], day_f.shape[1], axis=1)  # same day factor both days
    monday = s.gen.rates(0, 1440, rng).sum(1)
    saturday = s.gen.rates(int(saturday_minutes[0]), int(saturday_minutes[-1]) + 1, rng).sum(1)
    from netflowgen.simulate.traffic import ARCHETYPE_INDEX
    ratio = saturday / monday
    assert ratio[arch == ARCHETYPE_INDEX["mail"]].max() < 0.5
    assert ratio[arch == ARCHETYPE_INDEX["nat"]].min() > 1.1


def test_scale_spans_orders_of_magnitude_and_sizes_are_heavy_tailed(sim: Sim, quiet: pl.DataFrame) -> None:
    q = quiet
    per_node = q.filter(pl.col("archetype") != "idle").group_by("node").agg(pl.col("est_bytes").sum())
    assert per_node["est_bytes"].max() / per_node["est_bytes"].min() > 100
    # a few flows carry much of the bytes (unsampled records only: sampling truncates small flows)
    b = np.sort(q.filter(pl.col("sampling_rate") == 1)["bytes"].to_numpy())[::-1]
    assert b[: len(b) // 100].sum() / b.sum() > 0.25
    assert b.max() / np.median(b) > 1000


def test_tcp_flags_follow_the_service(sim: Sim, quiet: pl.DataFrame) -> None:
    web = quiet.filter((pl.col("proto") == 6) & (pl.col("archetype") == "web"))
    q = web.filter(pl.col("sampling_rate") == 1)  # what the sessions really did
    out_flags = q.filter(~pl.col("inbound"))["tcp_flags"].value_counts(normalize=True)
    share = dict(zip(out_flags["tcp_flags"], out_flags["proportion"]))
    assert share[27] > 0.4  # complete sessions (SYN, ACK, PSH, FIN)
    for f in (18, 20, 24, 16):  # half-open SYN-ACK, refused RST-ACK, long-lived, pure ACK
        assert share.get(f, 0) > 0.01, (f, share)
    in_flags = q.filter(pl.col("inbound"))["tcp_flags"]
    assert ((in_flags == 2).mean()) > 0.01  # SYN-only handshakes that never completed
    # behind a sampling exporter SYN/FIN packets are mostly not sampled: fewer 27, more 24/16
    sampled = web.filter(pl.col("sampling_rate") > 1)
    if sampled.height > 1000:
        assert (sampled["tcp_flags"] == 27).mean() < (q["tcp_flags"] == 27).mean() - 0.1
        assert sampled["tcp_flags"].is_in([16, 24]).mean() > q["tcp_flags"].is_in([16, 24]).mean()
    # UDP and ICMP never carry TCP flags
    assert sim.flows.filter(pl.col("proto") != 6)["tcp_flags"].max() == 0


def test_sampling_rate_recorded_per_exporter(sim: Sim) -> None:
    joined = sim.flows.select("dst_ip", "sampling_rate").unique().join(
        sim.nodes.select(pl.col("ip").alias("dst_ip"), pl.col("sampling_rate").alias("want")), on="dst_ip")
    assert joined.height > 0 and (joined["sampling_rate"] == joined["want"]).all()
    assert set(sim.flows["sampling_rate"].unique()) == set(sim.cfg.topology.sampling_rates)


def test_sampling_thins_records_but_estimates_stay_unbiased(sim: Sim) -> None:
    # the same 3 hours behind an unsampled and a 1:10 exporter: far fewer records, same estimate
    totals = {}
    for rate in (1, 10):
        cfg = copy.deepcopy(sim.cfg)
        cfg.topology.sampling_rates = [rate]
        cfg.events.outages_per_exporter_day = 0.0
        records, _ = Simulation(cfg).gen.chunk(0, 600, 780)
        table = records.table()
        est = (table["packets"].to_numpy() * table["sampling_rate"].to_numpy()).sum()
        totals[rate] = (table.num_rows, est, set(table["sampling_rate"].to_pylist()))
    assert totals[10][2] == {10} and totals[1][2] == {1}
    assert totals[10][0] < 0.75 * totals[1][0]  # big flows (attacks, transfers) survive sampling
    assert abs(totals[10][1] / totals[1][1] - 1) < 0.1


def test_exporter_outages_leave_missing_minutes(sim: Sim) -> None:
    out = sim.truth.filter(pl.col("kind") == "outage")
    assert out.height > 0
    exp_minutes = sim.flows.select("exporter", "minute").unique()
    checked = 0
    for r in out.iter_rows(named=True):
        seen = exp_minutes.filter((pl.col("exporter") == r["target"]) & (pl.col("minute") >= r["t_onset"] - 5)
                                  & (pl.col("minute") < r["t_end"] + 5))["minute"].to_list()
        assert not any(r["t_onset"] <= m < r["t_end"] for m in seen), r
        checked += bool(seen)
    assert checked > 0  # the exporter was alive around its outages
