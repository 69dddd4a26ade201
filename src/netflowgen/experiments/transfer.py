"""`netflowgen experiment transfer`: detection on traffic the detectors never saw.

Two benchmarks, each scoring every given detector folder the way an operator onboarding a new
network would run it (no labels; docs/detection.md, "Zero-label detection"):

- ``isp``: a second simulated ISP (another seed, size and mix than the one the detectors were
  trained on), its features built as the demo builds them;
- ``splice``: real hosts (the Zeek CTU-Normal conn logs, one host each) with real attack captures
  (StopDDoS, CIC-DDoS2019; nfdump CSV) spliced onto them at seeded times in the last 40 % of each
  host's traffic (ramp 2 min, 5-10 min long), features with ``missing_by="none"`` and
  ``node_range="own"``.

Per detector and benchmark: every node the detector never saw is calibrated on its reference range
(the first `reference` share of its own observed minutes: the table's for the ISP, which is what
`Detector.calib_rows` does; token methods (transformer, Surprisal) bin it with cut-offs fitted there, `own_bins`; the
network's own alert list, where it has one, left out: `mask_known_attacks`), one global threshold
is chosen by the false-alarm budget on those reference ranges (`detect.budget.budget_thresholds`, as
`Detector.set_fa_budget`), the whole table is scored minute by minute (causal: a minute's score sees
only its history) and the operator metrics (`detect.operator_metrics`) are computed against the
truth of the attacks that begin in the rest (each node's last 40 %).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.operator_curve import CURVE_RATES
from netflowgen.experiments.report import json_default

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real"
HOSTS = ("008", "010", "011")  # zeek-ctu-normal/<host>/conn.log.labeled
CAPTURES = ("stopddos/nfcapd/amp.UDP.isakmp.flows.csv", "stopddos/nfcapd/amp.TCP.reflection.SYNACK.flows.csv",
            "stopddos/nfcapd/amp.UDP.bacnet.IOT.37810.flows.csv", "stopddos/nfcapd/pkt.TCP.DOMINATE.syn.ecn.cwr.flows.csv",
            "stopddos/nfcapd/amp.TCP.syn.optionallyACK.optionallysamePort.flows.csv",
            "cicddos2019-excerpts/nfcapd/CIC-DDoS-2019-SynFlood.flows.csv",
            "cicddos2019-excerpts/nfcapd/CIC-DDoS-2019-WebDDoS.flows.csv")
TABLE_KEYS = ("attacks", "detected_within_1min_pct", "detected_within_2min_pct", "detected_within_5min_pct",
              "detected_within_10min_pct", "false_alarms_per_node_day", "alarmed_attack_free_pct")


@dataclass
class IspBenchmark:
    seed: int = 7
    nodes: int = 40
    customers: int = 10
    days: float = 2.0
    difficulty: float = 0.6
    attacks_per_day: float | None = None  # None = the simulator's default


@dataclass
class SpliceBenchmark:
    real: str = str(REAL)  # folder holding zeek-ctu-normal/, stopddos/, cicddos2019-excerpts/
    hosts: list[str] = field(default_factory=lambda: list(HOSTS))
    captures: list[str] = field(default_factory=lambda: list(CAPTURES))
    attacks_per_host: int = 4
    ramp_min: float = 2.0
    duration_min: tuple[float, float] = (5.0, 10.0)
    gap_min: int = 75  # least minutes between two insertions on a host (> 2 x the metrics' margin)
    # Zeek's conn.log reports a connection once, at its end, with no active timeout: counted in its start
    # minute, a 56-minute call of 1.08 M packets on host 011 became one minute 1,000x the host's
    # busiest (docs/detection.md); spread over the minutes it covers, it is what a router would export
    spread_over_minutes: bool = True
    seed: int = 0


@dataclass
class TransferConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["isp", "splice"])
    fa_budget: float = 1.0  # alerts per node-day on the reference range (global theta)
    reference: float = 0.6  # share of each node's own minutes that calibrates it and sets theta
    clear_after: int = 15
    # leave the network's own alert list (the ISP's alerts.csv) out of its reference ranges (SPEC 14);
    # the splice hosts have none (their reference ranges hold no spliced attack)
    mask_known_attacks: bool = True
    # token methods (transformer, Surprisal): new nodes binned with cut-offs fitted on their own reference range (their
    # embedding still borrowed from the nearest training node), not with the mapped node's cut-offs
    own_bins: bool = True
    # minutes each score aggregates on the new network (None = each detector's evaluated length, 128
    # for the demo's): 16 was chosen on the demo ISP, the detectors' own network (docs/detection.md)
    score_length: int | None = 16
    per_node_budget: bool = False  # each node its own theta (its reference alerts <= fa_budget per day)
    # methods with a pre-trained backbone: first continue its pre-training for this many steps on the new
    # network's reference minutes (`pretrain --init`: its own node embeddings and cut-offs), 0 = not
    adapt_steps: int = 0
    isp: IspBenchmark = field(default_factory=IspBenchmark)
    splice: SpliceBenchmark = field(default_factory=SpliceBenchmark)


# --- the benchmarks' data ------------------------------------------------------------------------------
def build_isp(bench: IspBenchmark, work: Path, log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Simulate the ISP and build its features (as the demo does); returns (features, truth)."""
    from netflowgen import config as cfgmod
    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig
    from netflowgen.simulate import SimConfig, simulate

    sim = work / "sim"
    events: dict[str, Any] = {"difficulty": bench.difficulty}
    if bench.attacks_per_day is not None:
        events["attacks_per_day"] = bench.attacks_per_day
    cfg = cfgmod.load(SimConfig, None, {"seed": bench.seed, "topology": {"nodes": bench.nodes,
                                                                         "customers": bench.customers},
                                        "time": {"days": bench.days}, "events": events})
    t0 = time.time()
    if not (sim / "truth.csv").exists():
        simulate(cfg, sim)
    feats = work / "features.parquet"
    if not feats.exists():
        build_features([sim / "flows.parquet"], feats, FeatureConfig(customers=str(sim / "customers.csv")))
    log(f"isp: seed {bench.seed}, {bench.nodes} nodes, {bench.customers} customers, {bench.days:g} days, "
        f"difficulty {bench.difficulty:g} ({time.time() - t0:.0f} s)")
    return feats, sim / "truth.csv"


