"""`build_features`: flows -> nodes -> the dense node-minute Parquet table, with either engine.

    flows (canonical Parquet, or any source format converted first)
      -> survey (pass 1: candidate node IPs, minute range, minutes with data)
      -> node table (customers.csv longest prefix, or the default rule)       netflowgen.nodes
      -> sparse node-minute aggregates (pass 2)                               polars_ / spark_engine
      -> dense table written node chunk by node chunk                          dense
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from netflowgen import nodes as nodes_mod
from netflowgen.features.dense import OwnRange, write_dense
from netflowgen.features.settings import FeatureConfig
from netflowgen.features.timeline import LongFlows, Survey, attribute_exporters, long_flows, resolve_range
from netflowgen.progress import progress_bar
from netflowgen.rejects import InputError, RejectCounter

# Columns the features need from the canonical flow record (SPEC 1).
NEEDED_COLUMNS: tuple[str, ...] = ("ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port",
                                   "proto", "tcp_flags", "packets", "bytes", "sampling_rate")


@dataclass
class FeatureSummary:
    """What a run produced; `rows` = nodes x minutes."""

    out: Path
    engine: str
    flows: int
    nodes: int
    customers: int
    minutes: int
    missing_minutes: int
    rows: int
    first_minute: str
    seconds: float
    outside_range: int = 0  # flow records starting outside --start/--end, not counted
    rejects: dict[str, object] = field(default_factory=dict)  # RejectCounter.as_dict()
    missing_by: str = "global"  # the rule applied ("exporter" needs an exporter column)
    missing_node_minutes: int = 0  # rows with missing = true
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (wall s, CPU s)
    node_range: str = "union"  # "own": minutes outside a node's own observed range are missing
    outside_node_range: int = 0  # node-minutes "own" marked missing (not missing by missing_by already)
    long_flows: LongFlows | None = None  # start-minute attribution only: records lasting > 5 minutes

    def lines(self) -> list[str]:
        return [f"engine {self.engine}: {self.flows:,} flows read in {self.seconds:.1f} s "
                f"({self.flows / max(self.seconds, 1e-9):,.0f} flows/s)",
                f"nodes {self.nodes:,} ({self.customers:,} customers), minutes {self.minutes:,} "
                f"from {self.first_minute} UTC, missing minutes {self.missing_minutes:,}",
                f"missing node-minutes {self.missing_node_minutes:,} (missing_by {self.missing_by}"
                + (f"; node_range own: {self.outside_node_range:,} outside the nodes' own ranges)"
                   if self.node_range == "own" else ")"),
                *([f"flows starting outside --start/--end (not counted): {self.outside_range:,}"]
                  if self.outside_range else []),
                *([f"warning: flow records lasting over {self.long_flows.minutes} minutes: {self.long_flows.flows:,}, "
                   f"with {100 * self.long_flows.packet_share:.0f} % of the packets, each counted in its start "
                   "minute only; --spread-over-minutes spreads them (needed for sources that log a connection "
                   "once, at its end, such as Zeek conn.log)"]
                  if self.long_flows is not None and self.long_flows.worth_spreading() else []),
                f"rows {self.rows:,} -> {self.out}"]


def check_flow_parquet(paths: Sequence[Path]) -> None:
    """InputError naming the file when one is not Parquet or lacks a needed column."""
    if not paths:
        raise InputError("no flow files given")
    for p in paths:
        if not Path(p).is_file():
            raise InputError(f"{p}: flow file not found")
        try:
            names = pq.read_schema(p).names
        except Exception as e:  # pyarrow raises several types for non-Parquet bytes
            raise InputError(f"{p}: not a Parquet file ({e}); pass --format for other formats") from e
        missing = [c for c in NEEDED_COLUMNS if c not in names]
        if missing:
            raise InputError(f"{p}: flow Parquet lacks column(s) {missing} of the canonical "
                             f"flow record (has {names})")


def has_exporter_column(paths: Sequence[Path]) -> bool:
    """True when every flow file has the optional `exporter` column."""
    return all("exporter" in pq.read_schema(p).names for p in paths)


class _Phases:
    """Wall and CPU seconds (this process, all threads) of each stage."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[float, float]] = {}
        self._t = (time.perf_counter(), time.process_time())

    def __call__(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.done[name] = (now[0] - self._t[0], now[1] - self._t[1])
        self._t = now


def build_features(paths: Sequence[str | Path], out: str | Path, cfg: FeatureConfig | None = None,
                   fmt: str = "parquet", rejects: RejectCounter | None = None,
                   spark: Any = None) -> FeatureSummary:
    """Build the dense node-minute table (SPEC 3) from flow files and write it to `out` (Parquet,
    schema `NODE_MINUTE_SCHEMA`). Non-Parquet `fmt` is converted to canonical Parquet first (in a
    temporary folder) through `netflowgen.sources`. `spark`: an existing SparkSession to reuse."""
    cfg = cfg or FeatureConfig()
    cfg.validate()
    rejects = rejects if rejects is not None else RejectCounter()
    t0 = time.perf_counter()
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="netflowgen-features-") as tmp:
        phase = _Phases()
        flow_paths = _canonical(paths, fmt, Path(tmp), rejects, cfg)
        check_flow_parquet(flow_paths)
        by_exporter = cfg.missing_by == "exporter" and has_exporter_column(flow_paths)
        phase("read input")
        table = nodes_mod.CustomerTable.from_csv(cfg.customers) if cfg.customers else None
        what = ", ".join(str(p) for p in flow_paths[:3]) + (" ..." if len(flow_paths) > 3 else "")
        # The engines differ in how they survey and aggregate; nodes, range, exporter attribution
        # and the dense writer are shared, so both produce the same file.
        if cfg.engine == "polars":
            from netflowgen.features import polars_engine as eng

            # numba's import and the compiled scatter's load (~0.75 s) overlap the survey, which
            # runs in Polars' threads without the GIL.
            warm = threading.Thread(target=_warm_scatter, name="netflowgen-warm-up", daemon=True)
            warm.start()
            with progress_bar("features: survey (node IPs, minutes)"):
                surv = eng.survey(flow_paths, table is not None, cfg.spread_over_minutes,
                                  by_exporter, table.text_prefixes() if table is not None else None)
        else:
            from netflowgen.features import spark_engine as seng

            session = spark or seng.spark_session(cfg)
            with progress_bar("features: survey (node IPs, minutes)"):
                surv = seng.survey(session, flow_paths, table is not None,
                                   cfg.spread_over_minutes, by_exporter)
        phase("survey")
        node_tab = _nodes(surv, table, cfg, rejects)
        rng = resolve_range(surv, cfg.start_minute(), cfg.end_minute(), what, cfg.max_span_days)
        if cfg.missing_by == "none":  # one source watching its own hosts: a quiet minute is zero traffic
            rng = dataclasses.replace(rng, missing=np.zeros(rng.n, dtype=bool))
        phase("nodes")
        chunks: Any  # DenseChunks, PolarsChunks or SparkChunks: blocks of dense rows for the writer
        if cfg.engine == "polars":
            direct = (not cfg.spread_over_minutes
                      and eng.dense_bytes(node_tab.height, rng.n) <= cfg.dense_max_gb * 1e9)
            if direct:
                warm.join()
                chunks, counts = eng.dense_aggregate(flow_paths, node_tab, rng, by_exporter)
            else:
                semi, counts = eng.semi_aggregate(flow_paths, node_tab, rng,
                                                  cfg.spread_over_minutes, by_exporter)
                chunks = eng.PolarsChunks(semi)
                del semi
        else:
            chunks, counts = seng.aggregate(session, flow_paths, node_tab, rng,
                                            cfg.spread_over_minutes, Path(tmp) / "sparse",
                                            cfg.chunk_rows, by_exporter)
        node_tab = attribute_exporters(node_tab, counts)
        phase("aggregate")
        node_missing = rng.node_missing(node_tab["exporter"])
        own = OwnRange(rng.n) if cfg.node_range == "own" else None
        rows = write_dense(out, node_tab, rng, chunks, cfg.chunk_rows, cfg.compression,
                           node_missing, own)
        phase("write")
        longs = None if cfg.spread_over_minutes else long_flows(flow_paths)
        phase("long flows")
    first = pl.Series([rng.first * 60_000]).cast(pl.Datetime("ms", "UTC"))[0]
    return FeatureSummary(out, cfg.engine, surv.n_flows, node_tab.height,
                          node_tab["customer"].n_unique() if node_tab.height else 0, rng.n,
                          rng.n_missing, rows, f"{first:%Y-%m-%d %H:%M}",
                          time.perf_counter() - t0, surv.starting_outside(rng), rejects.as_dict(),
                          "exporter" if by_exporter else ("none" if cfg.missing_by == "none" else "global"),
                          int(node_missing[0].sum(axis=1)[node_missing[1]].sum())
                          + (own.added if own else 0), phase.done, cfg.node_range,
                          own.added if own else 0, longs)


