"""docs/api.md's walkthrough runs as written (in a temporary folder) and produces alerts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.mark.slow
def test_api_walkthrough_runs(tmp_path, monkeypatch) -> None:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETFLOWGEN_PROGRESS", "0")
    import netflowgen.features  # noqa: F401  subpackages already imported must not shadow the stage functions
    import netflowgen.simulate  # noqa: F401
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    scores, alerts, det = scope["scores"], scope["alerts"], scope["det"]
    assert scores.height > 0 and set(alerts.columns) >= {"node", "opened_at", "closed_at", "peak_score"}
    assert (tmp_path / "detector" / "README.md").exists()
    assert det.method == "NetFlowGen" and "f1" in det.info["test"]
    table = scope["table"]
    assert scores.height == table.height  # every node at every minute
    # every alert opens at an alarmed minute of its node, and alarms exist only where score < theta
    import polars as pl
    alarmed = scores.filter(pl.col("alarm"))
    assert (alarmed.get_column("score") < det.theta).all()
    opened = alerts.select("node", pl.col("opened_at").alias("minute")).join(alarmed, on=["node", "minute"])
    assert opened.height == alerts.height
