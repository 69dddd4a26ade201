"""Prometheus metrics of `netflowgen serve`.

Every metric lives in the registry of one `ServeMetrics` (not prometheus_client's global
registry), so several servers, or several tests, can coexist in one process. `StatusServer`
(netflowgen.live.status) serves `exposition()` at /metrics; deploy/grafana/netflowgen.json charts
exactly the families of `METRIC_NAMES`.

Naming follows the Prometheus conventions: a `netflowgen_` prefix, base units (seconds), counters
ending in `_total`, and every help text saying what is counted.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

PREFIX = "netflowgen_"

# seconds to score one closed minute: from a handful of nodes (10 ms) to a whole ISP on a slow CPU
SCORING_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# kind of `ServeMetrics.count` -> attribute holding its counter
ACTION_KINDS: tuple[str, ...] = ("sent", "failed", "retried", "skipped", "capped")

# every exposed metric family, exactly as a scrape names it (counters with their _total suffix)
METRIC_NAMES: tuple[str, ...] = (
    "netflowgen_flows_received_total",
    "netflowgen_flows_written_total",
    "netflowgen_flows_late_total",
    "netflowgen_flows_rejected_total",
    "netflowgen_kernel_drops_total",
    "netflowgen_sequence_failures_total",
    "netflowgen_datagrams_received_total",
    "netflowgen_datagrams_undecodable_total",
    "netflowgen_minutes_closed_total",
    "netflowgen_minutes_missing_total",
    "netflowgen_alerts_opened_total",
    "netflowgen_alerts_closed_total",
    "netflowgen_actions_sent_total",
    "netflowgen_actions_failed_total",
    "netflowgen_actions_retried_total",
    "netflowgen_actions_skipped_total",
    "netflowgen_actions_capped_total",
    "netflowgen_receiver_restarts_total",
    "netflowgen_receiver_lost_seconds_total",
    "netflowgen_nodes_scored",
    "netflowgen_alerts_open",
    "netflowgen_last_closed_minute_timestamp_seconds",
    "netflowgen_watermark_lag_seconds",
    "netflowgen_receiver_up",
    "netflowgen_scoring_seconds",
)


class _NoCreatedRegistry(CollectorRegistry):
    """A registry that leaves out the `<family>_created` samples of counters and histograms: the
    text format would expose each as one more gauge family, doubling the series for no use
    (Prometheus ignores them there), and unlike prometheus_client's disable_created_metrics() this
    does not change the process-wide default."""

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            created = metric.name + "_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


class ServeMetrics:
    """Every metric of `netflowgen serve`, in its own CollectorRegistry (not the global one, so
    several can coexist in tests).

    Attributes are named after the metrics without the prefix and the _total suffix
    (`m.flows_received` is netflowgen_flows_received_total). Labelled counters: flows_rejected and
    datagrams_undecodable by `reason`, actions_* by `action`, receiver_restarts by `reason`.
    """

    registry: CollectorRegistry

    def __init__(self) -> None:
        self.registry = _NoCreatedRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labelnames=labels, registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, registry=r)

        # receiver and writer
        self.flows_received = counter("flows_received_total", "Flows the receiver stored (flows).")
        self.flows_written = counter("flows_written_total", "Flows written to the canonical Parquet files (flows).")
        self.flows_late = counter("flows_late_total", "Flows that arrived after their minute had closed (flows).")
        self.flows_rejected = counter("flows_rejected_total", "Flows rejected by validation, by reason (flows).", ("reason",))
        self.kernel_drops = counter("kernel_drops_total", "Datagrams the kernel dropped on the receiver's UDP socket (datagrams).")
        self.sequence_failures = counter("sequence_failures_total",
                                         "Gaps in the exporters' NetFlow v9 / IPFIX sequence numbers (sequence failures).")
        self.datagrams_received = counter("datagrams_received_total", "Datagrams the receiver read (datagrams).")
        self.datagrams_undecodable = counter("datagrams_undecodable_total",
                                             "Datagrams the receiver could not decode, by reason (datagrams).", ("reason",))
        self.receiver_restarts = counter("receiver_restarts_total", "Restarts of the receiver process, by reason (restarts).",
                                         ("reason",))
        self.receiver_lost_seconds = counter("receiver_lost_seconds_total",
                                             "Time the receiver was down and heard nothing (seconds).")
        # minutes and scoring
        self.minutes_closed = counter("minutes_closed_total", "Minutes closed and handed to the detector (minutes).")
        self.minutes_missing = counter("minutes_missing_total", "Minutes without any flow file, the receiver being down (minutes).")
        # alerts and actions
        self.alerts_opened = counter("alerts_opened_total", "Alerts opened (alerts).")
        self.alerts_closed = counter("alerts_closed_total", "Alerts closed (alerts).")
        self.actions_sent = counter("actions_sent_total", "Actions delivered, by action (actions).", ("action",))
        self.actions_failed = counter("actions_failed_total", "Actions that failed for good, by action (actions).", ("action",))
        self.actions_retried = counter("actions_retried_total", "Retries of actions, by action (retries).", ("action",))
        self.actions_skipped = counter("actions_skipped_total",
                                       "Actions not taken (disabled, dry run or duplicate), by action (actions).", ("action",))
        self.actions_capped = counter("actions_capped_total",
                                      "Actions not taken because a rate or count cap was reached, by action (actions).", ("action",))
        # gauges
        self.nodes_scored = gauge("nodes_scored", "Nodes scored in the last closed minute (nodes).")
        self.alerts_open = gauge("alerts_open", "Alerts open now (alerts).")
        self.last_closed_minute_timestamp_seconds = gauge(
            "last_closed_minute_timestamp_seconds", "Start of the last closed minute (Unix time, seconds).")
        self.watermark_lag_seconds = gauge(
            "watermark_lag_seconds", "Wall clock minus the event-time watermark of the flows (seconds).")
        self.receiver_up = gauge("receiver_up", "Whether the receiver runs (1 up, 0 down).")
        # histogram
        self.scoring_seconds = Histogram(PREFIX + "scoring_seconds", "Time to score one closed minute (seconds).",
                                         buckets=SCORING_BUCKETS, registry=r)

    def count(self, kind: str, action: str, n: int = 1) -> None:
        """Add `n` to the actions counter of `kind` ("sent", "failed", "retried", "skipped" or
        "capped") for `action`; ValueError on another kind or a negative n."""
        counters = {"sent": self.actions_sent, "failed": self.actions_failed, "retried": self.actions_retried,
                    "skipped": self.actions_skipped, "capped": self.actions_capped}
        if kind not in counters:
            raise ValueError(f"unknown action count kind {kind!r}; expected one of {', '.join(ACTION_KINDS)}")
        if n < 0:
            raise ValueError(f"a counter only goes up; got n={n}")
        counters[kind].labels(action=action).inc(n)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text exposition format (what /metrics returns)."""
        return generate_latest(self.registry)
