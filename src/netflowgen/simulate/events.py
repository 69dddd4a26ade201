"""The event plan: attacks, benign surges, exporter outages and the alerts a commercial DDoS defense
raises, all drawn before any flow so every chunk of flows can be generated independently.

Times are integer minutes since the simulation start. An event's strength over time (`envelope`)
rises log-linearly from 1 % to 100 % over the ramp (barely visible, then full strength: the CUSUM
onset of SPEC 9 has something to find), holds through the plateau and falls linearly in the decay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netflowgen.simulate.config import EventConfig
from netflowgen.simulate.signatures import ATTACK_TYPES, SIGNATURES, SURGES_BY_ARCHETYPE
from netflowgen.simulate.topology import Topology
from netflowgen.simulate.traffic import ARCHETYPES, daily_profile, mean_in_bytes_per_session

RAMP_FLOOR = 0.01  # strength at the first ramp minute
MIN_PEAK_BYTES = 2e5  # bytes/minute: even an idle host is attacked with at least ~x times this


@dataclass
class Events:
    """One row per (event, node); attacks and surges. Arrays of shape (N,)."""

    kind: np.ndarray  # "attack" | "surge"
    type: np.ndarray  # attack or surge type name
    node: np.ndarray  # node index
    campaign: np.ndarray  # carpet-bombing rows of one campaign share it; else = row id
    onset: np.ndarray  # first minute
    ramp: np.ndarray  # minutes from onset to full strength
    plateau: np.ndarray  # minutes at full strength
    decay: np.ndarray  # minutes of decline
    peak_bytes: np.ndarray  # true (unsampled) bulk bytes/minute at full strength
    multiple: np.ndarray  # peak_bytes / the node's mean incoming bytes per minute
    sources: np.ndarray  # distinct remote peers at full strength

    @property
    def end(self) -> np.ndarray:
        """First minute after the event."""
        return self.onset + self.ramp + self.plateau + self.decay

    def __len__(self) -> int:
        return len(self.node)


@dataclass
class Alerts:
    """Commercial-defense alerts, shape (A,). `event` is the truth row (-1 for a false alarm)."""

    node: np.ndarray
    start: np.ndarray
    end: np.ndarray
    type: np.ndarray
    false_positive: np.ndarray
    event: np.ndarray
    report_factor: np.ndarray  # reported volume / what the flows show in [start, end)


@dataclass
class Outages:
    exporter: np.ndarray
    start: np.ndarray
    end: np.ndarray


@dataclass
class Plan:
    events: Events
    alerts: Alerts
    outages: Outages
    dropped: int  # events that found no free slot on their node


def envelope(offset: np.ndarray, ramp: np.ndarray, plateau: np.ndarray, decay: np.ndarray
             ) -> np.ndarray:
    """Strength in [0, 1] at integer minute `offset` after onset (all arrays broadcast together)."""
    ramp_f = np.maximum(ramp, 1).astype(float)
    rising = RAMP_FLOOR ** np.clip(1.0 - (offset + 1) / ramp_f, 0.0, 1.0)
    falling = 1.0 - (offset - ramp - plateau + 1) / (decay + 1.0)
    s = np.where(offset < ramp, rising, np.where(offset < ramp + plateau, 1.0, falling))
    return np.where((offset < 0) | (offset >= ramp + plateau + decay), 0.0, np.clip(s, 0.0, 1.0))


def baseline_in_bytes(topo: Topology) -> np.ndarray:
    """(V,) mean incoming bytes per minute of each node's normal traffic (true, unsampled)."""
    hours = np.arange(0, 24, 0.25)
    out = np.empty(topo.n_nodes)
    for v in range(topo.n_nodes):
        arch = ARCHETYPES[topo.node_archetype[v]]
        mean_day = daily_profile(arch, hours).mean() * (5 + 2 * arch.weekend) / 7
        out[v] = topo.node_scale[v] * mean_day * mean_in_bytes_per_session(arch)
    return out


def _multiples(rng: np.random.Generator, n: int, surge: bool, d: float) -> np.ndarray:
    # The difficulty knob d in [0, 1] moves both ranges (log10 of the multiple of normal traffic):
    # attacks from [1.3, 3.0] (easy) down to [-0.3, 2.0] (hard), surges from [0.3, 0.6] up to
    # [0.3, 2.2]. At the default 0.5 the weakest attacks are ~3x normal and the strongest surges ~25x.
    lo, hi = (0.3, 0.6 + 1.6 * d) if surge else (1.3 - 1.6 * d, 3.0 - d)
    return 10.0 ** rng.uniform(lo, hi, n)


