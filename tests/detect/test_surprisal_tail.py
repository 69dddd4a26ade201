"""The top-bin tail of the zero-label detector: edges, excess, scales (cores.top_bin_edges and co)."""

from __future__ import annotations

import numpy as np
import polars as pl

from netflowgen.detect.cores import NO_TAIL, tail_excess, tail_scales, top_bin_edges
from netflowgen.tokens import Binner


def test_edges_are_the_top_bins_lower_cut_and_finite_without_cuts() -> None:
    rng = np.random.default_rng(1)
    n = 900
    df = pl.DataFrame({"node": ["a"] * n + ["b"] * n, "customer": "c",
                       "minute": pl.Series(np.tile(np.arange(n) * 60_000, 2)).cast(pl.Datetime("ms", "UTC")),
                       "in_all_pkt": np.concatenate([rng.integers(1, 1000, n), np.zeros(n)]).astype(float),
                       "in_all_flow": np.concatenate([np.ones(n), rng.integers(1, 50, n)]).astype(float),
                       "in_icmp_pkt": np.zeros(2 * n)})
    feats = ["in_all_pkt", "in_all_flow", "in_icmp_pkt"]
    b = Binner.fit(df, 10, feats)
    edge = top_bin_edges(b, np.array([b.node_index["a"], b.node_index["b"]]), feats)
    a_pkt = np.sort(df.filter(pl.col("node") == "a").get_column("in_all_pkt").to_numpy())
    # values above the edge are exactly the ones the binner puts in a's top used bin
    top = b.transform_values(b.node_index["a"], a_pkt[:, None].repeat(3, 1))[:, 0] == b.n_used[b.node_index["a"], 0]
    assert (a_pkt[top] > edge[0, 0]).all() and (a_pkt[~top] <= edge[0, 0]).all()
    assert np.isfinite(edge).all()  # saved statistics must be finite
    assert edge[0, 1] == 1.0  # a constant series has one cut-off and one bin: its edge is that value
    assert (edge[:, 2] == NO_TAIL).all()  # no traffic anywhere: no cut-off, no tail
    assert (tail_excess(np.full((2, 1, 3), 1e30), edge)[:, 0, 2] == 0.0).all()


def test_excess_and_scales() -> None:
    edge = np.array([[10.0, NO_TAIL]])
    x = np.array([[[5.0, 1e9], [10.0 * np.e, 1.0], [10.0 * np.e ** 3, 0.0]]])  # (1, 3, 2)
    ex = tail_excess(x, edge)
    np.testing.assert_allclose(ex[0, :, 0], [0.0, 1.0, 3.0])
    assert (ex[0, :, 1] == 0).all()
    keep = np.array([[True, True, False]])  # the 3-e-fold minute is left out (a known attack)
    sc = tail_scales(ex, keep, prior=1.0, floor=0.25)
    np.testing.assert_allclose(sc[0], [(1.0 + 1.0) / 2, 1.0])  # (excess 1 + prior 1) / (1 + 1); none: the prior
    assert tail_scales(ex * 0.01, keep, prior=0.0, floor=0.25)[0, 0] == 0.25
