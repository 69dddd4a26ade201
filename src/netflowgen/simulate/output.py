"""Writing the simulator's files: flows (Parquet, optional nfdump-style CSV), customers.csv,
nodes.csv, alerts.csv and truth.csv. Fixed writer settings and no wall-clock values, so one seed
always gives byte-identical files."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from pathlib import Path
from typing import Protocol, Union

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from netflowgen.schema import FLOW_SCHEMA
from netflowgen.simulate.events import Plan
from netflowgen.simulate.topology import Topology
from netflowgen.simulate.traffic import ARCHETYPES

# nfdump 1.7 `-o csv` header (48 columns); the simulator fills the flow fields and leaves the rest 0.
NFDUMP_CSV_COLUMNS = (
    "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,"
    "nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,"
    "mpls10,cl,sl,al,ra,eng,exid,tr").split(",")
_PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMP6"}


def minute_text(start: dt.datetime, minutes: np.ndarray) -> list[str]:
    """Minute offsets -> ISO 8601 UTC text ("2024-01-01T00:05:00Z")."""
    return [(start + dt.timedelta(minutes=int(m))).strftime("%Y-%m-%dT%H:%M:%SZ") for m in minutes]


class _HasTable(Protocol):
    def table(self) -> pa.Table: ...


TableSource = Union[pa.Table, _HasTable]


class FlowWriter:
    """Streams chunk tables to flows.parquet (one row group per chunk) and optionally flows.csv.

    Writing happens on a background thread (Parquet encoding and compression release the GIL), so
    the next chunk is generated while this one is compressed; a queue of one chunk bounds memory.
    Chunks are written in the order given, so the file is the same as with a synchronous writer.
    """

    def __init__(self, out: Path, parquet: bool, csv: bool, compression: str) -> None:
        self._queue: queue.Queue[TableSource | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flow-writer", daemon=True)
        self.pq = pq.ParquetWriter(out / "flows.parquet", FLOW_SCHEMA, compression=compression,
                                   compression_level=1 if compression == "zstd" else None,
                                   use_dictionary=["src_ip", "dst_ip", "exporter"],
                                   write_statistics=True) if parquet else None
        self.csv = open(out / "flows.csv", "wb") if csv else None
        if self.csv:
            self.csv.write((",".join(NFDUMP_CSV_COLUMNS) + "\n").encode())
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure so the producer never blocks
            try:
                table = item if isinstance(item, pa.Table) else item.table()
                if self.pq is not None:
                    self.pq.write_table(table, row_group_size=max(1, table.num_rows))
                if self.csv is not None and table.num_rows:
                    self.csv.write(_nfdump_csv(table).write_csv(include_header=False).encode())
            except BaseException as e:  # re-raised in the caller's thread
                self._error = e

    def write(self, chunk: "TableSource") -> None:
        """Queue one chunk: a table, or anything with `.table()` (built on the writer thread).
        Blocks while the previous chunk is still being written."""
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Finish writing, close the files, and raise any error the writer thread met."""
        self._queue.put(None)
        self._thread.join()
        if self.pq is not None:
            self.pq.close()
        if self.csv is not None:
            self.csv.close()
        if self._error is not None:
            raise self._error


def _nfdump_csv(table: pa.Table) -> pl.DataFrame:
    """A chunk as nfdump `-o csv` rows: times UTC at 1 s, protocol names, flags as 'CEUAPRSF'."""
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    flag = pl.col("tcp_flags").cast(pl.Int32)
    letters = [(128, "C"), (64, "E"), (32, "U"), (16, "A"), (8, "P"), (4, "R"), (2, "S"), (1, "F")]
    flg = pl.concat_str([pl.when((flag & bit) > 0).then(pl.lit(ch)).otherwise(pl.lit("."))
                         for bit, ch in letters])
    pr = pl.col("proto").cast(pl.Int32)
    pr_name = pl.col("proto").cast(pl.String)
    for num, name in _PROTO_NAMES.items():
        pr_name = pl.when(pr == num).then(pl.lit(name)).otherwise(pr_name)
    zero = pl.lit(0)
    cols = {
        "ts": pl.col("ts_start").dt.strftime("%Y-%m-%d %H:%M:%S"),
        "te": pl.col("ts_end").dt.strftime("%Y-%m-%d %H:%M:%S"),
        "td": ((pl.col("ts_end") - pl.col("ts_start")).dt.total_milliseconds() / 1000).round(3),
        "sa": pl.col("src_ip"), "da": pl.col("dst_ip"), "sp": pl.col("src_port"),
        "dp": pl.col("dst_port"), "pr": pr_name, "flg": flg, "fwd": zero, "stos": zero,
        "ipkt": pl.col("packets"), "ibyt": pl.col("bytes"), "opkt": zero, "obyt": zero,
        "in": pl.col("in_if"), "out": pl.col("out_if"), "ra": pl.col("exporter"),
    }
    return df.select([cols.get(c, zero).alias(c) for c in NFDUMP_CSV_COLUMNS])