def plan_events(cfg: EventConfig, topo: Topology, minutes: int, seed: int) -> Plan:
    """Draw every attack, surge, outage and alert of the run (deterministic in `seed`)."""
    rng = np.random.default_rng([seed, 2])
    V, days = topo.n_nodes, minutes / 1440.0
    busy = np.zeros((V, minutes), bool)  # node-minutes already taken by an event (plus gap)
    gap = cfg.min_gap_minutes
    rows: list[tuple] = []
    dropped = 0
    base = baseline_in_bytes(topo)

    def place(nodes: np.ndarray, length: int, tries: int = 10) -> int | None:
        for _ in range(tries):
            onset = int(rng.integers(0, max(1, minutes - length)))
            a, b = max(0, onset - gap), min(minutes, onset + length + gap)
            if not busy[nodes, a:b].any():
                busy[nodes, a:b] = True
                return onset
        return None

    # --- attacks ---
    weight = rng.lognormal(0.0, 0.6, V)  # some nodes attacked again and again, most now and then
    weight[rng.random(V) < cfg.never_attacked] = 0.0
    if weight.sum() == 0:
        weight[rng.integers(V)] = 1.0
    types = list(cfg.attack_types)
    bad = [t for t in types if t not in ATTACK_TYPES]
    if bad:
        raise ValueError(f"unknown attack type(s) {bad}; known: {list(ATTACK_TYPES)}")
    tp = np.array([cfg.attack_types[t] for t in types], float)
    n_attacks = int(round(cfg.attacks_per_day * days))
    # carpet bombing sweeps the customer's prefix, except nodes that are never attacked at all
    by_customer = [np.flatnonzero((topo.node_customer == c) & (weight > 0))
                   for c in range(len(topo.customer_ids))]
    multi = [c for c, nodes in enumerate(by_customer) if len(nodes) >= 2]
    for _ in range(n_attacks):
        atype = types[rng.choice(len(types), p=tp / tp.sum())]
        ramp = int(np.exp(rng.uniform(*np.log(cfg.ramp_minutes))))
        plateau = int(np.clip(rng.lognormal(np.log(cfg.plateau_median_minutes), cfg.plateau_sigma), 2, 360))
        decay = int(rng.integers(1, 4))
        length = ramp + plateau + decay
        if atype == "carpet_bomb":
            if not multi:
                dropped += 1
                continue
            mult = _multiples(rng, 1, False, cfg.difficulty)[0]
            lo, hi = np.log(30), np.log(1000)
        else:
            mult = _multiples(rng, 1, False, cfg.difficulty)[0]
            lo, hi = np.log(SIGNATURES[atype].sources[0]), np.log(SIGNATURES[atype].sources[1])
        onset = None
        for _ in range(8):  # a busy target: try another one (the attacker moves on)
            if atype == "carpet_bomb":
                nodes = by_customer[multi[rng.integers(len(multi))]]
            else:
                nodes = np.array([rng.choice(V, p=weight / weight.sum())])
            onset = place(nodes, length)
            if onset is not None:
                break
        if onset is None:
            dropped += 1
            continue
        if atype == "carpet_bomb":
            mult /= np.sqrt(len(nodes))  # spread over the prefix: each node gets a share
        campaign = len(rows)
        for v in nodes.tolist():
            peak = mult * max(base[v], MIN_PEAK_BYTES)
            rows.append(("attack", atype, v, campaign, onset, ramp, plateau, decay, peak,
                         peak / base[v], float(np.exp(rng.uniform(lo, hi)))))

    # --- benign surges ---
    n_surges = int(round(cfg.surges_per_day * days))
    for _ in range(n_surges):
        v = int(rng.integers(V))
        if busy[v].mean() > 0.6:
            v = int(rng.integers(V))
        options = SURGES_BY_ARCHETYPE[ARCHETYPES[topo.node_archetype[v]].name]
        names = list(options)
        p = np.array(list(options.values()))
        stype = names[rng.choice(len(names), p=p / p.sum())]
        ramp = int(np.exp(rng.uniform(np.log(3), np.log(30))))
        plateau = int(np.clip(rng.lognormal(np.log(20), 0.9), 3, 240))
        decay = int(rng.integers(1, 11))
        onset = place(np.array([v]), ramp + plateau + decay, tries=20)
        if onset is None:
            dropped += 1
            continue
        mult = _multiples(rng, 1, True, cfg.difficulty)[0]
        peak = mult * base[v]
        if stype != "flash_crowd":
            peak = mult * max(base[v], MIN_PEAK_BYTES)
            lo, hi = SIGNATURES[stype].sources
            srcs = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        else:
            srcs = 0.0
        rows.append(("surge", stype, v, len(rows), onset, ramp, plateau, decay, peak,
                     peak / base[v], srcs))

    rows.sort(key=lambda r: (r[4], r[2]))  # by onset, then node: a stable, readable order
    cols: list[Any] = list(zip(*rows)) if rows else [[]] * 11
    campaign_ids = np.array(cols[3], np.int64)
    # renumber campaigns after sorting so ids follow time order
    _, first = np.unique(campaign_ids, return_index=True)
    order = {c: i for i, c in enumerate(campaign_ids[np.sort(first)])}
    events = Events(
        kind=np.array(cols[0], dtype=object), type=np.array(cols[1], dtype=object),
        node=np.array(cols[2], np.int64), campaign=np.array([order[c] for c in campaign_ids], np.int64),
        onset=np.array(cols[4], np.int64), ramp=np.array(cols[5], np.int64),
        plateau=np.array(cols[6], np.int64), decay=np.array(cols[7], np.int64),
        peak_bytes=np.array(cols[8], float), multiple=np.array(cols[9], float),
        sources=np.array(cols[10], float))
    return Plan(events, _plan_alerts(cfg, events, minutes, rng), _plan_outages(cfg, topo, minutes, rng),
                dropped)


