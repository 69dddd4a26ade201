"""`simulate(cfg, out)`: plan the events, then generate and write the flows chunk by chunk, so
memory depends on the chunk length and the number of nodes, not on the number of days."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from netflowgen.config import save_beside
from netflowgen.simulate.config import SimConfig
from netflowgen.simulate.events import Plan, plan_events
from netflowgen.simulate.flows import ChunkGenerator, ChunkRecords
from netflowgen.simulate.output import FlowWriter, write_tables
from netflowgen.simulate.topology import Topology, build_topology


@dataclass
class SimResult:
    out: Path | None
    records: int
    minutes: int
    nodes: int
    attacks: int
    surges: int
    alerts: int
    dropped_events: int


def parse_start(text: str) -> dt.datetime:
    """ISO time (a trailing Z or no zone means UTC) -> aware UTC datetime."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


class Simulation:
    """A planned run: topology and events fixed by the seed; chunks generated on demand."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.start = parse_start(cfg.time.start)
        self.minutes = int(round(cfg.time.days * 1440))
        if self.minutes < 1:
            raise ValueError(f"days must cover at least one minute, got {cfg.time.days}")
        if not 1 <= cfg.time.chunk_minutes <= 20_000:  # in-chunk ms offsets are 32-bit
            raise ValueError(f"chunk_minutes must be in 1..20000, got {cfg.time.chunk_minutes}")
        self.topo: Topology = build_topology(cfg.topology, cfg.seed)
        self.plan: Plan = plan_events(cfg.events, self.topo, self.minutes, cfg.seed)
        self.gen = ChunkGenerator(self.topo, self.plan, int(self.start.timestamp() * 1000),
                                  self.minutes, cfg.seed, cfg.events.max_attack_flows_per_minute)

    def chunk_bounds(self) -> list[tuple[int, int]]:
        step = self.cfg.time.chunk_minutes
        return [(t, min(t + step, self.minutes)) for t in range(0, self.minutes, step)]

    def chunks(self) -> Iterator[tuple[ChunkRecords, np.ndarray, int, int]]:
        """Yield (records, (2, V, M) estimated inbound pkts/bytes, t0, t1) in time order;
        `records.table()` is the chunk's FLOW_SCHEMA table."""
        for i, (t0, t1) in enumerate(self.chunk_bounds()):
            records, inbound = self.gen.chunk(i, t0, t1)
            yield records, inbound, t0, t1

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The flows as record batches in time order (what replay sends)."""
        for records, _, _, _ in self.chunks():
            yield from records.table().to_batches()


def simulate(cfg: SimConfig, out: Path | str, progress: Callable[[float], None] | None = None) -> SimResult:
    """Write flows.parquet (+ flows.csv), customers.csv, nodes.csv, alerts.csv, truth.csv and the
    resolved config.toml to `out`.

    `progress`: optional callable advanced by the number of minutes generated.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(cfg)
    al = sim.plan.alerts
    observed = np.zeros((2, len(al.node)))
    writer = FlowWriter(out, cfg.output.parquet, cfg.output.csv, cfg.output.compression)
    records = 0
    try:
        for chunk, inbound, t0, t1 in sim.chunks():
            # sorting and Arrow conversion here, Parquet encoding on the writer thread: the two
            # threads then carry about equal CPU (measured: 1.14 vs 0.83 CPU-s per default day)
            writer.write(chunk.table())
            records += len(chunk)
            # what the flows show inside each alert: summed chunk by chunk (memory stays O(alerts))
            hit = np.flatnonzero((al.start < t1) & (al.end > t0))
            for a in hit:
                lo, hi = max(al.start[a], t0) - t0, min(al.end[a], t1) - t0
                observed[:, a] += inbound[:, al.node[a], lo:hi].sum(axis=1)
            if progress is not None:
                progress(t1 - t0)
    finally:
        writer.close()
    write_tables(out, sim.topo, sim.plan, sim.start, observed)
    save_beside(out, cfg)  # config.toml: the run can be repeated, and readers learn start and days
    ev = sim.plan.events
    return SimResult(out, records, sim.minutes, sim.topo.n_nodes, int((ev.kind == "attack").sum()),
                     int((ev.kind == "surge").sum()), len(al.node), sim.plan.dropped)
