"""Alerts with a lifecycle, from minute-by-minute scores (`Detector.score`).

Per node, minute by minute:
- an alert *opens* at the first alarmed minute (score < theta, after the warm-up);
- it *stays open* while alarms continue; each reported minute without an alarm counts as quiet, and
  `clear_after` consecutive quiet minutes *close* it (closed_at = the minute after the last alarm);
- a *missing* minute (no exporter reported) is neither an alarm nor quiet: an outage never closes an
  alert by itself (silence is not "attack finished"), and the quiet count resumes after it;
- an alarm within `clear_after` minutes of the minute the close was decided *reopens* the same alert
  (hysteresis), counted in `reopened`;
- an alert still open at the end of the table has closed_at null;
- `driver`: for methods that can say so (the operator baselines), the measure (in_all_pkt, in_all_byt,
  in_all_flow) with the largest statistic at the alert's peak minute; null for the learned methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

ALERT_COLUMNS = ("node", "customer", "method", "opened_at", "closed_at", "last_alarm_at", "peak_at",
                 "peak_score", "alarmed_minutes", "reopened", "driver")
# the columns' types before the times become UTC datetimes (they are int64 ms while alerts are built)
ALERT_SCHEMA = {"node": pl.String, "customer": pl.String, "method": pl.String, "opened_at": pl.Int64,
                "closed_at": pl.Int64, "last_alarm_at": pl.Int64, "peak_at": pl.Int64, "peak_score": pl.Float64,
                "alarmed_minutes": pl.Int64, "reopened": pl.Int64, "driver": pl.String}


@dataclass
class AlertConfig:
    clear_after: int = 15  # quiet (reported, not alarmed) minutes that close an alert

    def __post_init__(self) -> None:
        if self.clear_after < 1:
            raise ValueError(f"clear_after must be >= 1 minute, got {self.clear_after}")


class NodeAlertState:
    """One node's alert lifecycle, minute by minute (the rules of the module docstring); the batch
    `node_alerts` and the live scorer both run it, so they agree by construction.

    `update` returns the event the minute caused: "open", "reopen" (an alarm within `clear_after`
    minutes of a close: the same alert goes on), "alarm" (another alarmed minute of an open alert),
    "close", or None. `current` is the open alert, `last_closed` the one a reopen would continue."""

    def __init__(self, clear_after: int) -> None:
        self.clear_after = int(clear_after)
        self.current: dict | None = None
        self.last_closed: dict | None = None
        self.quiet = 0

    def update(self, minute_ms: int, score: float, alarm: bool, missing: bool) -> str | None:
        if alarm:
            event = "alarm"
            if self.current is None:
                last = self.last_closed
                if last is not None and minute_ms - last["_decided"] <= self.clear_after * 60_000:
                    self.current, self.last_closed = last, None  # hysteresis: the same alert goes on
                    self.current["closed_at"], self.current["reopened"] = None, self.current["reopened"] + 1
                    event = "reopen"
                else:
                    self.current = {"opened_at": int(minute_ms), "closed_at": None, "peak_score": float(score),
                                    "peak_at": int(minute_ms), "alarmed_minutes": 0, "reopened": 0}
                    event = "open"
            cur = self.current
            cur["alarmed_minutes"] += 1
            cur["last_alarm_at"] = int(minute_ms)
            if score < cur["peak_score"]:
                cur["peak_score"], cur["peak_at"] = float(score), int(minute_ms)
            self.quiet = 0
            return event
        if self.current is not None and not missing:
            self.quiet += 1
            if self.quiet >= self.clear_after:
                cur = self.current
                cur["closed_at"] = cur["last_alarm_at"] + 60_000
                cur["_decided"] = int(minute_ms)  # when the close was known: hysteresis counts from here
                self.last_closed, self.current, self.quiet = cur, None, 0
                return "close"
        return None

    def state(self) -> dict:
        return {"current": self.current, "last_closed": self.last_closed, "quiet": self.quiet}

    def restore(self, state: dict) -> None:
        self.current, self.last_closed, self.quiet = state["current"], state["last_closed"], int(state["quiet"])


def node_alerts(minutes: np.ndarray, score: np.ndarray, alarm: np.ndarray, missing: np.ndarray,
                clear_after: int) -> list[dict]:
    """Alerts of one node: minutes (T,) int64 ms in order, score (T,), alarm (T,) bool, missing (T,) bool.

    Returns dicts with opened_at, closed_at (None when open at the end), last_alarm_at, peak_at,
    peak_score (lowest score while open), alarmed_minutes, reopened; times as int64 ms."""
    out: list[dict] = []
    st = NodeAlertState(clear_after)
    for t in range(len(minutes)):
        event = st.update(int(minutes[t]), float(score[t]), bool(alarm[t]), bool(missing[t]))
        if event == "reopen":
            out.pop()
        if event in ("open", "reopen"):
            assert st.current is not None
            out.append(st.current)
    return [{k: v for k, v in a.items() if k != "_decided"} for a in out]


def alerts_from_scores(scores: pl.DataFrame, method: str, cfg: AlertConfig = AlertConfig()) -> pl.DataFrame:
    """Alerts of every node of a `Detector.score` frame (node, customer, minute, missing, score,
    alarm); columns ALERT_COLUMNS, times UTC, sorted by opened_at then node."""
    rows: list[dict] = []
    for (node, customer), g in scores.sort("minute").group_by(["node", "customer"], maintain_order=True):
        if not g.get_column("alarm").any():
            continue
        ms = g.get_column("minute").dt.epoch("ms").to_numpy()
        for a in node_alerts(ms, g.get_column("score").to_numpy(), g.get_column("alarm").to_numpy(),
                             g.get_column("missing").to_numpy(), cfg.clear_after):
            rows.append({"node": node, "customer": customer, "method": method, **a})
    df = pl.DataFrame(rows, schema={k: v for k, v in ALERT_SCHEMA.items() if k != "driver"})
    if "driver" in scores.columns:  # what drove the alert: the driver of its peak minute
        df = df.join(scores.select("node", pl.col("minute").dt.epoch("ms").alias("peak_at"), "driver"),
                     on=["node", "peak_at"], how="left")
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias("driver"))
    return alert_table(df)


def alert_table(alerts: pl.DataFrame | list[dict]) -> pl.DataFrame:
    """Alerts with times as int64 UTC ms (rows or a frame of ALERT_SCHEMA's columns) -> the alert
    table every writer uses: ALERT_COLUMNS, UTC datetimes, sorted by opened_at then node."""
    df = alerts if isinstance(alerts, pl.DataFrame) else \
        pl.DataFrame([{k: r.get(k) for k in ALERT_SCHEMA} for r in alerts], schema=ALERT_SCHEMA)
    utc = pl.Datetime("ms", "UTC")
    df = df.with_columns([pl.col(c).cast(pl.Datetime("ms")).cast(utc)
                          for c in ("opened_at", "closed_at", "last_alarm_at", "peak_at")])
    return df.select(ALERT_COLUMNS).sort(["opened_at", "node"])
