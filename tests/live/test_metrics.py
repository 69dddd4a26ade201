"""ServeMetrics and the Grafana dashboard: every metric the dashboard queries exists in a scrape,
every exposed family is listed in METRIC_NAMES, and every listed family is on some panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netflowgen.live.metrics import ACTION_KINDS, METRIC_NAMES, SCORING_BUCKETS, ServeMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "netflowgen.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _touch_every_label(m: ServeMetrics) -> None:
    """Increment each labelled counter once, so its family has a sample in the scrape."""
    m.flows_rejected.labels(reason="bad_time").inc()
    m.datagrams_undecodable.labels(reason="no_template").inc()
    m.receiver_restarts.labels(reason="crashed").inc()
    for kind in ACTION_KINDS:
        m.count(kind, "blackhole")


def _scraped(m: ServeMetrics) -> dict[str, Any]:
    """Family name as scraped (counters with _total) -> the parsed family."""
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # collapsed rows keep their panels inside


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _family(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in METRIC_NAMES:
            return base
    return name


def _dashboard_names() -> set[str]:
    names: set[str] = set()
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            names.update(re.findall(r"netflowgen_[a-z_]+", target.get("expr", "")))
    return names


def test_every_listed_family_is_scraped_and_nothing_else() -> None:
    m = ServeMetrics()
    _touch_every_label(m)
    scraped = _scraped(m)
    assert set(scraped) == set(METRIC_NAMES)
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    for name, fam in scraped.items():
        assert fam.samples, name
        assert fam.documentation.endswith(")."), f"{name}: the help text should say the unit in parentheses"
        assert not any(s.name.endswith("_created") for s in fam.samples), name


def test_dashboard_queries_only_scraped_metrics() -> None:
    m = ServeMetrics()
    _touch_every_label(m)
    scraped = _scraped(m)
    names = _dashboard_names()
    assert names, "no netflowgen_ metric in any panel target"
    for name in sorted(names):
        assert _family(name) in scraped, f"the dashboard queries {name}, which a scrape does not have"


def test_dashboard_shows_every_metric() -> None:
    used = {_family(n) for n in _dashboard_names()}
    missing = [n for n in METRIC_NAMES if n not in used]
    assert not missing, f"not on any panel: {missing}"


def test_dashboard_shape() -> None:
    d = _dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in _panels(d["panels"])]
    assert len(ids) == len(set(ids))
    exprs = []
    for p in _panels(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
            exprs.append(t["expr"])
    for e in exprs:  # balanced brackets: a cheap guard against a mistyped PromQL expression
        for a, b in ("()", "[]", "{}"):
            assert e.count(a) == e.count(b), e
    assert any("histogram_quantile(0.99" in e and "netflowgen_scoring_seconds_bucket" in e for e in exprs)
    assert any("histogram_quantile(0.5" in e and "netflowgen_scoring_seconds_bucket" in e for e in exprs)


def test_count_maps_kinds_onto_counters() -> None:
    m = ServeMetrics()
    m.count("sent", "bgp", 3)
    m.count("capped", "bgp")
    m.count("skipped", "mail", 2)
    scraped = _scraped(m)

    def value(name: str, action: str) -> float:
        return sum(s.value for s in scraped[name].samples if s.labels.get("action") == action)

    assert value("netflowgen_actions_sent_total", "bgp") == 3
    assert value("netflowgen_actions_capped_total", "bgp") == 1
    assert value("netflowgen_actions_skipped_total", "mail") == 2
    assert value("netflowgen_actions_skipped_total", "bgp") == 0
    with pytest.raises(ValueError, match="unknown"):
        m.count("exploded", "bgp")
    with pytest.raises(ValueError):
        m.count("sent", "bgp", -1)


def test_registries_are_independent_and_histogram_buckets() -> None:
    a, b = ServeMetrics(), ServeMetrics()  # a second instance must not clash on the global registry
    a.minutes_closed.inc(5)
    a.receiver_up.set(1)
    a.scoring_seconds.observe(0.3)
    a.scoring_seconds.observe(120)
    sa, sb = _scraped(a), _scraped(b)
    assert sa["netflowgen_minutes_closed_total"].samples[0].value == 5
    assert sb["netflowgen_minutes_closed_total"].samples[0].value == 0
    assert sa["netflowgen_receiver_up"].samples[0].value == 1
    buckets = {s.labels["le"]: s.value for s in sa["netflowgen_scoring_seconds"].samples if s.name.endswith("_bucket")}
    assert float(min(buckets, key=float)) == SCORING_BUCKETS[0] == 0.01
    assert SCORING_BUCKETS[-1] == 60
    assert buckets["0.25"] == 0 and buckets["0.5"] == 1 and buckets["60.0"] == 1 and buckets["+Inf"] == 2
