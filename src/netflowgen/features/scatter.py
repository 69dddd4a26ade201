"""Flows -> the dense feature table, in one compiled pass per batch (numba).

Each flow arrives as its raw fields (the node index of each end, protocol, flags, ports, start
time, counts, sampling rate). The loop derives what the Polars expressions of `classes`
define, through lookup tables computed from those very expressions (`ClassTables`): the class
bits of each end, the minute, and the sampling-scaled measures. Then:

The dense table (86 features + a spare row, x nodes x minutes, float64) is far larger than the CPU
caches (1.7 GB for 1700 nodes x 1 day), so adding each node end's 7 values where they belong costs
a cache and TLB miss per value when the ends arrive in flow order (numpy `np.add.at`: 2.0-2.6 s for
20 M ends, measured; the same loop compiled: 2.4-3.0 s, memory-bound). The ends of a batch are
therefore first bucketed by node block (a counting sort into one reusable buffer of packed rows:
position and class in one int64, then the three integer measures), so that the adds of a block
land in its own few MB of the table (87 rows x its minutes) while they are made: 1.0-1.1 s for the
same 20 M ends (blocks of 1 node: 1.0-1.4 s; 64 nodes: 1.2 s), and no temporary arrays per batch.

Sums of integer values in float64 are exact below 2^53 in any order, so the result equals the
flow-order one bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from netflowgen.schema import MS_PER_MINUTE


@dataclass(frozen=True)
class ClassTables:
    """The class bits of a flow's ends as lookups (all int64): the "in" end (the destination) has
    `in_base[proto * 256 + tcp_flags] + (in_port[dst_port] if bearing[proto] else 0)`, the "out"
    end the same with `out_base`, `out_port` and the source port. Built by
    `classes.class_tables` from the Polars class expressions, and checked against them."""

    in_base: np.ndarray  # (65536,)
    out_base: np.ndarray  # (65536,)
    in_port: np.ndarray  # (65536,)
    out_port: np.ndarray  # (65536,)
    bearing: np.ndarray  # (256,) 1 where the protocol has ports

    def classes(self, proto: np.ndarray, flags: np.ndarray, src_port: np.ndarray,
                dst_port: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class bits of the in end, of the out end) for arrays of flows, with numpy: what the
        compiled loop computes per flow."""
        pf = proto.astype(np.int64) * 256 + flags
        b = self.bearing[proto]
        return (self.in_base[pf] + b * self.in_port[dst_port],
                self.out_base[pf] + b * self.out_port[src_port])


def _bucket_and_add(flat, size, n_min, first_minute, n_buckets, bucket_shift, dst_node, src_node,
                    proto, flags, src_port, dst_port, ts_ms, packets, octets, rate, xkey, counts,
                    n_x, xkeys, xcodes, in_base, out_base, in_port, out_port, bearing, tp, tb, tf,
                    cls_bits, start, buf):
    n = ts_ms.shape[0]
    for j in range(n_buckets + 1):
        start[j] = 0
    with_counts = counts.shape[0] > 0
    n_keys = xkeys.shape[0]
    for i in range(n):
        m = ts_ms[i] // MS_PER_MINUTE - first_minute
        inside = m >= 0 and m < n_min
        x = n_x - 1
        if with_counts:  # exporter code: binary search of its key among the sorted known keys
            h = xkey[i]
            lo, hi = 0, n_keys
            while lo < hi:
                mid = (lo + hi) >> 1
                if xkeys[mid] < h:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < n_keys and xkeys[lo] == h:
                x = xcodes[lo]
        for node in (dst_node[i], src_node[i]):
            if node < 0:
                continue
            if with_counts:
                counts[node * n_x + x] += 1
            if inside:
                start[(node >> bucket_shift) + 1] += 1
    for j in range(n_buckets):
        start[j + 1] += start[j]
    total = start[n_buckets]
    for i in range(n):  # counting sort into one packed row per end; `start` ends as bucket ends
        m = ts_ms[i] // MS_PER_MINUTE - first_minute
        if m < 0 or m >= n_min:
            continue
        pf = np.int64(proto[i]) * 256 + flags[i]
        has_ports = bearing[proto[i]]
        r = np.int64(rate[i])
        for end in range(2):
            node = dst_node[i] if end == 0 else src_node[i]
            if node < 0:
                continue
            if end == 0:
                c = in_base[pf] + (in_port[dst_port[i]] if has_ports else 0)
            else:
                c = out_base[pf] + (out_port[src_port[i]] if has_ports else 0)
            b = node >> bucket_shift
            k = start[b]
            start[b] = k + 1
            buf[k, 0] = ((node * n_min + m) << cls_bits) | c
            buf[k, 1] = packets[i] * r
            buf[k, 2] = octets[i] * r
            buf[k, 3] = r
    mask = (1 << cls_bits) - 1
    for k in range(total):
        key = buf[k, 0]
        c = key & mask
        pos = key >> cls_bits
        v = np.float64(buf[k, 1])
        for s in range(tp.shape[1]):
            flat[tp[c, s] * size + pos] += v
        v = np.float64(buf[k, 2])
        for s in range(tb.shape[1]):
            flat[tb[c, s] * size + pos] += v
        v = np.float64(buf[k, 3])
        for s in range(tf.shape[1]):
            flat[tf[c, s] * size + pos] += v
    return total


# Compiled on first use and cached beside this file (about 3 s once; loading the cache ~0.2 s).
_kernel: Any = njit(nogil=True, cache=True)(_bucket_and_add)  # numba's Dispatcher hides the signature

