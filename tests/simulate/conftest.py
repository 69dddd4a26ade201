"""One small simulated ISP per test session (2 days, 8 customers, 36 nodes, dense events), read
once; every property test of the simulator looks at these files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from netflowgen.simulate import SimConfig, simulate
from netflowgen.simulate.run import parse_start


def small_config(seed: int = 3, days: float = 2.0) -> SimConfig:
    cfg = SimConfig(seed=seed)
    cfg.topology.customers, cfg.topology.nodes = 8, 36
    cfg.time.days = days
    cfg.events.attacks_per_day = 60.0
    cfg.events.surges_per_day = 40.0
    cfg.events.outages_per_exporter_day = 2.0
    return cfg


@dataclass
class Sim:
    dir: Path
    cfg: SimConfig
    flows: pl.DataFrame  # with extra columns: minute (int, since start), est_pkts, est_bytes
    nodes: pl.DataFrame
    customers: pl.DataFrame
    alerts: pl.DataFrame
    truth: pl.DataFrame

    def minute_of(self, col: str) -> pl.Expr:
        start_ms = int(parse_start(self.cfg.time.start).timestamp() * 1000)
        return ((pl.col(col).str.to_datetime(time_zone="UTC").dt.epoch("ms") - start_ms) // 60_000)


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    out = tmp_path_factory.mktemp("sim")
    # NETFLOWGEN_SIM_TEST_SEED runs the property tests on other data (they must hold for any seed)
    cfg = small_config(seed=int(os.environ.get("NETFLOWGEN_SIM_TEST_SEED", "3")))
    simulate(cfg, out)
    start_ms = int(parse_start(cfg.time.start).timestamp() * 1000)
    flows = pl.read_parquet(out / "flows.parquet").with_columns(
        ((pl.col("ts_start").dt.epoch("ms") - start_ms) // 60_000).alias("minute"),
        (pl.col("packets") * pl.col("sampling_rate")).alias("est_pkts"),
        (pl.col("bytes") * pl.col("sampling_rate")).alias("est_bytes"))
    s = Sim(out, cfg, flows, pl.read_csv(out / "nodes.csv"), pl.read_csv(out / "customers.csv"),
            pl.read_csv(out / "alerts.csv"), pl.read_csv(out / "truth.csv"))
    s.truth = s.truth.with_columns(s.minute_of("onset").alias("t_onset"),
                                   s.minute_of("peak_start").alias("t_peak"),
                                   s.minute_of("peak_end").alias("t_peak_end"),
                                   s.minute_of("end").alias("t_end"))
    return s


def event_flows(sim: Sim, row: dict, lo: str = "t_peak", hi: str = "t_peak_end") -> pl.DataFrame:
    """Flows to or from the event's node during [row[lo], row[hi])."""
    ip = row["target"]
    return sim.flows.filter(((pl.col("dst_ip") == ip) | (pl.col("src_ip") == ip))
                            & (pl.col("minute") >= row[lo]) & (pl.col("minute") < row[hi]))


def quiet_flows(sim: Sim) -> pl.DataFrame:
    """Flows of node-minutes outside every attack and surge (normal traffic only)."""
    ev = sim.truth.filter(pl.col("kind") != "outage")
    busy = set()
    for r in ev.iter_rows(named=True):
        busy.update((r["target"], m) for m in range(r["t_onset"], r["t_end"]))
    nodes = set(sim.nodes["ip"].to_list())
    f = sim.flows.with_columns(pl.when(pl.col("dst_ip").is_in(nodes)).then(pl.col("dst_ip"))
                               .otherwise(pl.col("src_ip")).alias("node"))
    busy_df = pl.DataFrame({"node": [b[0] for b in busy], "minute": np.array([b[1] for b in busy], np.int64)})
    return f.join(busy_df, on=["node", "minute"], how="anti")


@pytest.fixture(scope="session")
def quiet(sim: Sim) -> pl.DataFrame:
    """quiet_flows(sim) plus columns node (the node's IP), archetype and inbound (bool)."""
    q = quiet_flows(sim).join(sim.nodes.select(pl.col("ip").alias("node"), "archetype"), on="node")
    return q.with_columns((pl.col("dst_ip") == pl.col("node")).alias("inbound"))