def _plan_alerts(cfg: EventConfig, ev: Events, minutes: int, rng: np.random.Generator) -> Alerts:
    """One alert per alerted attack row, late by part of the ramp plus a random delay; extra alerts
    flagged false positive, mostly on benign surges (that is what fools commercial defenses)."""
    att = np.flatnonzero(ev.kind == "attack")
    # A campaign is alerted or not as a whole (the defense sees the prefix).
    alerted_campaign = rng.random(len(ev)) < cfg.alert_probability
    att = att[alerted_campaign[ev.campaign[att]]]
    delay = np.rint(ev.ramp[att] * rng.uniform(0.5, 1.1, len(att))
                    + rng.exponential(cfg.alert_delay_minutes, len(att))).astype(np.int64)
    start = ev.onset[att] + np.clip(delay, 1, None)
    end = np.maximum(ev.end[att] + rng.integers(0, 11, len(att)), start + 1)
    n_fp = int(round(cfg.false_positive_alerts * len(att)))
    surges = np.flatnonzero(ev.kind == "surge")
    fp_ev = rng.choice(surges, size=min(n_fp, len(surges)), replace=False) if len(surges) else surges
    fp_start = ev.onset[fp_ev] + ev.ramp[fp_ev]
    fp_end = ev.end[fp_ev]
    node = np.concatenate([ev.node[att], ev.node[fp_ev]])
    starts = np.concatenate([start, fp_start])
    ends = np.minimum(np.concatenate([end, fp_end]), minutes)
    types = np.concatenate([ev.type[att], rng.choice(["dns_amp", "udp_flood", "syn_flood"],
                                                     len(fp_ev)).astype(object)])
    fp = np.concatenate([np.zeros(len(att), bool), np.ones(len(fp_ev), bool)])
    event = np.concatenate([att, -np.ones(len(fp_ev), np.int64)])
    factor = rng.uniform(1.0, 1.15, len(node))
    under = rng.random(len(node)) < cfg.underreported_alerts
    factor[under] = rng.uniform(0.4, 0.9, under.sum())
    order = np.lexsort((node, starts))
    keep = starts[order] < minutes
    order = order[keep]
    return Alerts(node[order], starts[order], ends[order], types[order], fp[order], event[order],
                  factor[order])


def _plan_outages(cfg: EventConfig, topo: Topology, minutes: int, rng: np.random.Generator) -> Outages:
    E = len(topo.exporter_ip)
    n = rng.poisson(cfg.outages_per_exporter_day * minutes / 1440.0, E)
    exp = np.repeat(np.arange(E), n)
    start = rng.integers(0, minutes, exp.size)
    lo, hi = cfg.outage_minutes
    end = np.minimum(start + rng.integers(lo, hi + 1, exp.size), minutes)
    order = np.lexsort((exp, start))
    return Outages(exp[order], start[order], end[order])