# The dtype each flow column is handed to the loop in (one compiled signature).
FLOW_DTYPES: dict[str, type] = {
    "dst_node": np.int32, "src_node": np.int32, "proto": np.uint8, "tcp_flags": np.uint8,
    "src_port": np.uint16, "dst_port": np.uint16, "ts_ms": np.int64, "packets": np.int64,
    "bytes": np.int64, "sampling_rate": np.int64, "xkey": np.uint64}


class DenseScatter:
    """Adds batches of flows (each with up to two node ends) into a dense (features + spare,
    nodes x minutes) float64 table whose first minute is `first_minute` (minutes since the epoch).

    `routes`: per measure (est_pkt, est_byt, est_flow), a (class values, slots) int64 table: the
    feature row each slot of a class value feeds (the spare row when none); see
    `classes.routing_slots`; `class_bits`: the width of a class value. `counts`: optional
    (nodes x exporters,) int64 array that counts every node end (inside the minute range or not)
    per node and exporter code; a flow's code is that of its `xkey` in `exporter_keys` (distinct
    uint64 keys, e.g. hashes of the exporter texts; code = position), n_exporters - 1 when it is
    none of them. The compiled loop releases the GIL."""

    BLOCK_BYTES = 4 << 20  # table bytes per bucket of nodes: about L2-to-L3 sized

    def __init__(self, table: np.ndarray, n_nodes: int, n_minutes: int, first_minute: int,
                 classes: ClassTables, routes: list[np.ndarray], class_bits: int,
                 counts: np.ndarray | None = None, n_exporters: int = 1,
                 exporter_keys: np.ndarray | None = None) -> None:
        if table.shape[1] != n_nodes * n_minutes or not table.flags.c_contiguous:
            raise ValueError(f"table of shape {table.shape} is not (rows, {n_nodes} x {n_minutes})")
        self.flat = table.reshape(-1)
        self.size, self.n_min, self.first = n_nodes * n_minutes, n_minutes, first_minute
        self.tables = [_readonly(t, np.int64) for t in (
            classes.in_base, classes.out_base, classes.in_port, classes.out_port, classes.bearing)]
        self.routes = [_readonly(r, np.int64) for r in routes]
        self.cls_bits = class_bits
        self.counts = counts if counts is not None else np.zeros(0, dtype=np.int64)
        self.n_x = n_exporters
        keys = np.asarray(exporter_keys if exporter_keys is not None else [], dtype=np.uint64)
        if len(np.unique(keys)) != len(keys) or len(keys) >= max(n_exporters, 1):
            raise ValueError("exporter keys must be distinct and fewer than n_exporters")
        order = np.argsort(keys, kind="stable")
        self.xkeys, self.xcodes = _readonly(keys[order], np.uint64), _readonly(order, np.int64)
        per_node = max(1, table.shape[0] * n_minutes * table.itemsize)
        self.bucket_shift = max(0, (self.BLOCK_BYTES // per_node).bit_length() - 1)
        self.n_buckets = ((max(n_nodes, 1) - 1) >> self.bucket_shift) + 1
        self._start = np.zeros(self.n_buckets + 1, dtype=np.int64)
        self._buf = np.empty((0, 4), dtype=np.int64)

    def add(self, flows: dict[str, np.ndarray]) -> int:
        """Add one batch of flows: (n,) arrays named as `FLOW_DTYPES` (converted to those types):
        the node index of each end (-1 when that end is no node), protocol, TCP flags, ports,
        start time (ms since the epoch; flows outside the table's minutes are only counted),
        packets, bytes, sampling rate and, when counting, the exporter key. Returns the node
        ends added."""
        n = len(flows["ts_ms"])
        if 2 * n > len(self._buf):  # grown rarely: batches have about the same size
            self._buf = np.empty((max(2 * n, len(self._buf) * 5 // 4), 4), dtype=np.int64)
        if len(self.counts) and "xkey" not in flows:
            raise ValueError("exporter codes are needed to count ends per exporter")
        cols = [_readonly(flows[c] if c in flows else np.zeros(0), t) for c, t in FLOW_DTYPES.items()]
        return int(_kernel(self.flat, self.size, self.n_min, self.first, self.n_buckets,
                           self.bucket_shift, *cols, self.counts, self.n_x, self.xkeys,
                           self.xcodes, *self.tables,
                           *self.routes, self.cls_bits, self._start, self._buf))


def _readonly(a: np.ndarray, dtype: type) -> np.ndarray:
    """A contiguous read-only view of `a` as `dtype` (copied only when needed). Polars hands out
    read-only arrays when it can share its memory and writable copies when it cannot; numba
    compiles a separate loop for each (~3 s), so every input is made read-only."""
    view: np.ndarray = np.ascontiguousarray(a, dtype=dtype).view()
    view.flags.writeable = False
    return view


def warm_up() -> None:
    """Import numba and load the compiled loop (from its cache, ~0.75 s here; or compile it,
    ~3 s once) on a one-flow batch, so that callers can do it in a background thread while
    Polars works (`build_features` does it during the survey)."""
    zero = np.zeros(65536, dtype=np.int64)
    classes = ClassTables(zero, zero, zero, zero, zero[:256])
    one: dict[str, np.ndarray] = {c: np.zeros(1, dtype=t) for c, t in FLOW_DTYPES.items() if c != "xkey"}
    DenseScatter(np.zeros((1, 1)), 1, 1, 0, classes,
                 [np.zeros((1024, 0), dtype=np.int64)] * 3, 10).add(one)
