"""Binner properties required by SPEC 6."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from netflowgen.schema import FEATURE_NAMES
from netflowgen.tokens import Binner, algorithm1_cutoffs

from .fixtures import node_minute_table

N = 10


def _table(series: dict[str, np.ndarray], feature: str = "in_all_pkt") -> pl.DataFrame:
    """One-feature node-minute table (other features absent) from {node: values}."""
    rows = []
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for node, v in series.items():
        rows.append(pl.DataFrame({"node": node, "customer": "c", "missing": False,
                                  "minute": [t0 + dt.timedelta(minutes=i) for i in range(len(v))],
                                  feature: np.asarray(v, dtype=np.float64)}))
    return pl.concat(rows)


def _fit(series: dict[str, np.ndarray]) -> Binner:
    return Binner.fit(_table(series), n_bins=N, feature_names=["in_all_pkt"])


def _bins(b: Binner, node: str, v: np.ndarray) -> np.ndarray:
    return b.transform_values(b.node_index[node], np.asarray(v, dtype=np.float64)[:, None])[:, 0]


def test_equal_frequency_on_continuous_data():
    rng = np.random.default_rng(1)
    v = np.concatenate([np.zeros(300), rng.lognormal(3, 2, 9000)])
    b = _fit({"a": v})
    counts = np.bincount(_bins(b, "a", v), minlength=N)
    assert counts[0] == 300  # bin 0 holds exactly the zeros
    assert np.all(np.abs(counts[1:] - 1000) <= 1), counts


def test_monotone_and_zero_only_in_bin0():
    rng = np.random.default_rng(2)
    b = _fit({"a": rng.exponential(10, 2000)})
    grid = np.sort(np.concatenate([[0.0], rng.exponential(10, 5000)]))
    bins = _bins(b, "a", grid)
    assert np.all(np.diff(bins.astype(int)) >= 0)
    assert bins[0] == 0 and np.all(bins[1:] >= 1)


def test_cutoffs_strictly_increasing_and_heavy_duplicates_keep_all_bins():
    rng = np.random.default_rng(3)
    # 60 % of the non-zero values are one repeated value: the tentative cut-offs collide.
    v = np.concatenate([np.full(6000, 5.0), 5.0 + rng.exponential(20, 4000)])
    c = algorithm1_cutoffs(np.sort(v), N)
    assert len(c) == N - 1 and np.all(np.diff(c) > 0)
    assert c[0] == 5.0  # the heavy value fills a bin of its own
    bins = _bins(_fit({"a": v}), "a", v)
    counts = np.bincount(bins, minlength=N)
    assert counts[1] == 6000
    # the remaining values are re-split evenly over the 8 remaining bins
    assert np.all(np.abs(counts[2:] - 500) <= 1), counts


def test_few_distinct_values_get_one_bin_each():
    v = np.array([3.0, 3.0, 7.0, 7.0, 7.0, 11.0] * 50)
    b = _fit({"a": v})
    assert b.n_used[0, 0] == 3
    assert list(_bins(b, "a", np.array([3.0, 7.0, 11.0]))) == [1, 2, 3]


def test_constant_series_and_all_zero_series_use_pooled_cutoffs():
    rng = np.random.default_rng(4)
    other = rng.exponential(100, 3000)
    b = _fit({"const": np.full(500, 42.0), "zero": np.zeros(500), "busy": other})
    assert b.n_used[b.node_index["const"], 0] == 1
    assert list(_bins(b, "const", np.array([0.0, 42.0, 41.0, 1e6]))) == [0, 1, 1, 1]
    z = b.node_index["zero"]
    assert b.pooled_nodes[z, 0] and not b.pooled_nodes[b.node_index["busy"], 0]
    pooled = algorithm1_cutoffs(np.sort(np.concatenate([np.full(500, 42.0), other])), N)
    np.testing.assert_array_equal(b.cuts[z, 0, :len(pooled)], pooled)
    assert _bins(b, "zero", np.array([0.0]))[0] == 0 and _bins(b, "zero", np.array([1e-9]))[0] >= 1


def test_values_beyond_training_range_go_to_top_used_bin():
    v = np.arange(1.0, 901.0)
    b = _fit({"a": v, "b": np.array([2.0, 4.0] * 100)})
    assert list(_bins(b, "a", np.array([1e12, 0.5]))) == [N - 1, 1]
    assert _bins(b, "b", np.array([1e12]))[0] == 2  # only two bins in use


def test_round_trip_decode_lands_in_same_bin_and_json_is_exact(tmp_path):
    df = node_minute_table(n_nodes=3, n_minutes=600, missing=(10, 300))
    b = Binner.fit(df)
    tok = b.transform(df)
    assert tok.shape == (df.height, len(FEATURE_NAMES)) and tok.dtype == np.uint8
    for i, node in enumerate(b.nodes):
        rows = (df["node"] == node).to_numpy() & ~df["missing"].to_numpy()
        decoded = b.decode(node, tok[rows])  # (T, F) representative values
        np.testing.assert_array_equal(b.transform_values(i, decoded), tok[rows])  # decode -> same bins
    b2 = Binner.load(b.save(tmp_path / "binner.json"))
    np.testing.assert_array_equal(b2.transform(df), tok)
    np.testing.assert_array_equal(b2.reps, b.reps)
    # missing minutes get the reserved token, distinct from zero traffic
    assert np.all(tok[df["missing"].to_numpy()] == b.missing_token) and b.missing_token == N
    assert np.isnan(b.decode(b.nodes[0], np.full((1, len(FEATURE_NAMES)), N))).all()


def test_unseen_node_maps_to_most_similar_training_node():
    rng = np.random.default_rng(5)
    series = {"spiky": np.where(rng.random(3000) < 0.02, 1e4, 1.0),  # rare large bursts
              "smooth": rng.normal(100, 5, 3000).clip(1)}
    b = _fit(series)
    unseen = _table({"new": np.where(rng.random(800) < 0.02, 5e3, 2.0)})
    assert b.training_rows_of(unseen) == {"new": b.node_index["spiky"]}
    tok = b.transform(unseen)
    np.testing.assert_array_equal(tok[:, 0], _bins(b, "spiky", unseen["in_all_pkt"].to_numpy()))


def test_each_node_is_binned_on_its_own_training_values_only():
    # fitting many nodes at once gives every node exactly the cut-offs it gets alone: no value of
    # one node leaks into another's bins (the per-node loop slices the sorted table by node)
    # (a feature a node never saw non-zero uses the cut-offs pooled over the nodes fitted: those differ)
    df = node_minute_table(n_nodes=5, n_minutes=300)
    together = Binner.fit(df)
    for node in together.nodes:
        alone = Binner.fit(df.filter(pl.col("node") == node))
        i = together.node_index[node]
        own = ~together.pooled_nodes[i]
        assert own.sum() > 40
        np.testing.assert_array_equal(together.cuts[i][own], alone.cuts[0][own])
        np.testing.assert_array_equal(together.reps[i][own], alone.reps[0][own])
    assert len({together.cuts[i].tobytes() for i in range(5)}) == 5  # the nodes really differ


@pytest.mark.parametrize("n_bins", [2, 4])
def test_other_bin_counts(n_bins):
    v = np.arange(1.0, 101.0)
    b = Binner.fit(_table({"a": v}), n_bins=n_bins, feature_names=["in_all_pkt"])
    bins = b.transform_values(0, v[:, None])[:, 0]
    assert set(np.unique(bins)) == set(range(1, n_bins))


def test_a_binner_of_another_feature_set_is_refused(tmp_path) -> None:
    import json

    import pytest

    from netflowgen.tokens import Binner

    from .fixtures import node_minute_table
    b = Binner.fit(node_minute_table(n_nodes=2, n_minutes=50))
    d = b.to_dict()
    d["feature_set_hash"] = "0" * 16
    (tmp_path / "b.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="feature set"):
        Binner.load(tmp_path / "b.json")
