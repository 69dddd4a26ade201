"""Flows -> node-minute features with PySpark (any master URL: local[N], spark://, yarn, k8s).

The same declarative `FEATURES` compile to Spark column expressions. Spark does the two passes
(survey; join to the broadcast node table, class codes, 86 conditional sums per node-minute) and
writes the sparse node-minute rows as Parquet range-partitioned by node; the driver then densifies
them chunk by chunk with the same `dense` writer as the Polars engine, so both outputs are one
Parquet file with the same schema and metadata. Sums are of integers (default attribution), so the
two engines agree exactly; with `spread_over_minutes` they agree to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from netflowgen.features import definition as D  # the code rules, compiled to Spark columns here
from netflowgen.features.classes import feature_terms
from netflowgen.features.dense import nodes_per_chunk, scatter_sparse
from netflowgen.features.settings import FeatureConfig
from netflowgen.features.timeline import Survey, TimeRange, survey_from_counts
from netflowgen.schema import FEATURE_NAMES, MS_PER_MINUTE

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


def spark_session(cfg: FeatureConfig) -> "SparkSession":
    """A SparkSession for `cfg.spark_master` (an already running one is reused), UTC times."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        from netflowgen.rejects import InputError
        raise InputError("the Spark engine needs pyspark: pip install 'netflowgen[spark]' "
                         "(make setup installs it), or use --engine polars") from None

    return (SparkSession.builder.master(cfg.spark_master).appName("netflowgen-features")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.memory", cfg.spark_driver_memory)
            .config("spark.sql.shuffle.partitions", str(cfg.spark_shuffle_partitions))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate())


def _read(spark: "SparkSession", paths: list[Path]) -> "DataFrame":
    return spark.read.parquet(*[str(Path(p).resolve()) for p in paths])


def _minutes(spread: bool) -> tuple["Column", "Column"]:
    """(first, last) attributed minute since the epoch; exact integer floor division."""
    from pyspark.sql import functions as F

    def minute(col: str) -> "Column":
        ms = F.unix_millis(F.col(col))
        return ((ms - F.pmod(ms, F.lit(MS_PER_MINUTE))) / MS_PER_MINUTE).cast("long")

    start = minute("ts_start")
    return (start, F.greatest(minute("ts_end"), start)) if spread else (start, start)


def survey(spark: "SparkSession", paths: list[Path], customers: bool, spread: bool,
           by_exporter: bool = False) -> Survey:
    """First pass (see `polars_engine.survey`), computed by Spark, results collected to Polars."""
    from pyspark.sql import functions as F

    df = _read(spark, paths)
    start, end = _minutes(spread)
    keys = ["exporter"] if by_exporter else []
    key_schema: dict[str, Any] = {"exporter": pl.String} if by_exporter else {}
    spans = df.select(*keys, start.alias("s"), end.alias("e"))
    starts = _to_polars(spans.groupBy(*keys, F.col("s").alias("minute")).agg(
        F.count(F.lit(1)).alias("n")), {**key_schema, "minute": pl.Int64, "n": pl.Int64})
    events = None
    if spread:
        ev = spans.select(*keys, F.col("s").alias("minute"),
                          F.lit(1).cast("long").alias("delta")).unionByName(
            spans.select(*keys, (F.col("e") + 1).alias("minute"),
                         F.lit(-1).cast("long").alias("delta")))
        events = _to_polars(ev.groupBy(*keys, "minute").agg(F.sum("delta").alias("delta")),
                            {**key_schema, "minute": pl.Int64, "delta": pl.Int64})
    if customers:
        ips = _to_polars(df.select(F.col("src_ip").alias("ip")).unionByName(
            df.select(F.col("dst_ip").alias("ip"))).distinct(), {"ip": pl.String})
    else:
        ips = _to_polars(df.groupBy("dst_ip").agg(F.count(F.lit(1)).alias("n")),
                         {"dst_ip": pl.String, "n": pl.Int64})
    return survey_from_counts(starts, events, ips)


def _to_polars(df: "DataFrame", schema: dict[str, Any]) -> pl.DataFrame:
    """Collect a (small) Spark result to Polars through Arrow."""
    table = df.toArrow()
    if not table.num_rows:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(pl.from_arrow(table)).cast(pl.Schema(schema))


def _codes(port: str) -> list["Column"]:
    """Class codes of a flow seen from one end (`port`: that end's port column); the same rules as
    `classes.polars_codes`, from the same `definition` tables."""
    from pyspark.sql import functions as F

    proto = F.col("proto").cast("int")
    rules, other = D.protocol_rules()
    pc = F.when(proto.isin(*rules[0][0]), rules[0][1])
    for nums, code in rules[1:]:
        pc = pc.when(proto.isin(*nums), code)
    p = F.col(port).cast("int")
    port_code = F.when(~proto.isin(*D.PORT_BEARING_PROTOCOLS), D.PORT0_CODE)
    for lo, hi, code in D.port_rules():
        port_code = port_code.when(p.between(lo, hi), code)
    flags = F.col("tcp_flags").cast("int")
    fc = F.when(proto != D.TCP, D.FLAG_NOT_TCP)
    for value, code in D.FLAG_CODES.items():
        fc = fc.when(flags == value, code)
    return [pc.otherwise(other).alias("proto_c"),
            port_code.otherwise(D.PORT0_CODE).alias("port_c"), fc.otherwise(D.FLAG_UNLISTED).alias("flag_c")]