def _warm_scatter() -> None:
    try:
        from netflowgen.features.scatter import warm_up

        warm_up()
    except Exception:  # noqa: BLE001 - the real import in dense_aggregate reports it
        pass


def _nodes(surv: Survey, table: nodes_mod.CustomerTable | None, cfg: FeatureConfig,
           rejects: RejectCounter) -> pl.DataFrame:
    if table is not None:
        found = table.assign(surv.ips["ip"], rejects)
    else:
        found = nodes_mod.default_nodes(surv.ips, cfg.min_flows)
    return nodes_mod.node_table(found)


def _canonical(paths: Sequence[str | Path], fmt: str, tmp: Path, rejects: RejectCounter,
               cfg: FeatureConfig) -> list[Path]:
    """Canonical flow Parquet paths: the inputs themselves for Parquet, else a converted copy
    (sampling rates resolved as SPEC 1: record -> per-exporter override -> default -> reject)."""
    if fmt == "parquet":
        return [Path(p) for p in paths]
    from netflowgen.sources import FORMATS, SourceOptions, open_source, write_flows

    if fmt not in FORMATS:
        raise InputError(f"unknown flow format {fmt!r}; known: {list(FORMATS)}")
    target = tmp / "flows.parquet"
    options = SourceOptions(default_sampling_rate=cfg.default_sampling,
                            exporter_sampling=dict(cfg.exporter_sampling))
    write_flows(open_source([Path(p) for p in paths], fmt, options, rejects), target, rejects)
    return [target]
