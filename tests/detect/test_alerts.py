"""The alert lifecycle: open, hold, close after quiet minutes, outages never close, reopen."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from netflowgen.detect.alerts import AlertConfig, alerts_from_scores, node_alerts

M = 60_000


def run(alarm: str, missing: str | None = None, clear_after: int = 3) -> list[dict]:
    """alarm/missing as strings: 'A' alarmed, '.' quiet, 'M' missing (no exporter)."""
    a = np.array([c == "A" for c in alarm])
    m = np.array([c == "M" for c in (missing or alarm)])
    score = np.where(a, 0.1, 0.9)
    return node_alerts(np.arange(len(alarm)) * M, score, a, m, clear_after)


def test_opens_holds_and_closes_after_quiet_minutes() -> None:
    (al,) = run("..AA.A..." + "." * 5)
    assert al["opened_at"] == 2 * M and al["last_alarm_at"] == 5 * M
    assert al["closed_at"] == 6 * M  # three quiet minutes (6, 7, 8) after the last alarm close it
    assert al["alarmed_minutes"] == 3 and al["reopened"] == 0


def test_fewer_quiet_minutes_than_clear_after_keep_it_open_to_the_end() -> None:
    (al,) = run("..AA..")
    assert al["closed_at"] is None


def test_an_outage_never_closes_an_alert() -> None:
    (al,) = run("AAMMMMMMMMA..", clear_after=3)  # 8 missing minutes inside, then an alarm
    assert al["opened_at"] == 0 and al["alarmed_minutes"] == 3 and al["reopened"] == 0
    assert al["closed_at"] is None  # only two quiet minutes after the last alarm
    (al,) = run("AAM.M.M.....", clear_after=3)  # quiet minutes count across missing ones
    assert al["closed_at"] == 2 * M


def test_a_new_crossing_soon_after_a_close_reopens_it() -> None:
    als = run("AA...A" + "." * 6, clear_after=3)  # closed at minute 4 (quiet 2, 3, 4), alarm at 5
    assert len(als) == 1 and als[0]["reopened"] == 1 and als[0]["closed_at"] == 6 * M
    als = run("AA......A" + "." * 4, clear_after=3)  # close decided at 4, next alarm 4 minutes later: new alert
    assert len(als) == 2 and [a["reopened"] for a in als] == [0, 0]


def test_peak_is_the_lowest_score() -> None:
    a = np.array([False, True, True, True, False, False, False])
    s = np.array([0.9, 0.3, 0.05, 0.2, 0.9, 0.9, 0.9])
    (al,) = node_alerts(np.arange(7) * M, s, a, np.zeros(7, bool), 3)
    assert al["peak_score"] == 0.05 and al["peak_at"] == 2 * M


def test_frame_per_node() -> None:
    import datetime as dt
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for node, pattern in (("a", "..AA......"), ("b", ".........."), ("c", "A.........")):
        for i, ch in enumerate(pattern):
            rows.append({"node": node, "customer": "x", "minute": t0 + dt.timedelta(minutes=i), "missing": False,
                         "score": 0.1 if ch == "A" else 0.9, "alarm": ch == "A"})
    df = alerts_from_scores(pl.DataFrame(rows), "Static-EWMA", AlertConfig(clear_after=3))
    assert df.get_column("node").to_list() == ["c", "a"]  # by opening time
    assert df.get_column("opened_at").dt.minute().to_list() == [0, 2]
    with pytest.raises(ValueError):
        AlertConfig(clear_after=0)