def alerts_frame(topo: Topology, plan: Plan, start: dt.datetime, alert_observed: np.ndarray
                 ) -> pl.DataFrame:
    """The alerts.csv table; `alert_observed` (2, A): estimated packets and bytes the flows show
    inside each alert, scaled by the alert's report factor into reported_pkts/reported_bytes."""
    al = plan.alerts
    return pl.DataFrame({
        "target_ip": [topo.node_ip[v] for v in al.node], "start": minute_text(start, al.start),
        "end": minute_text(start, al.end), "attack_type": list(al.type),
        "false_positive": al.false_positive,
        "reported_pkts": np.rint(alert_observed[0] * al.report_factor).astype(np.int64),
        "reported_bytes": np.rint(alert_observed[1] * al.report_factor).astype(np.int64),
    })


def write_tables(out: Path, topo: Topology, plan: Plan, start: dt.datetime,
                 alert_observed: np.ndarray) -> None:
    """customers.csv, nodes.csv, alerts.csv and truth.csv.

    `alert_observed`: (2, A) estimated packets and bytes the flows show inside each alert.
    """
    pl.DataFrame({"customer_id": topo.customer_ids, "prefix": topo.customer_prefixes}
                 ).write_csv(out / "customers.csv")
    pl.DataFrame({
        "ip": topo.node_ip, "customer_id": [topo.customer_ids[c] for c in topo.node_customer],
        "archetype": [ARCHETYPES[a].name for a in topo.node_archetype],
        "peak_sessions_per_min": np.round(topo.node_scale, 4),
        "hour_offset": np.round(topo.node_hour_offset, 3),
        "exporter": [topo.exporter_ip[e] for e in topo.node_exporter],
        "sampling_rate": topo.node_rate,
    }).write_csv(out / "nodes.csv")
    alerts_frame(topo, plan, start, alert_observed).write_csv(out / "alerts.csv")
    al = plan.alerts
    ev = plan.events
    alert_of = np.full(len(ev), -1, np.int64)
    real = al.event >= 0
    alert_of[al.event[real]] = al.start[real]
    ou = plan.outages
    n_ev, n_out = len(ev), len(ou.start)
    truth = pl.DataFrame({
        "event_id": np.arange(n_ev + n_out),
        "kind": list(ev.kind) + ["outage"] * n_out,
        "type": list(ev.type) + ["exporter_outage"] * n_out,
        "target": [topo.node_ip[v] for v in ev.node] + [topo.exporter_ip[x] for x in ou.exporter],
        "campaign": np.concatenate([ev.campaign, -np.ones(n_out, np.int64)]),
        "onset": minute_text(start, ev.onset) + minute_text(start, ou.start),
        "peak_start": minute_text(start, ev.onset + ev.ramp) + minute_text(start, ou.start),
        "peak_end": minute_text(start, ev.onset + ev.ramp + ev.plateau) + minute_text(start, ou.end),
        "end": minute_text(start, ev.end) + minute_text(start, ou.end),
        "peak_bytes_per_min": np.concatenate([np.rint(ev.peak_bytes), np.zeros(n_out)]).astype(np.int64),
        "multiple_of_normal": np.concatenate([np.round(ev.multiple, 3), np.zeros(n_out)]),
        "sources": np.concatenate([np.rint(ev.sources), np.zeros(n_out)]).astype(np.int64),
        "alerted": np.concatenate([alert_of >= 0, np.zeros(n_out, bool)]),
        "alert_start": [s if a >= 0 else None for s, a in
                        zip(minute_text(start, np.maximum(alert_of, 0)), alert_of)] + [None] * n_out,
    })
    truth.write_csv(out / "truth.csv")