def host_ip(flows: Any) -> str:
    """The most frequent address of a host's flows (either side): the monitored host."""
    import pyarrow as pa
    import pyarrow.compute as pc
    ips = pa.concat_arrays([flows["src_ip"].combine_chunks(), flows["dst_ip"].combine_chunks()])
    vc = pc.value_counts(ips).to_pylist()
    return str(max(vc, key=lambda d: (d["counts"], str(d["values"])))["values"])


def placements(lo_ms: int, hi_ms: int, n: int, bench: SpliceBenchmark, rng: np.random.Generator,
               reference: float) -> list[tuple[int, float]]:
    """(start minute in ms, duration) of `n` insertions in the last (1 - reference) of [lo, hi],
    at least `gap_min` apart, seeded: chosen from the host's time range only."""
    span = (hi_ms - lo_ms) / 60_000
    first = lo_ms // 60_000 + int(np.ceil(reference * span)) + 30  # clear of the reference range
    last = hi_ms // 60_000 - int(bench.duration_min[1]) - 2
    out: list[tuple[int, float]] = []
    for _ in range(200 * n):
        if len(out) == n or last <= first:
            break
        m = int(rng.integers(first, last))
        if all(abs(m - o // 60_000) >= bench.gap_min for o, _ in out):
            out.append((m * 60_000, float(rng.uniform(*bench.duration_min))))
    return sorted(out)


def build_splice(bench: SpliceBenchmark, work: Path, reference: float,
                 log: Callable[[str], None] = print) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Splice the attack captures onto the real hosts and build their features; returns (features,
    truth, per-host facts)."""
    import pyarrow as pa

    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig
    from netflowgen.rejects import RejectCounter
    from netflowgen.sources import SourceOptions, write_flows
    from netflowgen.sources.splice import _ms, read_table, splice, write_truth

    real = Path(bench.real)
    rng = np.random.default_rng(bench.seed)
    caps = [real / c for c in bench.captures if (real / c).exists()]
    if not caps:
        raise FileNotFoundError(f"no attack capture found under {real}")
    attacks = {c.name.removesuffix(".flows.csv"): read_table([c], "nfdump-csv", SourceOptions(default_sampling_rate=1),
                                                             RejectCounter()) for c in caps}
    names = list(attacks)
    parts, truth, hosts, k = [], [], [], 0
    for h in bench.hosts:
        path = real / "zeek-ctu-normal" / h / "conn.log.labeled"
        if not path.exists():
            log(f"splice: {path} not found, host skipped")
            continue
        flows = read_table([path], "zeek", SourceOptions(default_sampling_rate=1), RejectCounter())
        ip = host_ip(flows)
        lo, hi = int(_ms(flows["ts_start"]).min()), int(_ms(flows["ts_end"]).max())
        for at, dur in placements(lo, hi, bench.attacks_per_host, bench, rng, reference):
            name = names[int(rng.integers(len(names)))]
            when = dt.datetime.fromtimestamp(at / 1000, dt.timezone.utc)
            res = splice(flows, attacks[name], ip, [when], duration_min=dur, ramp_min=bench.ramp_min,
                         seed=bench.seed + k, source_name=name)
            flows = res.flows
            truth.append({**res.truth[0], "event_id": k})
            k += 1
        parts.append(flows)
        hosts.append({"host": h, "ip": ip, "flows": flows.num_rows, "attacks": sum(t["target_ip"] == ip for t in truth)})
    if not parts:
        raise FileNotFoundError(f"no Zeek CTU-Normal host found under {real / 'zeek-ctu-normal'}")
    work.mkdir(parents=True, exist_ok=True)
    all_flows = pa.concat_tables(parts)
    write_flows(all_flows.to_batches(max_chunksize=65_536), work / "flows.parquet")
    write_truth(truth, work / "truth.csv")
    (work / "customers.csv").write_text("customer_id,prefix\n" + "".join(
        f"ctu-{d['host']},{d['ip']}/{128 if ':' in d['ip'] else 32}\n" for d in hosts))
    feats = work / "features.parquet"
    build_features([work / "flows.parquet"], feats, FeatureConfig(customers=str(work / "customers.csv"),
                                                                  missing_by="none", node_range="own",
                                                                  spread_over_minutes=bench.spread_over_minutes))
    log(f"splice: {len(hosts)} hosts, {len(truth)} attacks from {len(names)} captures")
    return feats, work / "truth.csv", hosts


# --- evaluating one detector ---------------------------------------------------------------------------
def own_ranges(cube: NodeMinuteCube, reference: float, own: bool) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per node of its reference range: the first `reference` share of the table's minutes,
    or (own) of the node's own observed minutes (first to last reported minute)."""
    n, T = len(cube.nodes), len(cube.minutes)
    if not own:
        return np.zeros(n, dtype=np.int64), np.full(n, max(2, int(round(reference * T))), dtype=np.int64)
    rep = ~np.asarray(cube.missing, dtype=bool)
    if rep.ndim == 1:
        rep = np.broadcast_to(rep, (n, T))
    first = np.where(rep.any(axis=1), rep.argmax(axis=1), 0)
    last = np.where(rep.any(axis=1), T - 1 - rep[:, ::-1].argmax(axis=1), T - 1)
    hi = first + np.maximum(2, np.round(reference * (last - first + 1)).astype(np.int64))
    return first.astype(np.int64), np.minimum(hi, T).astype(np.int64)


def reference_table(cube: NodeMinuteCube, reference: float, own: bool) -> pl.DataFrame:
    """The node-minute table of the reference ranges only (`own_ranges`): every other minute of a node
    is missing, and the table ends with the last reference minute. What a new network lends to
    continued pre-training: no test minute, no label."""
    from netflowgen.detect.cube import cube_to_table
    lo, hi = own_ranges(cube, reference, own)
    t = np.arange(len(cube.minutes))[None, :]
    outside = (t < lo[:, None]) | (t >= hi[:, None])
    end = int(hi.max()) if len(hi) else 0
    values = np.where(outside[:, :, None], 0.0, cube.values).astype(np.float32)
    part = NodeMinuteCube(list(cube.nodes), list(cube.customers), cube.minutes, values, cube.missing | outside,
                          tuple(cube.features)).part(None, 0, end)
    return cube_to_table(part)


def adapted_backbone(backbone: Path, backbone_hash: str, cube: NodeMinuteCube, reference: float, own: bool,
                     steps: int, work: Path, log: Callable[[str], None] = print) -> Path:
    """A detector's backbone (its model folder, content hash `backbone_hash`) after `steps` steps of
    continued pre-training on the reference minutes of `cube` (`train.pretrain(init=...)`), cached in
    work/adapted-<backbone hash>-<steps>."""
    from netflowgen.train.pretrain import PretrainConfig, pretrain
    out = work / f"adapted-{backbone_hash}-{steps}"
    if (out / "model.safetensors").exists():
        return out
    work.mkdir(parents=True, exist_ok=True)
    ref = work / "reference.parquet"
    reference_table(cube, reference, own).write_parquet(ref)
    t0 = time.time()
    r = pretrain(ref, out, PretrainConfig(max_steps=steps), log=lambda s: None, init=backbone, given=("max_steps",))
    log(f"  adapted backbone {backbone_hash}: {r.get('steps')} steps on the reference minutes, best val loss "
        f"{r.get('best_val_loss', float('nan')):.4f} ({time.time() - t0:.0f} s)")
    return out


def attacks_in_test_range(truth: pl.DataFrame, cube: NodeMinuteCube, hi: np.ndarray) -> pl.DataFrame:
    """The attacks of `truth` (`operator_metrics.attacks_table`) whose onset lies in their node's test
    range (at or after minute `hi[row]` of the cube): attacks of the reference range are not scored
    (their minutes carry no alarm), so counting them would count them as missed."""
    from netflowgen.detect.operator_metrics import attacks_table
    att = attacks_table(truth)
    edges = np.append(cube.minutes, cube.minutes[-1] + 60_000)  # (T + 1,) minute starts and the end
    test_from = pl.DataFrame({"target_ip": list(cube.nodes), "_from": edges[np.minimum(hi, len(cube.minutes))]})
    return (att.join(test_from, on="target_ip", how="left")
            .filter(pl.col("onset").dt.epoch("ms") >= pl.col("_from").fill_null(0)).drop("_from"))


def evaluate(det: Any, cube: NodeMinuteCube, truth: pl.DataFrame, budget: float, reference: float,
             own: bool, clear_after: int = 15, known: pl.DataFrame | None = None, margin: int = 30,
             per_node: bool = False, with_curve: bool = True) -> dict[str, Any]:
    """Onboard, threshold by the budget, score, alert and measure one detector (module docstring).
    `known`: the network's own alert list; its attacks (with `margin` minutes either side) are left
    out of the reference ranges, for calibration and budget alike (SPEC 14). With `with_curve`, also
    the operator curve over the test range (`detect.operator_curve`) and its share detected within
    2 minutes at each of `CURVE_RATES` false alarms per node-day."""
    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    from netflowgen.detect.budget import budget_thresholds, known_attack_masks
    from netflowgen.detect.cores import ScoringData
    from netflowgen.detect.operator_curve import operator_curve, same_rate_shares
    from netflowgen.detect.operator_metrics import operator_metrics

    t0 = time.time()
    lo, hi = own_ranges(cube, reference, own)
    seen = set(det.nodes)
    # known attacks out of calibration ([onset - margin, end + margin]) and budget (to end + margin + length)
    excluded, spent = (None, None) if known is None else \
        known_attack_masks(list(cube.nodes), cube.minutes, known, margin, det.length)
    data = ScoringData(cube, None, det.time_zone, excluded)
    for a, b in sorted({(int(x), int(y)) for x, y in zip(lo, hi)}):
        rows = np.array([r for r, nd in enumerate(cube.nodes) if nd not in seen and lo[r] == a and hi[r] == b],
                        dtype=np.int64)
        det.calibrate(data, a, b, "reference", rows)
    onboarded = sum(nd not in seen for nd in cube.nodes)
    det.theta = 0.0  # alarms are recomputed below with the budget's theta
    det.core.calib.pop("theta", None)
    sc = det.score(cube)
    n, T = len(cube.nodes), len(cube.minutes)
    score = sc.get_column("score").to_numpy().reshape(n, T)
    miss = sc.get_column("missing").to_numpy().reshape(n, T)
    t = np.arange(T)[None, :]
    in_ref = (t >= lo[:, None]) & (t < hi[:, None])
    # the budget sees each node's reference minutes only, from the node's first (warm-up) minute
    ref_w = max(hi - lo) if n else 0
    rs = np.ones((n, ref_w))
    rm = np.ones((n, ref_w), dtype=bool)
    rk = np.zeros((n, ref_w), dtype=bool)
    for r in range(n):
        w = hi[r] - lo[r]
        rs[r, :w], rm[r, :w] = score[r, lo[r]:hi[r]], miss[r, lo[r]:hi[r]]
        if spent is not None:
            rk[r, :w] = spent[r, lo[r]:hi[r]]
    th = budget_thresholds(rs, rm, det.warmup, clear_after, budget, per_node=per_node,
                           masked=rk if spent is not None else None)  # () or (n,) with per_node
    theta = float(np.median(th))  # the global theta, or the median of the nodes' own
    det.theta = theta
    det.info["fa_budget"] = {"budget_per_node_day": budget, "per_node": per_node, "clear_after": clear_after,
                             "reference_share": reference, "known_attacks_masked": int(rk.sum())}
    eligible = (t >= np.minimum(lo[:, None] + det.warmup, T)) & ~in_ref & (t >= lo[:, None])
    alarm = (score < (th[:, None] if per_node else theta)) & eligible
    ev_missing = miss | in_ref | (t < lo[:, None])
    scores = sc.with_columns(pl.Series("alarm", alarm.reshape(-1)), pl.Series("missing", ev_missing.reshape(-1)),
                             pl.Series("score", np.where(in_ref, 1.0, score).reshape(-1)),
                             pl.Series("eligible", eligible.reshape(-1)))
    alerts = alerts_from_scores(scores, det.method, AlertConfig(clear_after))
    attacks = attacks_in_test_range(truth, cube, hi)
    m = operator_metrics(scores, alerts, attacks)
    # the curve's thresholds hold the budget's theta: its operating point is on the curve
    curve = operator_curve(scores, attacks, det.method, clear_after, also=[] if per_node else [theta]) \
        if with_curve else None
    return {"method": det.method, **m.summary(), "theta": theta, "length": det.length, "onboarded_nodes": onboarded,
            "masked_reference_minutes": int(rk.sum()),
            "nodes": n, "minutes": T, "scoring_s": round(time.time() - t0, 1), "delays": m.delays,
            **({"curve": curve.to_dicts(), **same_rate_shares(curve)} if curve is not None else {})}


# --- the experiment ------------------------------------------------------------------------------------
def run_transfer(detectors: Sequence[str | Path], out: str | Path, cfg: TransferConfig | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every benchmark of `cfg` x every detector folder; writes out/transfer.md and results.json."""
    from netflowgen.detect.detector import Detector
    from netflowgen.detect.io import read_table
    from netflowgen.rejects import InputError

    cfg = cfg or TransferConfig()
    unknown = [b for b in cfg.benchmarks if b not in ("isp", "splice")]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}; known: isp, splice")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"config": asdict(cfg), "detectors": [str(d) for d in detectors], "benchmarks": {}}
    t_all = time.time()
    for name in cfg.benchmarks:
        bench: dict[str, Any] = {"rows": []}
        results["benchmarks"][name] = bench
        try:
            if name == "isp":
                feats, truth_p = build_isp(cfg.isp, out / "work" / "isp", log)
                own = False
                known_p = truth_p.parent / "alerts.csv" if cfg.mask_known_attacks else None
            else:  # "splice" (the names were checked above)
                if not (Path(cfg.splice.real) / "zeek-ctu-normal").is_dir():
                    raise FileNotFoundError(f"{Path(cfg.splice.real)}: the real traces are absent "
                                            "(../shared/data/real; see its README.md)")
                feats, truth_p, hosts = build_splice(cfg.splice, out / "work" / "splice", cfg.reference, log)
                bench["hosts"] = hosts
                own = True
                known_p = None
        except FileNotFoundError as e:
            bench["skipped"] = str(e)
            log(f"{name}: skipped: {e}")
            continue
        cube = NodeMinuteCube.read(feats)
        truth = read_table(truth_p)
        known = read_table(known_p) if known_p is not None else None
        bench["known_attacks"] = str(known_p) if known_p is not None else None
        for d in detectors:
            det = Detector.load(d)
            if cfg.own_bins and hasattr(det.core, "own_bins"):
                det.core.own_bins = True
            if cfg.adapt_steps > 0 and det.backbone_hash is not None:
                det.adopt_backbone(adapted_backbone(Path(d) / "backbone", det.backbone_hash, cube, cfg.reference,
                                                    own, cfg.adapt_steps, out / "work" / name, log))
            if cfg.score_length is not None:
                det.set_length(cfg.score_length)  # theta follows from the budget below
            row = evaluate(det, cube, truth, cfg.fa_budget, cfg.reference, own, cfg.clear_after, known,
                           per_node=cfg.per_node_budget)
            row["detector"] = str(d)
            bench["rows"].append(row)
            log(f"  {name}: {det.method:18s} theta {row['theta']:.3g}, {row['attacks']} attacks, "
                f"{row['scoring_s']:.0f} s")
    results["seconds"] = round(time.time() - t_all, 1)
    results["plots"] = curve_plot(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=json_default))
    (out / "transfer.md").write_text(report_md(results))
    return results


def table_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    heads = {"attacks": "attacks", "detected_within_1min_pct": "≤1 min %", "detected_within_2min_pct": "≤2 min %",
             "detected_within_5min_pct": "≤5 min %", "detected_within_10min_pct": "≤10 min %",
             "false_alarms_per_node_day": "FA / node-day", "alarmed_attack_free_pct": "alarmed %"}
    return [{"method": r["method"], **{heads[k]: r[k] for k in TABLE_KEYS}, "length": r.get("length"),
             "theta": f"{r['theta']:.4g}"}
            for r in bench["rows"]]


def matched_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Per detector, the share detected within 2 minutes at <= each of `CURVE_RATES` false alarms per
    node-day on the operator curve (rows without a curve are left out)."""
    return [{"method": r["method"], **{f"≤{x:g} FA / node-day": r[f"within_2min_at_{x:g}_fa_pct"] for x in CURVE_RATES}}
            for r in bench["rows"] if "curve" in r]


def curve_plot(results: dict[str, Any], out: Path) -> list[str]:
    """out/curve_<benchmark>.png: every detector's operator curve (`detect.operator_curve.plot_curves`),
    a dot at its budgeted threshold. Returns the file names."""
    from netflowgen.detect.operator_curve import plot_curves
    names = []
    for name, bench in results["benchmarks"].items():
        rows = [r for r in bench.get("rows", []) if r.get("curve")]
        if rows:
            title = {"isp": "Second simulated ISP", "splice": "Real hosts, real attacks"}.get(name, name)
            plot_curves({r["method"]: r["curve"] for r in rows}, out / f"curve_{name}.png",
                        f"{title}: operator curves on the test range (dots: budgeted theta)",
                        results["config"]["fa_budget"],
                        {r["method"]: (r["false_alarms_per_node_day"], r["detected_within_2min_pct"]) for r in rows})
            names.append(f"curve_{name}.png")
    return names


def tables(results: dict[str, Any]) -> str:
    from netflowgen.detect.io import markdown_table
    cfg = results["config"]
    parts = []
    for name, bench in results["benchmarks"].items():
        title = {"isp": "Second simulated ISP", "splice": "Real hosts with real attacks"}.get(name, name)
        parts.append(f"## {title} ({name})\n")
        if "skipped" in bench:
            parts.append(f"Skipped: {bench['skipped']}\n")
            continue
        if name == "isp":
            b = cfg["isp"]
            parts.append(f"seed {b['seed']}, {b['nodes']} nodes, {b['customers']} customers, {b['days']:g} days, "
                         f"difficulty {b['difficulty']:g}.\n")
        else:
            parts.append("hosts: " + ", ".join(f"{h['host']} ({h['ip']}, {h['attacks']} attacks)"
                                               for h in bench.get("hosts", [])) + ".\n")
        parts.append(markdown_table(table_rows(bench)))
        matched = matched_rows(bench)
        if matched:
            parts.append("\nAt the same false-alarm rate: the share detected within 2 minutes at the best threshold "
                         "with at most that many false alarms per node-day on this test range (the operator curve, "
                         "`curve_" + name + ".png`; chosen with the truth, so a comparison, not a setting):\n")
            parts.append(markdown_table(matched))
        if f"curve_{name}.png" in results.get("plots", []):
            parts.append(f"\n![operator curves, {name}](curve_{name}.png)\n")
    return "\n".join(parts)


def report_md(results: dict[str, Any]) -> str:
    cfg = results["config"]
    head = ["# Transfer: detection on traffic the detectors never saw", "",
            f"Every node is new to every detector: calibrated on its reference range (first {cfg['reference']:.0%} "
            f"of its own minutes), one global theta chosen so the reference ranges open at most {cfg['fa_budget']:g} "
            f"alert(s) per node-day (the theta column; each score aggregates the last `length` minutes), scored "
            f"minute by minute and measured against the truth over "
            f"the rest (alerts close after {cfg['clear_after']} quiet minutes; detected = first alarm from 5 minutes "
            "before the onset to the end; false alarms = alerts opened in attack-free time, more than 30 minutes from "
            "any attack of the node).", "",
            *([f"Methods with a pre-trained backbone were first adapted: {cfg['adapt_steps']} steps (at most) of "
               "continued pre-training on each network's reference minutes (`--adapt-steps`).", ""]
              if cfg.get("adapt_steps") else []),
            "Detectors: " + ", ".join(f"`{d}`" for d in results["detectors"]), ""]
    return "\n".join(head) + "\n" + tables(results) + f"\n({results['seconds']:.0f} s)\n"
