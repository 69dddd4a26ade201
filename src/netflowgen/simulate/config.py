"""Every knob of the simulated ISP, with its default (`netflowgen simulate --dump` prints them).

The defaults give 7 days of about 20 customers and 120 nodes, about 1000 attacks and a static
per-node threshold that stays below F1 0.9 (docs/simulator.md has the measured figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TopologyConfig:
    """Customers, their nodes and the exporters in front of them."""

    customers: int = 20
    nodes: int = 120  # total monitored IPs, spread over the customers (each owns at least one)
    # Share of each archetype among nodes (normalized); names are in netflowgen.simulate.traffic.
    archetype_shares: dict[str, float] = field(default_factory=lambda: {
        "web": 0.25, "dns": 0.10, "ntp": 0.07, "mail": 0.10, "nat": 0.30, "idle": 0.18})
    # Peak sessions per minute of a node, log-uniform in [min, max] (before the archetype factor):
    # several orders of magnitude between the quietest and the busiest node.
    scale_min: float = 0.3
    scale_max: float = 40.0
    exporters: int = 3
    # Packet sampling 1:N of each exporter (cycled when shorter than `exporters`); recorded per flow.
    sampling_rates: list[int] = field(default_factory=lambda: [1, 10, 4])
    remote_pool: int = 131072  # distinct remote addresses (clients, servers, reflectors, spoofers)
    ipv6_customers: float = 0.1  # share of customers numbered in IPv6 (a /64 each)


@dataclass
class TimeConfig:
    start: str = "2024-01-01T00:00:00Z"  # a Monday; UTC
    days: float = 7.0
    chunk_minutes: int = 240  # minutes generated at once (one Parquet row group each)


@dataclass
class EventConfig:
    """Attacks, benign surges, exporter outages and the commercial-defense alerts."""

    attacks_per_day: float = 140.0  # attack campaigns per day over all nodes (about 1000 per week)
    never_attacked: float = 0.25  # share of nodes that are never attacked
    attack_types: dict[str, float] = field(default_factory=lambda: {
        "dns_amp": 0.30, "ntp_amp": 0.20, "udp_flood": 0.25, "syn_flood": 0.20, "carpet_bomb": 0.05})
    ramp_minutes: list[float] = field(default_factory=lambda: [2.0, 25.0])  # log-uniform
    plateau_median_minutes: float = 15.0  # lognormal, clipped to [2, 360]
    plateau_sigma: float = 1.1
    min_gap_minutes: int = 90  # quiet time between two events of a node
    surges_per_day: float = 70.0  # benign surges per day over all nodes
    # The difficulty knob in [0, 1]: higher = weaker attacks and stronger benign surges.
    difficulty: float = 0.5
    alert_probability: float = 0.9  # share of attacks the commercial defense alerts on
    alert_delay_minutes: float = 4.0  # mean extra delay after the ramp (exponential)
    false_positive_alerts: float = 0.08  # extra alerts flagged false positive, per true alert
    underreported_alerts: float = 0.05  # alerts whose reported volume is below 95 % of the flows
    outages_per_exporter_day: float = 0.4
    outage_minutes: list[int] = field(default_factory=lambda: [1, 30])
    max_attack_flows_per_minute: int = 100  # exporter flow-cache limit under attack (records/min)


@dataclass
class OutputConfig:
    parquet: bool = True
    csv: bool = False  # also write nfdump-style CSV (flows.csv)
    compression: str = "zstd"


@dataclass
class SimConfig:
    """Resolved settings of one simulation run."""

    seed: int = 0
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    events: EventConfig = field(default_factory=EventConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
