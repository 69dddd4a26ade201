"""`netflowgen detect`: score a node-minute table (or flows) minute by minute with a saved detector
and write its alerts; or re-score EarlyDetect examples and compare with the evaluation that saved it.

    netflowgen detect --detector ft/ features.parquet --out alerts.csv [--curves scores.parquet]
    netflowgen detect --detector ft/ --examples ed/examples.parquet --features features.parquet
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from netflowgen.cli.options import ADAPTED_BACKBONE


def register(app: typer.Typer) -> None:
    app.command("detect", no_args_is_help=True)(detect_cmd)


def detect_cmd(
    detector: Path = typer.Option(..., "--detector", "-d", help="Detector folder (from `netflowgen finetune`)."),
    table: Optional[Path] = typer.Argument(None, help="Node-minute Parquet (from `netflowgen features`), or "
                                           "canonical flow Parquet (features are built first; give --customers)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Alerts file to write (.csv or .parquet)."),
    curves: Optional[Path] = typer.Option(None, "--curves", help="Also write every node-minute score (.parquet or .csv)."),
    start: Optional[str] = typer.Option(None, "--from", help="Report alerts opened at or after this ISO-8601 UTC time "
                                        "(earlier minutes still serve as history)."),
    end: Optional[str] = typer.Option(None, "--to", help="Report alerts opened before this ISO-8601 UTC time."),
    theta: Optional[float] = typer.Option(None, "--theta", help="Threshold override (default: the detector's, "
                                          "chosen on validation data)."),
    clear_after: int = typer.Option(15, "--clear-after", min=1, help="Quiet minutes that close an alert."),
    fa_budget: Optional[float] = typer.Option(None, "--fa-budget", min=0.0, help="Choose theta so the reference range "
                                              "(first --reference share of INPUT, attack-free by assumption) opens at "
                                              "most this many alerts per node-day (no labels needed)."),
    per_node_budget: bool = typer.Option(False, "--per-node-budget", help="With --fa-budget: one threshold per node."),
    known_attacks: Optional[Path] = typer.Option(None, "--known-attacks", help="With --fa-budget: the network's own "
                                                 "alert list (target_ip, start, end) or truth; its attacks (30 min "
                                                 "either side) are left out of the reference range."),
    adapted_backbone: Optional[Path] = ADAPTED_BACKBONE,
    length: Optional[int] = typer.Option(None, "--length", min=1, help="Aggregate the last N minutes in each score "
                                         "instead of the evaluated length (e.g. 16 on a new network: alerts that "
                                         "last about as long as the attack); needs --fa-budget or --theta."),
    customers: Optional[Path] = typer.Option(None, "--customers", "-c", help="customers.csv, when INPUT is flows."),
    calibrate_out: Optional[Path] = typer.Option(None, "--calibrate-out", help="Save the detector with the nodes it "
                                                 "had never seen calibrated on this table's reference range."),
    reference: Optional[float] = typer.Option(None, "--reference", min=0.01, max=1.0, help="Share of a new node's "
                                              "first minutes that calibrates it. [the detector's: 0.6]"),
    own_bins: bool = typer.Option(False, "--own-bins", help="Methods that read tokens (the transformer "
                                  "methods, Surprisal): bin new nodes with cut-offs fitted on their own reference range "
                                  "(they still borrow the mapped node's embedding)."),
    examples: Optional[Path] = typer.Option(None, "--examples", "-e", help="Score EarlyDetect examples instead "
                                            "(with --features) and compare with the saved evaluation."),
    features: Optional[Path] = typer.Option(None, "--features", "-f", help="The node-minute table of --examples."),
) -> None:
    """Score every node at every minute with a saved detector and write its alerts (opened when the
    score crosses theta, closed after --clear-after quiet minutes; outages never close an alert).

    Example: netflowgen detect --detector ft/ features.parquet --out alerts.csv --curves scores.parquet
    """
    from netflowgen.cli.options import onboarding
    from netflowgen.detect.detector import Detector
    from netflowgen.rejects import InputError

    det = Detector.load(detector)
    if reference is not None:
        det.reference = float(reference)
    known = onboarding(det, length, known_attacks, fa_budget, theta, theta_flag=True, adapted=adapted_backbone)
    if theta is not None:
        det.theta = float(theta)
    if own_bins:
        if not hasattr(det.core, "own_bins"):
            raise InputError(f"--own-bins applies to the methods that read tokens, not {det.method}")
        det.core.own_bins = True
    if examples is not None:
        if features is None:
            raise InputError("--examples needs --features (the node-minute table the examples came from)")
        same, n = check_examples(det, detector, examples, features)
        typer.echo(f"{same} of {n} test examples got the same detection minute as the evaluation that saved "
                   f"{detector}")
        if same != n:
            raise typer.Exit(1)
        return
    if table is None or out is None:
        raise InputError("give INPUT (a node-minute or flow table) and --out, or --examples with --features")
    if fa_budget is not None:
        import tempfile

        import polars as pl
        with tempfile.TemporaryDirectory() as tmp:
            th = det.set_fa_budget(pl.read_parquet(features_file(table, customers, Path(tmp))), fa_budget,
                                   per_node_budget, clear_after, known=known)
        what = f"per-node thresholds (median {float(np.median(th)):.4g})" if per_node_budget else f"theta = {float(th):.4g}"
        typer.echo(f"false-alarm budget {fa_budget:g} per node-day on the first {det.reference:.0%} of the minutes: {what}")
    run_detect(det, table, out, curves, start, end, clear_after, customers, calibrate_out, detector)


def features_file(path: Path, customers: Path | None, tmp: Path) -> Path:
    """`path` if it is a node-minute table; flows are turned into one (default feature settings) in `tmp`."""

    from netflowgen.detect.io import parquet_columns
    from netflowgen.rejects import InputError
    cols = parquet_columns(path)
    if "minute" in cols and "missing" in cols:
        return path
    if "src_ip" in cols and "dst_ip" in cols:
        from netflowgen.features.build import build_features
        from netflowgen.features.settings import FeatureConfig
        out = tmp / "features.parquet"
        build_features([path], out, FeatureConfig(customers=str(customers) if customers else None))
        return out
    raise InputError(f"{path}: neither a node-minute table (node, minute, missing, ...) nor canonical flows")


def run_detect(det, table_path: Path, out: Path, curves: Path | None, start: str | None, end: str | None,
               clear_after: int, customers: Path | None, calibrate_out: Path | None, detector_dir: Path,
               node_batch: int = 512) -> None:
    """Score the table node batch by node batch (memory bounded by the batch), write alerts (and scores)."""
    import tempfile

    import polars as pl

    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    from netflowgen.progress import progress_bar

    with tempfile.TemporaryDirectory() as tmp:
        path = features_file(table_path, customers, Path(tmp))
        n_nodes = pl.scan_parquet(path).select(pl.col("node").n_unique()).collect().item()
        parts, writer, rows = [], _ScoreWriter(curves), 0
        with progress_bar(f"scoring ({det.method})", n_nodes) as adv:
            for scores in det.score_file(path, node_batch, progress=adv):
                parts.append(alerts_from_scores(scores, det.method, AlertConfig(clear_after)))
                writer.write(scores)
                rows += scores.height
        writer.close()
    alerts = pl.concat(parts).sort(["opened_at", "node"]) if parts else alerts_from_scores(
        pl.DataFrame(schema={"node": pl.String, "customer": pl.String, "minute": pl.Datetime("ms", "UTC"),
                             "missing": pl.Boolean, "score": pl.Float64, "alarm": pl.Boolean}), det.method)
    if start:
        alerts = alerts.filter(pl.col("opened_at") >= _utc(start))
    if end:
        alerts = alerts.filter(pl.col("opened_at") < _utc(end))
    _write(alerts, out)
    mapping = det.node_mapping().filter(pl.col("source") == "reference")
    if mapping.height:
        mpath = out.with_name(out.stem + ".nodes.csv")
        mapping.write_csv(mpath)
        typer.echo(f"{mapping.height} node(s) the detector never saw, calibrated on the first "
                   f"{det.reference:.0%} of their minutes: {mpath}")
    if calibrate_out is not None:
        det.save(calibrate_out)
        typer.echo(f"calibrated detector: {calibrate_out}")
    typer.echo(f"{alerts.height} alert(s) on {n_nodes} node(s) x {rows // max(n_nodes, 1)} minutes "
               f"({det.method}, theta={det.theta:.4g}): {out}")


class _ScoreWriter:
    """Node-minute scores appended batch by batch to a .parquet or .csv file (or nowhere)."""

    def __init__(self, path: Path | None) -> None:
        from netflowgen.rejects import InputError
        self.path, self.first = path, True
        self.pq: Any = None
        if path is not None:
            if path.suffix not in (".parquet", ".csv"):
                raise InputError(f"{path}: write .csv or .parquet")
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, df) -> None:
        if self.path is None:
            return
        if self.path.suffix == ".csv":
            with open(self.path, "w" if self.first else "a") as f:
                df.write_csv(f, include_header=self.first)
        else:
            import pyarrow.parquet as pq
            table = df.to_arrow()
            if self.pq is None:
                self.pq = pq.ParquetWriter(self.path, table.schema)
            self.pq.write_table(table)
        self.first = False

    def close(self) -> None:
        if self.pq is not None:
            self.pq.close()


def check_examples(det, detector_dir: Path, examples: Path, features: Path) -> tuple[int, int]:
    """Re-score the test examples with the loaded detector; (same detection minute, test examples)."""
    import numpy as np

    from netflowgen.detect.io import read_parquet
    from netflowgen.detect.pipeline import crop_examples
    from netflowgen.rejects import InputError

    res_path = detector_dir / "result.json"
    if not res_path.exists():
        raise InputError(f"{res_path}: no saved evaluation to compare with")
    res = json.loads(res_path.read_text())
    feats, ex = read_parquet(features), read_parquet(examples)
    window = int(det.info["window"]) if "window" in det.info else None
    if window is None:
        raise InputError(f"{detector_dir}: the detector does not record its examples' window")
    ex = crop_examples(ex, window, det.length).drop("id").with_row_index("id")
    ids = np.asarray(res["test_ids"], dtype=np.int64)
    data, calib = det.prepare(feats)
    rows = ex.get_column("node_row").to_numpy()[ids]
    starts = ex.get_column("start").to_numpy()[ids]
    t_det = det.detect_examples(data, calib, rows, starts)
    same = int((t_det == np.asarray(res["test_detection"])).sum())
    return same, len(ids)


def _utc(text: str):
    import datetime as dt
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _write(df, path: Path) -> None:
    from netflowgen.rejects import InputError
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.write_parquet(path)
    elif path.suffix in (".csv", ".txt"):
        df.write_csv(path)
    else:
        raise InputError(f"{path}: write .csv or .parquet")
