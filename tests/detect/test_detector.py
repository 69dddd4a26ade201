"""The carryable Detector: every method fitted by `finetune`, saved, loaded in a fresh process and
scored on its test examples gives the evaluated detection minutes; minute-by-minute scores equal the
one-window-per-minute computation; hand-offs that do not match are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch

from netflowgen.detect.anchored import aggregate_curve, naive_intensities, sliding_score, window_anchor
from netflowgen.detect.cores import ZERO_LABEL_METHODS
from netflowgen.detect.detector import ALL_METHODS, Detector
from netflowgen.rejects import InputError

from .synthetic import make_dataset

torch.set_num_threads(1)
FT_TOML = ("window = 64\nlength = 48\nsplit = [0.6, 0.2]\n[finetune]\nepochs = 2\nmin_epochs = 1\n"
           "head_hidden = 16\nbatch_size = 16\n[metrics]\nwarmup = 8\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ISP, a tiny backbone, EarlyDetect examples and one finetuned detector per method."""
    from netflowgen.api import NetFlowGen
    from netflowgen.config import load
    from netflowgen.detect.earlydetect import EarlyDetectConfig
    from netflowgen.detect.stages import FinetuneRun, run_earlydetect, run_finetune
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.tokens import Binner

    d = tmp_path_factory.mktemp("detector")
    feats, alerts, truth = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=6)
    feats.write_parquet(d / "features.parquet")
    alerts.write_csv(d / "alerts.csv")
    torch.manual_seed(0)
    binner = Binner.fit(feats.filter(pl.col("minute") < feats.get_column("minute").min() + pl.duration(minutes=1440)))
    cfg = model_config("paper", n_layers=1, n_heads=2, d_model=16, d_ff=32, context=64, dropout=0.0)
    NetFlowGen(TrafficGPT(cfg, len(binner.node_customer), len(binner.customers)), binner,
               {"train_fraction": 0.6, "val_fraction": 0.2}).save_pretrained(d / "model")
    run_earlydetect(d / "features.parquet", d / "alerts.csv", d / "ed",
                    EarlyDetectConfig(window=64, horizon=10, margin=30, split=[0.6, 0.2]))
    (d / "ft.toml").write_text(FT_TOML)
    for method in ALL_METHODS:
        run = load(FinetuneRun, d / "ft.toml", {"method": method, "labels": "all"})
        run_finetune(run, d / "ed" / "examples.parquet", d / "features.parquet", d / method, d / "model")
    return d


