"""The compiled dense scatter: its class lookups equal the Polars class expressions, and it adds,
buckets and counts exactly (against a direct numpy computation)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from netflowgen.features import classes as compiler
from netflowgen.features import polars_engine as eng
from netflowgen.features.definition import DIR_IN, DIR_OUT
from netflowgen.features.scatter import DenseScatter
from netflowgen.schema import FEATURE_NAMES, MEASURES, PORT_BEARING_PROTOCOLS, PORT_CLASSES, PROTOCOL_CLASSES, TCP_FLAG_VALUES


def test_class_tables_equal_the_polars_expressions():
    rng = np.random.default_rng(5)
    n = 300_000
    proto = rng.integers(0, 256, n).astype(np.uint8)
    proto[: n // 2] = rng.choice(np.array([1, 6, 17, 47, 58, 132, 136], np.uint8), n // 2)
    flags = rng.integers(0, 256, n).astype(np.uint8)
    flags[: n // 3] = rng.choice(np.array([0, 16, 24, 2, 17, 18, 4, 25, 27], np.uint8), n // 3)
    sport = rng.integers(0, 65536, n).astype(np.uint16)
    dport = rng.choice(np.array([0, 1, 52, 53, 54, 80, 123, 443, 1023, 1024, 49151, 49152, 65535],
                                np.uint16), n)
    df = pl.DataFrame({"proto": proto, "tcp_flags": flags, "src_port": sport, "dst_port": dport})
    want = df.with_columns(compiler.polars_codes()).select(cls_in=compiler.class_bits(DIR_IN, "port_in_c"),
                                                cls_out=compiler.class_bits(DIR_OUT, "port_out_c"))
    got_in, got_out = eng.class_tables().classes(proto, flags, sport, dport)
    assert np.array_equal(got_in, want["cls_in"].to_numpy())
    assert np.array_equal(got_out, want["cls_out"].to_numpy())
    assert len(np.unique(got_in)) >= 20 and len(np.unique(got_out)) >= 30  # not all one class


class _OneNodeBuckets(DenseScatter):
    BLOCK_BYTES = 1


@pytest.mark.parametrize("kind", [DenseScatter, _OneNodeBuckets])  # one bucket; one per node
def test_scatter_equals_direct_sums_and_counts(kind):
    rng = np.random.default_rng(1)
    n_nodes, n_min, first, n = 37, 50, 1_000, 6_000
    classes = eng.class_tables()
    routes = [np.stack(m, axis=1) for m in eng.routing_slots()]
    flows = {
        "dst_node": rng.integers(-1, n_nodes, n).astype(np.int32),
        "src_node": rng.integers(-1, n_nodes, n).astype(np.int32),
        "proto": rng.choice(np.array([1, 6, 17, 47], np.uint8), n),
        "tcp_flags": rng.choice(np.array([2, 16, 18, 27], np.uint8), n),
        "src_port": rng.integers(0, 65536, n).astype(np.uint16),
        "dst_port": rng.choice(np.array([53, 80, 443, 8080], np.uint16), n),
        # some flows before and after the table's minutes: counted, not added
        "ts_ms": (first + rng.integers(-3, n_min + 3, n)) * 60_000 + rng.integers(0, 60_000, n),
        "packets": rng.integers(1, 1000, n), "bytes": rng.integers(40, 10**6, n),
        "sampling_rate": rng.choice(np.array([1, 10, 100]), n),
        "xkey": rng.choice(np.array([7, 9, 123456789, 5], np.uint64), n),  # 5: unknown
    }
    table = np.zeros((len(compiler.FEATURES) + 1, n_nodes * n_min))
    counts = np.zeros(n_nodes * 4, dtype=np.int64)  # exporters 0..2 and 3 = unknown
    sc = kind(table, n_nodes, n_min, first, classes, routes, compiler.CLS_BITS, counts, 4,
              np.array([123456789, 7, 9], np.uint64))
    assert sc.n_buckets == (1 if kind is DenseScatter else n_nodes)
    half = n // 2
    added = sc.add({k: v[:half] for k, v in flows.items()})
    added += sc.add({k: v[half:] for k, v in flows.items()})

    # The reference is computed from the schema's class tables and feature names alone, flow by
    # flow (no class bits, routing tables or compiled expressions of the code under test).
    want = np.zeros_like(table)
    want_counts = np.zeros_like(counts)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    minute = flows["ts_ms"] // 60_000 - first
    ends = 0
    for k in range(n):
        rate = int(flows["sampling_rate"][k])
        vals = {"pkt": int(flows["packets"][k]) * rate, "byt": int(flows["bytes"][k]) * rate, "flow": rate}
        proto, flags = int(flows["proto"][k]), int(flows["tcp_flags"][k])
        pclass = next((c for c, nums in PROTOCOL_CLASSES.items() if nums and proto in nums), "other")
        code = {123456789: 0, 7: 1, 9: 2}.get(int(flows["xkey"][k]), 3)
        for direction, node, port in (("in", flows["dst_node"][k], flows["dst_port"][k]),
                                      ("out", flows["src_node"][k], flows["src_port"][k])):
            if node < 0:
                continue
            want_counts[node * 4 + code] += 1
            if not 0 <= minute[k] < n_min:
                continue
            ends += 1
            port_class = "port0" if proto not in PORT_BEARING_PROTOCOLS else next(
                c for c, lo, hi in PORT_CLASSES if lo <= int(port) <= hi)
            names = [f"{direction}_{g}_{m}" for g in ("all", pclass, port_class) for m in MEASURES]
            if direction == "out" and pclass == "tcp" and flags in TCP_FLAG_VALUES:
                names.append(f"out_flag{flags}_flow")
            for name in names:
                want[col[name], node * n_min + minute[k]] += vals[name.rsplit("_", 1)[1]]
    assert added == ends > n // 2
    assert np.array_equal(table[:-1], want[:-1])
    assert np.array_equal(counts, want_counts)


def test_row_slices_follow_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "f.parquet"
    with pq.ParquetWriter(path, pa.schema([("a", pa.int64())])) as w:
        for rows in (30, 30, 30, 100, 5, 5):  # row groups
            w.write_table(pa.table({"a": np.arange(rows)}), row_group_size=rows)
    assert [pq.ParquetFile(path).metadata.row_group(g).num_rows for g in range(6)] == [30, 30, 30, 100, 5, 5]
    got = eng.row_slices(path, target=40)
    assert got == [(0, 30), (30, 30), (60, 30), (90, 40), (130, 40), (170, 20), (190, 10)]
    assert eng.row_slices(path, target=1000) == [(0, 200)]


def test_one_compiled_loop_for_every_kind_of_input():
    """Read-only (Polars) and writable (numpy) inputs of any dtype reach the compiled loop as one
    signature: each extra one would cost a ~3 s compilation in a user's first run."""
    from netflowgen.features import scatter

    scatter.warm_up()
    classes = eng.class_tables()  # from Polars: read-only arrays
    routes = [np.stack(m, axis=1) for m in eng.routing_slots()]
    writable = {c: np.ones(3, dtype=np.int32) for c in scatter.FLOW_DTYPES}
    readonly = pl.DataFrame({c: [1, 2, 3] for c in scatter.FLOW_DTYPES}).to_dict(as_series=False)
    readonly = {c: pl.Series(v).to_numpy() for c, v in readonly.items()}
    for flows in (writable, readonly):
        sc = DenseScatter(np.zeros((len(compiler.FEATURES) + 1, 4 * 5)), 4, 5, 0, classes, routes,
                          compiler.CLS_BITS, np.zeros(4 * 2, np.int64), 2, np.array([1], np.uint64))
        sc.add(flows)
    assert len(scatter._kernel.signatures) == 1
