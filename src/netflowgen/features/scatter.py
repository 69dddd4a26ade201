"""Node ends -> the dense feature table, in one compiled pass per batch (numba).

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

import numpy as np

from numba import njit


def _bucket_and_add(flat, size, n_min, n_buckets, bucket_shift, dst_node, src_node, cls_in,
                    cls_out, minute, pkt, byt, flow, xc, counts, n_x, tp, tb, tf, cls_bits, start,
                    buf):
    n = minute.shape[0]
    for j in range(n_buckets + 1):
        start[j] = 0
    with_counts = counts.shape[0] > 0
    for i in range(n):
        m = minute[i]
        inside = m >= 0 and m < n_min
        for node in (dst_node[i], src_node[i]):
            if node < 0:
                continue
            if with_counts:
                counts[node * n_x + xc[i]] += 1
            if inside:
                start[(node >> bucket_shift) + 1] += 1
    for j in range(n_buckets):
        start[j + 1] += start[j]
    total = start[n_buckets]
    for i in range(n):  # counting sort into one packed row per end; `start` ends as bucket ends
        m = minute[i]
        if m < 0 or m >= n_min:
            continue
        for end in range(2):
            node = dst_node[i] if end == 0 else src_node[i]
            if node < 0:
                continue
            b = node >> bucket_shift
            k = start[b]
            start[b] = k + 1
            buf[k, 0] = ((node * n_min + m) << cls_bits) | (cls_in[i] if end == 0 else cls_out[i])
            buf[k, 1] = pkt[i]
            buf[k, 2] = byt[i]
            buf[k, 3] = flow[i]
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


# Compiled on first use and cached beside this file (about 1 s once; loading the cache ~0.2 s).
_kernel = njit(nogil=True, cache=True)(_bucket_and_add)


class DenseScatter:
    """Adds batches of flows (each with up to two node ends) into a dense (features + spare, nodes x minutes) float64 table.

    `routes`: per measure (est_pkt, est_byt, est_flow), a (class values, slots) int64 table: the
    feature row each slot of a class value feeds (the spare row when none); see
    `polars_engine.routing_slots`; `class_bits`: the width of a class value.
    `counts`: optional (nodes x exporters,) int64 array that counts every node end (inside the
    minute range or not) per node and exporter code `xc`. The compiled loop releases the GIL."""

    BLOCK_BYTES = 4 << 20  # table bytes per bucket of nodes: about L2-to-L3 sized

    def __init__(self, table: np.ndarray, n_nodes: int, n_minutes: int,
                 routes: list[np.ndarray], class_bits: int,
                 counts: np.ndarray | None = None, n_exporters: int = 1) -> None:
        if table.shape[1] != n_nodes * n_minutes or not table.flags.c_contiguous:
            raise ValueError(f"table of shape {table.shape} is not (rows, {n_nodes} x {n_minutes})")
        self.flat = table.reshape(-1)
        self.size, self.n_min = n_nodes * n_minutes, n_minutes
        self.routes = [np.ascontiguousarray(r, dtype=np.int64) for r in routes]
        self.cls_bits = class_bits
        self.counts = counts if counts is not None else np.zeros(0, dtype=np.int64)
        self.n_x = n_exporters
        per_node = max(1, table.shape[0] * n_minutes * table.itemsize)
        self.bucket_shift = max(0, (self.BLOCK_BYTES // per_node).bit_length() - 1)
        self.n_buckets = ((max(n_nodes, 1) - 1) >> self.bucket_shift) + 1
        self._start = np.zeros(self.n_buckets + 1, dtype=np.int64)
        self._buf = np.empty((0, 4), dtype=np.int64)

    def add(self, dst_node: np.ndarray, src_node: np.ndarray, cls_in: np.ndarray,
            cls_out: np.ndarray, minute: np.ndarray, pkt: np.ndarray, byt: np.ndarray,
            flow: np.ndarray, xc: np.ndarray | None = None) -> int:
        """Add one batch of flows, all (n,): the node index of each end (int32, -1 when that end
        is no node), the class bits of each end (int64: the "in" classes go with the destination),
        the minute offset in the table (int64; flows outside [0, minutes) are only counted), the
        three measures (int64) and the exporter code (int32, needed when counting). Returns the
        node ends added."""
        n = len(minute)
        if 2 * n > len(self._buf):  # grown rarely: batches have about the same size
            self._buf = np.empty((max(2 * n, len(self._buf) * 5 // 4), 4), dtype=np.int64)
        if len(self.counts) and xc is None:
            raise ValueError("exporter codes are needed to count ends per exporter")
        args = [np.ascontiguousarray(a, dtype=t) for a, t in (
            (dst_node, np.int32), (src_node, np.int32), (cls_in, np.int64), (cls_out, np.int64),
            (minute, np.int64), (pkt, np.int64), (byt, np.int64), (flow, np.int64),
            (xc if xc is not None else np.zeros(0), np.int32))]
        return int(_kernel(self.flat, self.size, self.n_min, self.n_buckets, self.bucket_shift,
                           *args, self.counts, self.n_x, *self.routes, self.cls_bits,
                           self._start, self._buf))