def test_every_method_round_trips_in_a_fresh_process(trained) -> None:
    d = trained
    script = ("import sys, json\nfrom pathlib import Path\nfrom netflowgen.cli.detect import check_examples\n"
              "from netflowgen import Detector\nd = Path(sys.argv[1])\nout = {}\n"
              f"for m in {list(ALL_METHODS)!r}:\n"
              "    det = Detector.load(d / m)\n"
              "    out[m] = check_examples(det, d / m, d / 'ed' / 'examples.parquet', d / 'features.parquet')\n"
              "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", script, str(d)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for method in ALL_METHODS:
        same, n = got[method]
        assert n > 0 and same == n, f"{method}: {same} of {n}"
        # the saved evaluation detected something, so "same minute" is not "never detects" (the
        # zero-label surprisal of this fixture's random backbone carries no signal: its round trip is
        # checked on the scores in test_surprisal_scores_round_trip)
        res = json.loads((d / method / "result.json").read_text())
        assert method in ZERO_LABEL_METHODS or any(t >= 0 for t in res["test_detection"]), method


def test_detect_command_prints_n_of_n_and_writes_alerts(trained) -> None:
    d = trained
    cmd = [sys.executable, "-m", "netflowgen.cli.main", "detect", "--detector", str(d / "MS-LSTM")]
    r = subprocess.run(cmd + ["--examples", str(d / "ed" / "examples.parquet"), "--features", str(d / "features.parquet")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    n = pl.read_parquet(d / "ed" / "examples.parquet").filter(pl.col("split") == "test").height
    assert f"{n} of {n} test examples" in r.stdout
    r = subprocess.run(cmd + [str(d / "features.parquet"), "--out", str(d / "detected.csv"),
                              "--curves", str(d / "scores.parquet")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = pl.read_csv(d / "detected.csv")  # (alerts.csv is the simulated ISP's, used by other tests)
    scores = pl.read_parquet(d / "scores.parquet")
    assert scores.height == 4 * 2400 and alerts.height >= 1
    # every alert opens at an alarmed minute of its node
    opened = alerts.select("node", pl.col("opened_at").str.to_datetime(time_zone="UTC").cast(pl.Datetime("ms", "UTC")))
    hits = opened.join(scores.select("node", pl.col("minute").alias("opened_at"), "alarm"), on=["node", "opened_at"])
    assert hits.height == alerts.height and hits.get_column("alarm").all()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_minute_scores_equal_one_window_per_minute(trained, method) -> None:
    det = Detector.load(trained / method)
    table = pl.read_parquet(trained / "features.parquet")
    table = table.filter(pl.col("minute") < table.get_column("minute").min() + pl.duration(minutes=200))
    scores = det.score(table, node_batch=3)  # node batches of 3 over 4 nodes: batching must not matter
    data, calib = det.prepare(table)
    fn = det.core.window_fn(data, calib)
    T = len(data.cube.minutes)
    rows = np.repeat(np.arange(4), T)
    x = naive_intensities(rows, np.tile(np.arange(T), 4)[:, None], data.minute0_ms, det.core.context,
                          det.core.stride, fn).reshape(4, T)
    naive = np.stack([[aggregate_curve(x[i:i + 1, max(0, m - det.length + 1):m + 1], det.kind)[0, -1]
                       for m in range(T)] for i in range(4)])
    got = scores.sort(["node", "minute"]).get_column("score").to_numpy().reshape(4, T)
    np.testing.assert_allclose(got, naive, rtol=1e-5, atol=1e-9)
    assert np.ptp(got) > 0  # the scores move: a constant would pass trivially
    np.testing.assert_allclose(sliding_score(x, det.length, det.kind), naive, rtol=1e-9)


def test_anchors_follow_the_clock_not_the_table() -> None:
    e = np.arange(1000, 1300)
    a = window_anchor(e, 64, 32)
    assert (a % 32 == 0).all() and ((e - a) >= 32).all() and ((e - a) <= 63).all()


def test_same_minute_same_score_in_a_shorter_table(trained) -> None:
    det = Detector.load(trained / "NetFlowGen")
    table = pl.read_parquet(trained / "features.parquet")
    t0 = table.get_column("minute").min()
    full = det.score(table.filter(pl.col("minute") < t0 + pl.duration(minutes=600)))
    later = det.score(table.filter((pl.col("minute") >= t0 + pl.duration(minutes=256))
                                   & (pl.col("minute") < t0 + pl.duration(minutes=600))))
    # from one full context + length after the later table's start on, history is complete in both
    cut = t0 + pl.duration(minutes=256 + 64 + 48)
    a = full.filter(pl.col("minute") >= cut).sort(["node", "minute"]).get_column("score").to_numpy()
    b = later.filter(pl.col("minute") >= cut).sort(["node", "minute"]).get_column("score").to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_handoffs_are_refused_with_both_values(trained, tmp_path) -> None:
    import shutil
    src = trained / "NetFlowGen"
    with pytest.raises(InputError, match="time zone mismatch.*'UTC'.*'Europe/Berlin'"):
        Detector.load(src, time_zone="Europe/Berlin")
    with pytest.raises(InputError, match="split fractions mismatch"):
        Detector.load(src, split=[0.72, 0.08])
    # another backbone (same shapes, other weights) is refused
    from netflowgen.api import NetFlowGen
    other = NetFlowGen.from_pretrained(trained / "model")
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match="backbone mismatch"):
        Detector.load(src, backbone=tmp_path / "other")
    # a tampered feature-set hash
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    meta = json.loads((bad / "detector.json").read_text())
    meta["feature_set_hash"] = "0123456789abcdef"
    (bad / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="feature-set hash mismatch"):
        Detector.load(bad)


def test_finetune_refuses_a_split_other_than_the_models(trained, tmp_path) -> None:
    from netflowgen.config import load
    from netflowgen.detect.stages import FinetuneRun, run_finetune
    (tmp_path / "ft.toml").write_text(FT_TOML.replace("split = [0.6, 0.2]", "split = [0.7, 0.1]"))
    run = load(FinetuneRun, tmp_path / "ft.toml", {"method": "NetFlowGen", "labels": "all"})
    with pytest.raises(InputError, match="split fractions mismatch"):
        run_finetune(run, trained / "ed" / "examples.parquet", trained / "features.parquet", tmp_path / "x",
                     trained / "model")


def test_unseen_nodes_are_mapped_once_on_their_reference_range(trained, tmp_path) -> None:
    det = Detector.load(trained / "NetFlowGen")
    table = pl.read_parquet(trained / "features.parquet")
    new = table.with_columns(pl.col("node").str.replace("10.0.0.", "192.168.9."))
    det.score(new.filter(pl.col("minute") < new.get_column("minute").min() + pl.duration(minutes=300)))
    mapping = det.node_mapping().filter(pl.col("source") == "reference")
    assert mapping.height == 4 and set(mapping.get_column("training_node")) <= set(det.core.binner.nodes)
    first = dict(zip(mapping.get_column("node"), mapping.get_column("training_node")))
    # scoring more history later keeps the mapping (decided once), also after saving and loading
    det.save(tmp_path / "calibrated")
    again = Detector.load(tmp_path / "calibrated")
    again.score(new)
    m2 = again.node_mapping().filter(pl.col("source") == "reference")
    assert dict(zip(m2.get_column("node"), m2.get_column("training_node"))) == first and m2.height == 4


def test_model_card_and_folder_are_self_describing(trained) -> None:
    d = trained / "NetFlowGen"
    meta = json.loads((d / "detector.json").read_text())
    for key in ("method", "theta", "metric_config", "length", "warmup", "backbone_hash", "feature_set_hash",
                "time_zone", "split"):
        assert key in meta
    assert (d / "backbone" / "model.safetensors").exists()
    card = (d / "README.md").read_text()
    assert "theta" in card and "Test metrics" in card and meta["backbone_hash"] in card


@pytest.mark.parametrize("method", ["Static-EWMA"])  # the learned ones train 2 epochs here: not a detector yet
def test_one_alert_per_detected_attack(trained, method) -> None:
    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    det = Detector.load(trained / method)
    scores = det.score(pl.read_parquet(trained / "features.parquet"))
    alerts = alerts_from_scores(scores, det.method, AlertConfig(clear_after=15))
    _, _, truth = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=6)
    per_attack = []
    for t in truth.iter_rows(named=True):
        hit = alerts.filter((pl.col("node") == t["target_ip"]) & (pl.col("opened_at") <= t["end"])
                            & (pl.col("opened_at") >= t["onset"] - pl.duration(minutes=5)))
        per_attack.append(hit.height)
    assert max(per_attack) == 1  # never two alerts for one attack
    assert sum(per_attack) >= 0.8 * len(per_attack)  # 30x floods: (nearly) all detected
    assert alerts.height - sum(per_attack) <= 2, "alerts away from any attack"


@pytest.mark.parametrize("method", ["NetFlowGen", "Surprisal"])
def test_an_adapted_backbone_knows_the_new_network_and_travels_with_the_detector(trained, tmp_path, method) -> None:
    """Onboarding by continued pre-training: `adopt_backbone` takes a `pretrain --init` of the detector's
    backbone on a new network's reference minutes; its nodes then have their own embedding rows and
    cut-offs, every per-node statistic is fitted again, and the saved detector carries that backbone."""
    from netflowgen.detect.cube import NodeMinuteCube
    from netflowgen.experiments.transfer import adapted_backbone, reference_table
    from netflowgen.schema import FEATURE_NAMES
    table = pl.read_parquet(trained / "features.parquet")
    new = table.with_columns(pl.col("node").str.replace("10.0.0.", "172.16.0."), pl.lit("a-new").alias("customer"),
                             *[(pl.col(f) * 7).alias(f) for f in FEATURE_NAMES])
    ref = reference_table(NodeMinuteCube.from_table(new), 0.6, own=False)
    assert ref.get_column("minute").n_unique() == round(0.6 * new.get_column("minute").n_unique())
    det = Detector.load(trained / method)
    old_hash = det.backbone_hash
    adapted = adapted_backbone(trained / method / "backbone", old_hash, NodeMinuteCube.from_table(new), 0.6, False, 2,
                               tmp_path / "work", log=lambda s: None)  # what `experiment transfer --adapt-steps` runs
    (tmp_path / "adapted").symlink_to(adapted)
    det.adopt_backbone(tmp_path / "adapted")
    assert det.nodes == [] and det.core.calib == {} and det.backbone_hash != old_hash
    det.set_fa_budget(new, 1.0)
    m = det.node_mapping()
    assert set(m.get_column("node")) == set(new.get_column("node")) and (m.get_column("distance") == 0).all()
    assert {det.core.binner.nodes[i] for i in det.core.calib["embed_row"]} == set(new.get_column("node"))
    a = det.score(new)
    det.save(tmp_path / "det")
    again = Detector.load(tmp_path / "det")
    assert again.info["adapted_backbone"]["from"] == old_hash
    assert again.score(new)["score"].to_list() == a["score"].to_list()
    with pytest.raises(InputError, match="no pre-trained backbone"):
        Detector.load(trained / "Static-EWMA").adopt_backbone(tmp_path / "adapted")
    # the command: `detect --adapted-backbone` needs a new theta, and saves the onboarded detector
    from typer.testing import CliRunner

    from netflowgen.cli.main import app
    new.write_parquet(tmp_path / "new.parquet")
    args = ["detect", "-d", str(trained / method), str(tmp_path / "new.parquet"), "--adapted-backbone",
            str(tmp_path / "adapted"), "--out", str(tmp_path / "alerts.csv")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "give --fa-budget" in str(r.exception)
    r = CliRunner().invoke(app, args + ["--fa-budget", "1", "--calibrate-out", str(tmp_path / "ours")])
    assert r.exit_code == 0, r.output
    ours = Detector.load(tmp_path / "ours")
    assert ours.backbone_hash == det.backbone_hash and set(ours.nodes) == set(new.get_column("node"))


@pytest.mark.parametrize("method", ["NetFlowGen", "Surprisal"])
def test_own_bins_fit_new_nodes_on_their_reference_range(trained, tmp_path, method) -> None:
    from netflowgen.schema import FEATURE_NAMES
    table = pl.read_parquet(trained / "features.parquet")
    big = table.filter(pl.col("node") == "10.0.0.1").with_columns(  # a customer the model never saw, sorted first
        pl.lit("172.16.0.1").alias("node"), pl.lit("a-new").alias("customer"),
        *[(pl.col(f) * 1000).alias(f) for f in FEATURE_NAMES])
    mixed = pl.concat([table, big])
    feature = FEATURE_NAMES.index("in_all_pkt")

    def tokens_of_new(det: Detector) -> np.ndarray:
        data, calib = det.prepare(mixed)
        row = data.cube.nodes.index("172.16.0.1")
        return data.tokens.tokens[row, :1440, feature]

    borrowed = tokens_of_new(Detector.load(trained / method))
    own_det = Detector.load(trained / method)
    own_det.core.own_bins = True
    own = tokens_of_new(own_det)
    assert len(np.unique(borrowed)) <= 2  # 1000x the mapped node's traffic: (almost) all in its top bin
    assert len(np.unique(own)) >= 8  # equal-frequency bins of its own range
    m = own_det.node_mapping().filter(pl.col("node") == "172.16.0.1")
    assert m.get_column("source").to_list() == ["reference"]  # embedding still borrowed from a training node
    # the customer vocabulary stays the model's: known nodes keep their customer rows, the new one
    # takes its embedding node's (was: the extended binner's vocabulary, shifted and out of range)
    data_b, _ = Detector.load(trained / method).prepare(mixed)
    data_o, _ = own_det.prepare(mixed)
    np.testing.assert_array_equal(data_o.tokens.node_customer, data_b.tokens.node_customer)
    assert data_o.tokens.node_customer.max() < own_det.core.backbone.customer_emb.num_embeddings
    assert own_det.score(mixed).height == mixed.height
    own_det.save(tmp_path / "own")
    again = Detector.load(tmp_path / "own")
    np.testing.assert_array_equal(tokens_of_new(again), own)  # the fitted cut-offs travel with the detector


def test_operator_alerts_name_the_measure_that_drove_them(trained) -> None:
    from netflowgen.detect.alerts import alerts_from_scores
    det = Detector.load(trained / "Static-EWMA")
    table = pl.read_parquet(trained / "features.parquet").filter(pl.col("node") == "10.0.0.2")
    t0 = table.get_column("minute").min()
    in_burst = (pl.col("minute") >= t0 + pl.duration(minutes=1000)) & (pl.col("minute") < t0 + pl.duration(minutes=1030))
    # quiet the node's own attacks, then a flood of flows only (packets and bytes unchanged)
    calm = table.with_columns([pl.col(f).clip(upper_bound=pl.col(f).median()) for f in ("in_all_pkt", "in_all_byt",
                                                                                            "in_all_flow")])
    burst = calm.with_columns(pl.when(in_burst).then(pl.col("in_all_flow") * 200).otherwise(pl.col("in_all_flow"))
                              .alias("in_all_flow"))
    alerts = alerts_from_scores(det.score(burst), det.method)
    assert alerts.height >= 1 and set(alerts.get_column("driver")) == {"in_all_flow"}
    assert alerts_from_scores(det.score(calm), det.method).height == 0


@pytest.mark.parametrize("method", ["MS-LSTM", "Seasonal-band"])
def test_scoring_a_file_in_node_batches_equals_scoring_it_whole(trained, method) -> None:
    det = Detector.load(trained / method)
    whole = det.score(pl.read_parquet(trained / "features.parquet"))
    parts = list(Detector.load(trained / method).score_file(trained / "features.parquet", node_batch=3))
    assert len(parts) == 2  # 4 nodes in batches of 3
    got, want = pl.concat(parts).sort(["node", "minute"]), whole.sort(["node", "minute"])
    assert got.drop("score", "alarm").equals(want.drop("score", "alarm"))
    # the LSTM's float32 kernels round differently for other batch sizes: equal to float tolerance
    np.testing.assert_allclose(got.get_column("score").to_numpy(), want.get_column("score").to_numpy(), rtol=1e-5)


def test_earlydetect_reads_the_split_from_the_model(trained, tmp_path) -> None:
    from typer.testing import CliRunner

    from netflowgen.cli.main import app
    args = ["earlydetect", "-f", str(trained / "features.parquet"), "-a", str(trained / "alerts.csv"),
            "--window", "64", "--horizon", "10", "--margin", "30", "-m", str(trained / "model")]
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ed")])
    assert r.exit_code == 0, r.output
    import tomllib
    assert tomllib.loads((tmp_path / "ed" / "config.toml").read_text())["split"] == [0.6, 0.2]  # the model's
    (tmp_path / "s.toml").write_text("split = [0.7, 0.1]\n")
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ed2"), "-c", str(tmp_path / "s.toml")])
    assert r.exit_code != 0 and "split fractions mismatch" in str(r.exception or r.output)


def test_operator_metrics_from_minute_scores(trained) -> None:
    from netflowgen.detect.alerts import alerts_from_scores
    from netflowgen.detect.operator_metrics import operator_metrics
    det = Detector.load(trained / "Static-EWMA")
    feats = pl.read_parquet(trained / "features.parquet")
    scores = det.score(feats)
    alerts = alerts_from_scores(scores, det.method)
    _, _, truth = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=6)
    m = operator_metrics(scores, alerts, truth)
    assert m.attacks == 24
    # the simulator's truth.csv names the column `target`: the same metrics
    assert operator_metrics(scores, alerts, truth.rename({"target_ip": "target"})).summary() == m.summary()
    assert m.detected_within[10] >= 0.8 and m.detected_within[1] <= m.detected_within[10]
    # the score aggregates the last `length` (48) minutes, so an alarm lingers up to 48 minutes after
    # a flood, past the 30-minute margin around each attack: a few % of "attack-free" minutes
    assert m.false_alarms_per_node_day <= 2.0 and 0 < m.alarmed_share_attack_free < 0.15
    # an always-alarming detector: every attack at once, and false alarms everywhere else
    loud = scores.with_columns(pl.lit(True).alias("alarm"))
    m2 = operator_metrics(loud, alerts_from_scores(loud, det.method), truth)
    assert m2.detected_within[1] == 1.0 and m2.alarmed_share_attack_free == 1.0
    # a silent one: nothing detected, no false alarm
    quiet = scores.with_columns(pl.lit(False).alias("alarm"))
    m3 = operator_metrics(quiet, alerts_from_scores(quiet, det.method), truth)
    assert m3.detected_within[10] == 0.0 and m3.false_alarms_per_node_day == 0.0


def test_evaluate_detect_command(trained, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from netflowgen.cli.main import app
    _, _, truth = make_dataset(n_nodes=4, n_minutes=2400, attacks_per_node=6)
    truth.write_csv(tmp_path / "truth.csv")
    r = CliRunner().invoke(app, ["evaluate-detect", "-d", str(trained / "Static-EWMA"), str(trained / "features.parquet"),
                                 "--truth", str(tmp_path / "truth.csv"), "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["attacks"] == 24 and m["detected_within_2min_pct"] >= 80 and "false_alarms_per_node_day" in m
    # --curve: the theta sweep, the detector's own theta a point of it, the same-rate figures from it
    r = CliRunner().invoke(app, ["evaluate-detect", "-d", str(trained / "Static-EWMA"), str(trained / "features.parquet"),
                                 "--truth", str(tmp_path / "truth.csv"), "--out", str(tmp_path / "m.json"),
                                 "--curve", str(tmp_path / "curve.csv")])
    assert r.exit_code == 0, r.output
    c = pl.read_csv(tmp_path / "curve.csv")
    (own,) = c.filter(pl.col("theta") == m["theta"]).to_dicts()
    assert own["detected_within_2min_pct"] == pytest.approx(m["detected_within_2min_pct"])
    assert own["false_alarms_per_node_day"] == pytest.approx(m["false_alarms_per_node_day"])
    m2 = json.loads((tmp_path / "m.json").read_text())
    best = c.filter(pl.col("false_alarms_per_node_day") <= 1.0).get_column("detected_within_2min_pct").max()
    assert m2["within_2min_at_1_fa_pct"] == pytest.approx(best) and (tmp_path / "curve.png").stat().st_size > 1000
    assert "operator curve:" in r.output
    (tmp_path / "g.parquet").write_text("garbage")
    r = CliRunner().invoke(app, ["evaluate-detect", "-d", str(trained / "Static-EWMA"), str(tmp_path / "g.parquet"),
                                 "--truth", str(tmp_path / "truth.csv")])
    assert r.exit_code != 0 and "not a readable Parquet file" in str(r.exception)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_streaming_scorer_equals_batch_scores(trained, method) -> None:
    """Minute by minute (what `serve` does) equals `Detector.score` on the whole table, for every
    method, including a state save/restore half way."""
    from netflowgen.detect.streaming import StreamingScorer

    det = Detector.load(trained / method)
    feats = pl.read_parquet(trained / "features.parquet")
    m0 = feats.get_column("minute").min()
    part = feats.filter(pl.col("minute") >= m0 + pl.duration(minutes=1500),
                        pl.col("minute") < m0 + pl.duration(minutes=1500 + 3 * det.core.context + 5))
    det.theta = float(np.quantile(det.score(part)["score"].to_numpy(), 0.1))  # alarms to compare, whatever the slice
    batch = det.score(part).sort(["node", "minute"])
    nodes = sorted(part.get_column("node").unique().to_list())
    customers = [part.filter(pl.col("node") == n).get_column("customer")[0] for n in nodes]
    scorer = StreamingScorer(det, nodes, customers, node_batch=3)  # two node batches per minute
    got = []
    minutes = part.get_column("minute").unique().sort()
    for i, minute in enumerate(minutes):
        if i == len(minutes) // 2:  # restart half way: the saved state scores on identically
            scorer = StreamingScorer.restore(det, scorer.meta(), scorer.state())
        if i == 3 * len(minutes) // 4:  # a state without its incremental windows: rebuilt from the buffer
            scorer = StreamingScorer.restore(det, scorer.meta(), {k: v for k, v in scorer.state().items()
                                                                  if not k.startswith("win")})
        out = scorer.step_rows(part.filter(pl.col("minute") == minute))
        got.append(pl.DataFrame({"node": scorer.nodes, "minute": [minute] * len(nodes), "score": out.score,
                                 "alarm": out.alarm}))
    stream = pl.concat(got).sort(["node", "minute"])
    np.testing.assert_allclose(stream["score"].to_numpy(), batch["score"].to_numpy(), rtol=1e-6, atol=1e-9)
    assert stream["alarm"].to_list() == batch["alarm"].to_list()
    assert 0 < batch["alarm"].sum() < batch.height, f"{method}: the test compares nothing"


def test_surprisal_scores_round_trip_and_name_their_group(trained, tmp_path) -> None:
    """The zero-label detector: saved and loaded it scores identically; its alerts say which feature
    group drove them; its surprisal is -log p of the observed bin where that bin is above the
    predicted mean, summed per group (checked against the model's probabilities by hand)."""
    import torch as _torch

    from netflowgen.detect.cores import SurprisalCore

    det = Detector.load(trained / "Surprisal")
    feats = pl.read_parquet(trained / "features.parquet")
    part = feats.filter(pl.col("minute") >= feats.get_column("minute").max() - pl.duration(minutes=299))
    a = det.score(part)
    det.save(tmp_path / "again")
    b = Detector.load(tmp_path / "again").score(part)
    assert a["score"].to_list() == b["score"].to_list()
    assert set(a.get_column("driver").unique().to_list()) <= set(det.core.drivers)
    det.theta = float(np.quantile(a["score"].to_numpy(), 0.05))
    alerts = nfg_alerts(det, det.score(part))
    assert alerts.height > 0 and alerts.get_column("driver").is_in(list(det.core.drivers)).all()
    core: SurprisalCore = det.core
    data, calib = det.prepare(part)
    S = core.group_surprisal(data.tokens, np.array([0]), np.array([10]), 6)  # (1, 6, G)
    x = data.tokens.inputs(np.array([0]), np.array([10]), 6)
    with _torch.no_grad():
        p = _torch.softmax(core.backbone(x).float(), -1)[0]  # (6, P, N)
    tgt = x.tokens[0, :, core.backbone.target_index]  # (6, P)
    want = np.zeros_like(S[0])
    for t in range(1, 6):
        for j, idx in enumerate(core.groups.values()):
            for f in idx:
                k = int(tgt[t, f])
                mean = float((p[t - 1, f] * _torch.arange(p.shape[-1])).sum())
                if k < p.shape[-1] and k > mean and bool(x.valid[0, t]):
                    want[t, j] += -float(_torch.log(p[t - 1, f, k]))
    np.testing.assert_allclose(S[0], want, rtol=1e-4, atol=1e-5)
    assert S[0, 0].sum() == 0  # no prediction for a window's first minute
    # the top-bin tail (new detectors): + log(x / edge) / scale per feature above its top bin's edge
    from netflowgen.detect.cores import top_bin_tail
    assert core.tail
    cols = [data.cube.features.index(f) for f in core.predicted]
    tail = top_bin_tail(data.cube.values, cols, core.calib["tail_edge"], core.calib["tail_scale"])
    St = core.group_surprisal(data.tokens, np.array([0]), np.array([10]), 6, tail, calib[[0]])
    edge, scale = core.calib["tail_edge"][calib[0]], core.calib["tail_scale"][calib[0]]
    for t in range(1, 6):
        for j, idx in enumerate(core.groups.values()):
            for f in idx:
                v = float(data.cube.values[0, 10 + t, cols[f]])
                if v > edge[f] and bool(x.valid[0, t]):
                    want[t, j] += np.log(v / edge[f]) / scale[f]
    np.testing.assert_allclose(St[0], want, rtol=1e-4, atol=1e-5)
    # reduce = "max": per feature (bins + tail), the group's largest instead of its sum
    per_feature = np.zeros((6, len(core.predicted)))
    for t in range(1, 6):
        for f in range(len(core.predicted)):
            k, v = int(tgt[t, f]), float(data.cube.values[0, 10 + t, cols[f]])
            mean = float((p[t - 1, f] * _torch.arange(p.shape[-1])).sum())
            if k < p.shape[-1] and k > mean and bool(x.valid[0, t]):
                per_feature[t, f] += -float(_torch.log(p[t - 1, f, k]))
            if v > edge[f] and bool(x.valid[0, t]):
                per_feature[t, f] += np.log(v / edge[f]) / scale[f]
    core.reduce = "max"
    Sm = core.group_surprisal(data.tokens, np.array([0]), np.array([10]), 6, tail, calib[[0]])
    core.reduce = "sum"
    want_max = np.stack([per_feature[:, idx].max(-1) for idx in core.groups.values()], axis=-1)
    np.testing.assert_allclose(Sm[0], want_max, rtol=1e-4, atol=1e-5)
    assert (Sm[0] <= St[0] + 1e-9).all() and (Sm[0] < St[0] - 1e-6).any()  # the max is not the sum
    core.reduce = "max"  # the setting travels with the saved detector
    det.save(tmp_path / "max")
    assert Detector.load(tmp_path / "max").core.reduce == "max" and Detector.load(trained / "Surprisal").core.reduce == "sum"


def test_surprisal_tail_sees_how_far_beyond_the_bins_a_flood_is(trained) -> None:
    """Tokens saturate: a flood 100x and 10,000x a node's traffic land in the same top bins, so the
    surprisal of the bins alone cannot tell them apart; the top-bin tail ranks the larger flood higher."""
    from netflowgen.schema import FEATURE_NAMES
    feats = pl.read_parquet(trained / "features.parquet")
    part = feats.filter(pl.col("minute") >= feats.get_column("minute").max() - pl.duration(minutes=299))
    t0 = part.get_column("minute").min()
    at = (pl.col("node") == "10.0.0.2") & (pl.col("minute") >= t0 + pl.duration(minutes=200)) & \
        (pl.col("minute") < t0 + pl.duration(minutes=204))
    incoming = [f for f in FEATURE_NAMES if f.startswith("in_")]

    def peak(det: Detector, k: float) -> float:
        flood = part.with_columns([pl.when(at).then(pl.col(f) * k + 50 * k).otherwise(pl.col(f)).alias(f)
                                   for f in incoming])
        data, calib = det.prepare(flood)
        r = data.cube.nodes.index("10.0.0.2")
        return float(det.intensities(data, calib, np.array([r]), np.arange(195, 210)[None, :]).max())

    det = Detector.load(trained / "Surprisal")
    assert det.core.tail and peak(det, 10_000.0) > peak(det, 100.0) + 1.0
    det.core.tail = False  # the bins alone
    assert peak(det, 10_000.0) == pytest.approx(peak(det, 100.0), rel=1e-6)


def test_surprisal_inputs_reach_the_netflowgen_head(trained) -> None:
    """NetFlowGen+surprisal: the head reads d + G inputs, the last G the compressed per-node z of the
    group surprisal from the same backbone pass, calibrated as the Surprisal detector calibrates it;
    moving one node's surprisal calibration moves that node's hazards and no other's."""
    from netflowgen.detect.surprisal_input import SurprisalInputCore, compress

    det = Detector.load(trained / "NetFlowGen+surprisal")
    core = det.core
    assert isinstance(core, SurprisalInputCore)
    G, d = len(core.groups), core.backbone.cfg.d_model
    assert G >= 2 and core.head.net[0].in_features == d + G
    # the same per-node statistics as the Surprisal detector's on a range, with its floor and tail setting
    from netflowgen.detect.cores import ScoringData
    from netflowgen.detect.cube import NodeMinuteCube
    zero = Detector.load(trained / "Surprisal").core
    zero.tail, zero.scale_floor = core.tail, core.scale_floor
    feats = pl.read_parquet(trained / "features.parquet")
    on = ScoringData(NodeMinuteCube.from_table(feats))
    ours, theirs = core.fit_nodes(on, np.arange(4), 0, 600), zero.fit_nodes(on, np.arange(4), 0, 600)
    # (the head's input adds the tail in float32, the Surprisal detector in float64)
    np.testing.assert_allclose(ours["surprisal_median"], theirs["median"], rtol=1e-5)
    np.testing.assert_allclose(ours["surprisal_scale"], theirs["scale"], rtol=1e-5)
    part = feats.filter(pl.col("minute") >= feats.get_column("minute").max() - pl.duration(minutes=299))
    data, calib = det.prepare(part)
    rows, starts, L = np.arange(4), np.full(4, 10), 40
    base = core.window_fn(data, calib)(rows, starts, L)  # (4, L)
    c = calib[rows]
    assert core.tail  # new detectors: the group surprisal includes the top-bin tail
    S = core.group_surprisal(data.tokens, rows, starts, L, core.data_tail(data), c)  # (4, L, G)
    z = compress(torch.from_numpy((S - core.calib["surprisal_median"][c][:, None])
                                  / core.calib["surprisal_scale"][c][:, None]).float())
    with torch.no_grad():
        h = core.backbone.hidden_states(data.tokens.inputs(rows, starts, L))
        by_hand = torch.nn.functional.softplus(core.head.net(torch.cat([(h - core.mean) / core.std, z], -1))).squeeze(-1)
    np.testing.assert_allclose(base, by_hand.double().numpy(), rtol=1e-4, atol=1e-7)
    assert np.ptp(S[:, 1:]) > 0  # the surprisal moves inside the windows
    core.calib["surprisal_median"] = core.calib["surprisal_median"].copy()
    core.calib["surprisal_median"][c[0]] -= 3.0
    moved = core.window_fn(data, calib)(rows, starts, L)
    assert np.abs(moved[0] - base[0]).max() > 1e-6
    np.testing.assert_array_equal(moved[1:], base[1:])


def nfg_alerts(det, scores):
    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    return alerts_from_scores(scores, det.method, AlertConfig(clear_after=5))


def test_detect_and_evaluate_with_a_false_alarm_budget(trained, tmp_path) -> None:
    d = trained
    cmd = [sys.executable, "-m", "netflowgen.cli.main"]
    r = subprocess.run(cmd + ["detect", "--detector", str(d / "Surprisal"), str(d / "features.parquet"), "--out",
                              str(tmp_path / "a.csv"), "--fa-budget", "1", "--calibrate-out", str(tmp_path / "det")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "false-alarm budget 1 per node-day" in r.stdout
    det = Detector.load(tmp_path / "det")
    assert det.info["fa_budget"]["budget_per_node_day"] == 1.0
    r = subprocess.run(cmd + ["evaluate-detect", "-d", str(d / "Static-EWMA"), str(d / "features.parquet"), "--truth",
                              str(d / "alerts.csv"), "--fa-budget", "2", "--per-node-budget", "--out", str(tmp_path / "m.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "m.json").read_text())["fa_budget"] == 2.0