def feature_aggs() -> list["Column"]:
    """The 86 features compiled to Spark aggregations (contract order)."""
    from pyspark.sql import functions as F

    out = []
    for name, direction, terms, measure in feature_terms():
        cond = F.col("dir") == direction
        for column, value in terms:
            cond = cond & (F.col(column) == value)
        out.append(F.sum(F.when(cond, F.col(measure)).otherwise(F.lit(0))).cast("double").alias(name))
    return out


def aggregate(spark: "SparkSession", paths: list[Path], nodes: pl.DataFrame, rng: TimeRange,
              spread: bool, workdir: Path, chunk_rows: int, by_exporter: bool = False,
              ) -> tuple["SparkChunks", pl.DataFrame | None]:
    """Second pass: sparse (node_idx, minute offset, 86 features) rows written as Parquet under
    `workdir`, one folder per block of nodes that `dense.write_dense` will write together (so the
    driver reads each block back alone); returns the reader of those blocks and, with
    `by_exporter`, (node_idx, exporter, n) as `polars_engine.semi_aggregate`."""
    from pyspark.sql import functions as F

    start, end = _minutes(spread)
    rate = F.col("sampling_rate").cast("long")
    xc = ["exporter"] if by_exporter else []
    base = _read(spark, paths).select(
        "src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags", *xc,
        (start - rng.first).alias("s"), (end - rng.first).alias("e"),
        (F.col("packets").cast("long") * rate).alias("est_pkt"),
        (F.col("bytes").cast("long") * rate).alias("est_byt"), rate.alias("est_flow"))
    node_df = F.broadcast(spark.createDataFrame(
        nodes.select("node", "node_idx").to_arrow(), schema="node string, node_idx int"))
    ends = []
    for direction, ip, port in ((D.DIR_IN, "dst_ip", "dst_port"), (D.DIR_OUT, "src_ip", "src_port")):
        ends.append(base.join(node_df, base[ip] == node_df["node"], "inner").select(
            "node_idx", *xc, "s", "e", "est_pkt", "est_byt", "est_flow", *_codes(port),
            F.lit(direction).alias("dir")))
    rows = ends[0].unionByName(ends[1])
    counts = None
    if by_exporter:  # records per node end and exporter, whole input (as the Polars engine)
        counts = _to_polars(rows.groupBy("node_idx", "exporter").agg(F.count(F.lit(1)).alias("n")),
                            {"node_idx": pl.Int32, "exporter": pl.String, "n": pl.Int64})
    if spread:
        # As in polars_engine: shares of the whole span, minutes generated inside the range only.
        k = (F.col("e") - F.col("s") + 1).cast("double")
        lo, hi = F.greatest(F.col("s"), F.lit(0)), F.least(F.col("e"), F.lit(rng.n - 1))
        rows = rows.where((F.col("e") >= 0) & (F.col("s") <= rng.n - 1)).select(
            "node_idx", "dir", "proto_c", "port_c", "flag_c",
            *[(F.col(v) / k).alias(v) for v in ("est_pkt", "est_byt", "est_flow")],
            F.explode(F.sequence(lo, hi)).alias("minute"))
    else:
        rows = rows.withColumnRenamed("s", "minute")
    rows = rows.where(F.col("minute").between(0, rng.n - 1))
    # Sum per (node, minute, codes) first - 3 cheap sums per flow - then the 86 conditional sums
    # run over those rows, fewer than flows wherever a node-minute has many flows.
    keys = ["node_idx", "minute", "dir", "proto_c", "port_c", "flag_c"]
    semi = rows.groupBy(*keys).agg(*[F.sum(v).alias(v) for v in ("est_pkt", "est_byt", "est_flow")])
    sparse = semi.groupBy("node_idx", F.col("minute").cast("int").alias("minute")).agg(*feature_aggs())
    per_chunk = nodes_per_chunk(chunk_rows, rng.n)
    (sparse.withColumn("block", (F.col("node_idx") / per_chunk).cast("int"))
     .write.mode("overwrite").partitionBy("block").parquet(str(workdir)))
    return SparkChunks(workdir, per_chunk), counts


class SparkChunks:
    """Reads the sparse rows of one block of nodes back from Spark's output folder `block=K`."""

    def __init__(self, workdir: Path, per_chunk: int) -> None:
        self.workdir, self.per_chunk = Path(workdir), per_chunk

    def __call__(self, lo: int, hi: int, n_minutes: int) -> np.ndarray:
        schema: dict[str, Any] = {"node_idx": pl.Int32, "minute": pl.Int32, **{n: pl.Float64 for n in FEATURE_NAMES}}
        if lo % self.per_chunk or hi - lo > self.per_chunk:
            raise ValueError(f"node range {lo}..{hi} is not one block of {self.per_chunk}")
        files = sorted(str(p) for p in (self.workdir / f"block={lo // self.per_chunk}").glob("*.parquet"))
        if not files:  # no node of this block had traffic in the range
            sparse = pl.DataFrame(schema=schema)
        else:
            sparse = pl.read_parquet(files, hive_partitioning=False).select(list(schema)).cast(pl.Schema(schema))
        return scatter_sparse(sparse, lo, hi, n_minutes)
