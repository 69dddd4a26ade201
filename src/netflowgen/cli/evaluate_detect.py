"""`netflowgen evaluate-detect`: operator metrics (SPEC 14) of a saved detector on a labelled
node-minute table: share of attacks detected within 1, 2, 5, 10 minutes of onset, false alarms per
node-day and the alarmed share of attack-free minutes (`detect.operator_metrics`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from netflowgen.cli.options import ADAPTED_BACKBONE


def register(app: typer.Typer) -> None:
    app.command("evaluate-detect", no_args_is_help=True)(evaluate_detect_cmd)


def evaluate_detect_cmd(
    detector: Path = typer.Option(..., "--detector", "-d", help="Detector folder (from `netflowgen finetune`)."),
    table: Path = typer.Argument(..., help="Node-minute Parquet to score (from `netflowgen features`)."),
    truth: Path = typer.Option(..., "--truth", "-t", help="Labels: the simulator's truth.csv (target_ip, onset, end; "
                               "kind = attack) or an alert list (target_ip, start, end)."),
    clear_after: int = typer.Option(15, "--clear-after", min=1, help="Quiet minutes that close an alert."),
    margin: int = typer.Option(30, "--margin", min=0, help="Minutes around each attack left out of attack-free time."),
    fa_budget: Optional[float] = typer.Option(None, "--fa-budget", min=0.0, help="First choose theta so the "
                                              "reference range opens at most this many alerts per node-day."),
    per_node_budget: bool = typer.Option(False, "--per-node-budget", help="With --fa-budget: one threshold per node."),
    known_attacks: Optional[Path] = typer.Option(None, "--known-attacks", help="With --fa-budget: the network's own "
                                                 "alert list (or a truth); its attacks (--margin minutes either side) "
                                                 "are left out of the reference range."),
    adapted_backbone: Optional[Path] = ADAPTED_BACKBONE,
    length: Optional[int] = typer.Option(None, "--length", min=1, help="Aggregate the last N minutes in each score "
                                         "instead of the evaluated length; needs --fa-budget."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the metrics as JSON."),
    curve: Optional[Path] = typer.Option(None, "--curve", help="Also sweep theta: write the operator curve (detected "
                                         "within k min against false alarms per node-day) as CSV, and a PNG beside it."),
) -> None:
    """Score the table minute by minute with the detector and report what an operator would see.

    Example: netflowgen evaluate-detect -d ft/ features.parquet --truth sim/truth.csv
    """
    import polars as pl

    from netflowgen.cli.options import onboarding
    from netflowgen.detect.alerts import AlertConfig, alerts_from_scores
    from netflowgen.detect.detector import Detector
    from netflowgen.detect.io import print_table, read_table
    from netflowgen.detect.operator_metrics import operator_metrics
    det = Detector.load(detector)
    known = onboarding(det, length, known_attacks, fa_budget, adapted=adapted_backbone)
    if fa_budget is not None:
        from netflowgen.detect.io import read_parquet
        det.set_fa_budget(read_parquet(table), fa_budget, per_node_budget, clear_after, known=known, margin=margin)
    scores = pl.concat(list(det.score_file(table)))
    alerts = alerts_from_scores(scores, det.method, AlertConfig(clear_after))
    m = operator_metrics(scores, alerts, read_table(truth), margin=margin)
    summary = {"method": det.method, "theta": det.theta, "fa_budget": fa_budget, "length": det.length, **m.summary()}
    shares: dict[str, float] = {}
    if curve is not None:
        from netflowgen.detect.operator_curve import CURVE_RATES, operator_curve, plot_curves, same_rate_shares
        c = operator_curve(scores, read_table(truth), det.method, clear_after, margin=margin, also=[det.theta])
        c.write_csv(curve)
        plot_curves({det.method: c.to_dicts()}, curve.with_suffix(".png"), f"{det.method}: operator curve",
                    fa_budget, {det.method: (float(m.false_alarms_per_node_day), 100 * float(m.detected_within[2]))})
        shares = same_rate_shares(c)
        summary.update(shares)
    print_table([summary], f"operator metrics ({det.method}, clear_after={clear_after} min, margin={margin} min)")
    if curve is not None:
        print(f"operator curve: {curve} ({curve.with_suffix('.png')}); within 2 min at <= "
              + " / ".join(f"{r:g}" for r in CURVE_RATES) + " false alarms per node-day (best theta on this table, "
              "chosen with its labels): " + " / ".join(f"{v:.1f} %" for v in shares.values()))
    if out is not None:
        out.write_text(json.dumps(summary, indent=1))
