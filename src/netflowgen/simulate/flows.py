"""Vectorized flow generation for one chunk of minutes (no Python loop per flow or per minute).

For a chunk [t0, t1): per node-minute session counts ~ Poisson(scale x daily x weekly x day factor x
minute noise x flash-crowd boost); every session's kind, outcome, sizes, ports and peer are drawn as
whole arrays; volumetric events (attacks, bulk surges) add records sized from their envelope; then
1:N packet sampling thins the records and exporter outages remove whole minutes.
Each chunk has its own numpy Generator seeded by (seed, chunk index), so chunks are independent and
the output does not depend on how many chunks run at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from netflowgen.schema import FLOW_SCHEMA
from netflowgen.simulate.events import Plan, envelope
from netflowgen.simulate.signatures import CARPET_VECTORS, SIGNATURES, Signature
from netflowgen.simulate.topology import Topology, draw_remote
from netflowgen.simulate.traffic import (
    ARCHETYPES,
    POOLS,
    KindTable,
    RangeTable,
    archetype_mix_cdf,
    build_kind_table,
    choose,
)

MS_PER_MIN = 60_000
MAX_FLOW_MS = 120_000  # exporters' active timeout: no record lasts longer


@dataclass(frozen=True)
class SignatureTable:
    """SIGNATURES as arrays (S,) / (S, R) for per-record gathering."""

    names: tuple[str, ...]
    proto: np.ndarray
    pool: np.ndarray
    remote_ports: RangeTable
    node_ports: RangeTable
    bpp: np.ndarray  # (S, 2)
    in_flags: RangeTable
    answer_prob: np.ndarray
    answer_ratio: np.ndarray
    answer_bpp: np.ndarray
    answer_flags: RangeTable

    @staticmethod
    def build() -> "SignatureTable":
        sigs: list[Signature] = list(SIGNATURES.values())
        flags = lambda fl: tuple((v, v, w) for v, w in fl)  # noqa: E731 - a value as a 1-wide range
        return SignatureTable(
            names=tuple(s.name for s in sigs), proto=np.array([s.proto for s in sigs]),
            pool=np.array([POOLS.index(s.remote_pool) for s in sigs]),
            remote_ports=RangeTable.build([s.remote_ports for s in sigs]),
            node_ports=RangeTable.build([s.node_ports for s in sigs]),
            bpp=np.array([s.bpp for s in sigs], float),
            in_flags=RangeTable.build([flags(s.in_flags) for s in sigs]),
            answer_prob=np.array([s.answer_prob for s in sigs]),
            answer_ratio=np.array([s.answer_ratio for s in sigs]),
            answer_bpp=np.array([s.answer_bpp for s in sigs], float),
            answer_flags=RangeTable.build([flags(s.answer_flags) for s in sigs]))


class ChunkGenerator:
    """Generates the flow records of any chunk of minutes for a fixed topology and event plan."""

    def __init__(self, topo: Topology, plan: Plan, start_ms: int, minutes: int, seed: int,
                 max_attack_flows: int) -> None:
        self.topo, self.plan, self.start_ms, self.minutes, self.seed = topo, plan, start_ms, minutes, seed
        self.max_attack_flows = max_attack_flows
        self.exporter_strings = pa.array(topo.exporter_ip, pa.string())
        self.kinds: KindTable = build_kind_table()
        self.mix_cdf = archetype_mix_cdf()
        self.sigs = SignatureTable.build()
        a = topo.node_archetype
        self.peak_hour = np.array([ARCHETYPES[i].peak_hour for i in a])[:, None]
        self.floor = np.array([ARCHETYPES[i].floor for i in a])[:, None]
        self.sharp = np.array([ARCHETYPES[i].sharpness for i in a])[:, None]
        self.weekend = np.array([ARCHETYPES[i].weekend for i in a])[:, None]
        rng = np.random.default_rng([seed, 3])
        n_days = minutes // 1440 + 2
        self.day_factor = rng.lognormal(0.0, 0.15, (topo.n_nodes, n_days))  # slow day-to-day drift
        # weekday of minute 0 (0 = Monday); epoch day 0 (1970-01-01) was a Thursday
        self.first_weekday = int((start_ms // 86_400_000 + 3) % 7)
        # each event uses a fixed set of peers (its reflectors / bots) at a random place in its pool
        sig_of = {name: i for i, name in enumerate(self.sigs.names)}
        sig_of.update(flash_crowd=-1, carpet_bomb=-2)
        self.event_sig = np.array([sig_of[t] for t in plan.events.type], np.int64)
        self.carpet_sigs = np.array([sig_of[v] for v in CARPET_VECTORS])
        self.event_peer_base = np.random.default_rng([seed, 4]).integers(0, 1 << 30, len(plan.events))

    # --- normal traffic --------------------------------------------------------------------------
    def rates(self, t0: int, t1: int, rng: np.random.Generator) -> np.ndarray:
        """(V, M) expected sessions per node-minute for minutes [t0, t1)."""
        m = np.arange(t0, t1)
        hour = ((m % 1440) / 60.0)[None, :] + self.topo.node_hour_offset[:, None]
        bump = ((1.0 + np.cos(2 * np.pi * (hour - self.peak_hour) / 24.0)) / 2.0) ** self.sharp
        daily = self.floor + (1.0 - self.floor) * bump
        weekday = (m // 1440 + self.first_weekday) % 7
        weekly = np.where(weekday[None, :] >= 5, self.weekend, 1.0)
        noise = rng.gamma(6.0, 1 / 6.0, daily.shape)  # minute-to-minute jitter, mean 1
        rate = self.topo.node_scale[:, None] * daily * weekly * self.day_factor[:, m // 1440] * noise
        ev = self.plan.events
        for e in np.flatnonzero((self.event_sig == -1) & (ev.onset < t1) & (ev.end > t0)):
            s = envelope(m - ev.onset[e], ev.ramp[e], ev.plateau[e], ev.decay[e])
            rate[ev.node[e]] *= 1.0 + (ev.multiple[e] - 1.0) * s
        return rate

    def sessions(self, t0: int, t1: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        """Forward and reverse records of the chunk's normal sessions (true, unsampled counts)."""
        k = self.kinds
        counts = rng.poisson(self.rates(t0, t1, rng))
        M = t1 - t0
        cell = np.repeat(np.arange(counts.size, dtype=np.int32), counts.ravel())
        node, minute = cell // M, cell % M  # int32: halves the memory traffic of every gather
        n = cell.size
        kind = choose(rng, self.mix_cdf, self.topo.node_archetype[node])
        outcome = choose(rng, k.outcome_cdf, kind)
        cflags, sflags = k.outcome_flags[kind, outcome, 0], k.outcome_flags[kind, outcome, 1]
        maxp = k.outcome_max_pkts[kind, outcome]
        fwd_p = np.maximum(1, np.rint(rng.lognormal(k.fwd_mu[kind], k.fwd_sigma[kind])))
        rev_p = np.maximum(1, np.rint(rng.lognormal(k.rev_mu[kind], k.rev_sigma[kind])))
        limited = maxp > 0
        fwd_p[limited] = np.minimum(fwd_p[limited], maxp[limited])
        rev_p[limited] = np.minimum(rev_p[limited], maxp[limited])
        fwd_b = fwd_p * rng.uniform(k.fwd_bpp[kind, 0], k.fwd_bpp[kind, 1])
        rev_b = rev_p * rng.uniform(k.rev_bpp[kind, 0], k.rev_bpp[kind, 1])
        sport = k.server_ports.sample(rng, kind)
        cport = k.client_ports.sample(rng, kind)
        pool = k.pool[kind]
        remote = draw_remote(rng, self.topo, pool, skew=np.where(pool <= 1, 2.5, 1.0))
        v6 = self.topo.node_v6[node]
        remote += self.topo.v6_shift * v6  # IPv6 nodes talk to IPv6 peers
        proto = np.where(v6 & (k.proto[kind] == 1), np.uint8(58), k.proto[kind])  # ICMPv6
        # ICMP type/code sits in the destination port: echo request 8 (v4) / 128 (v6)
        sport = np.where(proto == 58, 128 * 256, sport)
        ts = minute * MS_PER_MIN + rng.integers(0, MS_PER_MIN, n, dtype=np.int32)
        dur = np.minimum(MAX_FLOW_MS, rng.lognormal(np.log(200.0), 1.5, n) * np.sqrt(fwd_p)).astype(np.int32)
        dur[proto != 6] = np.minimum(dur[proto != 6], 5_000)
        has_rev = rng.random(n) < k.reply_prob[kind]
        server = k.node_is_server[kind]
        fwd = dict(node=node, minute=minute, node_is_dst=server, remote=remote,
                   src_port=cport, dst_port=sport, proto=proto, flags=cflags,
                   pkts=fwd_p, bytes=fwd_b, ts=ts, dur=dur)
        r = has_rev
        icmp = (proto[r] == 1) | (proto[r] == 58)
        echo_reply = np.where(proto[r] == 58, 129 * 256, 0)  # type 0 (v4) / 129 (v6)
        rev = dict(node=node[r], minute=minute[r], node_is_dst=~server[r], remote=remote[r],
                   src_port=np.where(icmp, 0, sport[r]), dst_port=np.where(icmp, echo_reply, cport[r]),
                   proto=proto[r], flags=sflags[r], pkts=rev_p[r], bytes=rev_b[r],
                   ts=_same_minute(ts[r], rng.integers(1, 80, r.sum(), dtype=np.int32)),
                   dur=np.maximum(0, dur[r] - 1))
        return [fwd, rev]

    # --- attacks and bulk surges -----------------------------------------------------------------
    def volumetric(self, t0: int, t1: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        """Records of attacks and bulk benign surges active in [t0, t1)."""
        ev = self.plan.events
        act = np.flatnonzero((self.event_sig != -1) & (ev.onset < t1) & (ev.end > t0))
        if act.size == 0:
            return []
        m = np.arange(t0, t1)
        s = envelope(m[None, :] - ev.onset[act, None], ev.ramp[act, None], ev.plateau[act, None],
                     ev.decay[act, None])  # (A, M)
        ai, mi = np.nonzero(s > 0)
        e, strength, minute = act[ai], s[ai, mi], mi
        volume = ev.peak_bytes[e] * strength * rng.lognormal(0.0, 0.15, e.size)  # bytes this minute
        n_rec = np.clip(np.rint(ev.sources[e] * np.sqrt(strength)), 1, self.max_attack_flows).astype(np.int64)
        rec = np.repeat(np.arange(e.size), n_rec)
        e_r, minute_r = e[rec], minute[rec]
        n = rec.size
        sig = self.event_sig[e_r]
        carpet = sig == -2
        sig[carpet] = self.carpet_sigs[rng.integers(0, len(self.carpet_sigs), carpet.sum())]
        st = self.sigs
        bpp = rng.uniform(st.bpp[sig, 0], st.bpp[sig, 1])
        per_flow = volume[rec] / n_rec[rec]
        pkts = np.maximum(1, np.rint(per_flow / bpp * rng.gamma(4.0, 0.25, n)))
        rport = st.remote_ports.sample(rng, sig)
        nport = np.where(rport == 0, 0, st.node_ports.sample(rng, sig))  # fragments: no ports
        pool = st.pool[sig]
        n_src = np.maximum(1, ev.sources[e_r]).astype(np.int64)
        offset = (self.event_peer_base[e_r] + rng.integers(0, 1 << 40, n) % n_src) % self.topo.pool_size[pool]
        remote = self.topo.pool_start[pool] + offset + self.topo.v6_shift * self.topo.node_v6[ev.node[e_r]]
        ts = minute_r * MS_PER_MIN + rng.integers(0, MS_PER_MIN // 2, n)
        dur = rng.integers(MS_PER_MIN // 4, MS_PER_MIN, n)
        bulk = dict(node=ev.node[e_r], minute=minute_r, node_is_dst=np.ones(n, bool), remote=remote,
                    src_port=rport, dst_port=nport, proto=st.proto[sig],
                    flags=np.where(st.proto[sig] == 6, st.in_flags.sample(rng, sig), 0),
                    pkts=pkts, bytes=pkts * bpp, ts=ts, dur=dur)
        a = rng.random(n) < st.answer_prob[sig]
        apk = np.maximum(1, np.rint(pkts[a] * st.answer_ratio[sig[a]] * rng.uniform(0.5, 1.5, a.sum())))
        answer = dict(node=ev.node[e_r[a]], minute=minute_r[a], node_is_dst=np.zeros(a.sum(), bool),
                      remote=remote[a], src_port=nport[a], dst_port=rport[a], proto=st.proto[sig[a]],
                      flags=st.answer_flags.sample(rng, sig[a]),
                      pkts=apk, bytes=apk * rng.uniform(st.answer_bpp[sig[a], 0], st.answer_bpp[sig[a], 1]),
                      ts=_same_minute(ts[a], rng.integers(1, 50, a.sum())), dur=dur[a])
        return [bulk, answer]

    # --- the chunk -------------------------------------------------------------------------------
    def chunk(self, index: int, t0: int, t1: int, replicate: int | None = None) -> tuple["ChunkRecords", np.ndarray]:
        """Records of minutes [t0, t1) (call `.table()` for the FLOW_SCHEMA table sorted by
        ts_start) and the (2, V, M) estimated (sampling-scaled) incoming packets and bytes per
        node-minute. Building the table is left to the caller so that a writer thread can do it.

        `replicate` k >= 0 redraws the chunk from its own random stream: the same topology, day
        factors, events and outages (all fixed by the seed), every per-minute draw (rate jitter,
        sessions, attack records, sampling) new. None is the simulation's own draw."""
        rng = np.random.default_rng([self.seed, 7, index] + ([] if replicate is None else [1 << 20, replicate]))
        topo, M = self.topo, t1 - t0
        # exporter outages: the exporter sent nothing at all for these minutes
        down = np.zeros((len(topo.exporter_ip), M), bool)
        out = self.plan.outages
        for x, a, b in zip(out.exporter, out.start, out.end):
            down[x, max(a, t0) - t0:max(min(b, t1) - t0, 0)] = True
        kept_parts = []
        for part in self.sessions(t0, t1, rng) + self.volumetric(t0, t1, rng):
            # 1:N packet sampling: each packet is kept with probability 1/N; a flow with no packet
            # kept leaves no record. Bytes scale with the kept share of packets. Thinning each part
            # before concatenating keeps the work proportional to the records written.
            rate = topo.node_rate[part["node"]]
            true_p = part["pkts"].astype(np.int64)
            kept = true_p.copy()
            sampled = np.flatnonzero(rate > 1)
            kept[sampled] = rng.binomial(true_p[sampled], 1.0 / rate[sampled])
            mask = (kept > 0) & ~down[topo.node_exporter[part["node"]], part["minute"]]
            rec = {f: v[mask] for f, v in part.items()}
            # A sampled record ORs the flags of the *kept* packets only: the single SYN, FIN or
            # RST packet of a session survives with probability kept/true, ACK and PSH ride on
            # every data packet. So sampled traffic shows far more 16/24 and fewer 27.
            share = kept[mask] / true_p[mask]
            flags = rec["flags"].astype(np.uint8)
            for bit in (1, 2, 4):  # FIN, SYN, RST
                lost = ((flags & bit) > 0) & (share < 1) & (rng.random(share.size) >= share)
                rest = flags[lost] & ~np.uint8(bit)
                # never erase the last flag of a control-only record (a bare SYN stays a SYN)
                flags[lost] = np.where(rest > 0, rest, flags[lost])
            rec["flags"] = flags
            rec["pkts"] = kept[mask]
            rec["bytes"] = np.maximum(rec["pkts"], np.rint(part["bytes"][mask] / true_p[mask] * rec["pkts"]))
            kept_parts.append(rec)
        r = _concat(kept_parts)
        r["pkts"], r["bytes"] = r["pkts"].astype(np.int64), r["bytes"].astype(np.int64)
        # estimated incoming volume per node-minute (what a collector would show), for alert reports
        to_node = r["node_is_dst"]
        n_rate = topo.node_rate[r["node"]]
        cell = r["node"][to_node] * M + r["minute"][to_node]
        V = topo.n_nodes
        inbound = np.stack([
            np.bincount(cell, weights=(r["pkts"] * n_rate)[to_node], minlength=V * M),
            np.bincount(cell, weights=(r["bytes"] * n_rate)[to_node], minlength=V * M),
        ]).reshape(2, V, M)
        return ChunkRecords(self, r, self.start_ms + t0 * MS_PER_MIN), inbound


class ChunkRecords:
    """A chunk's records as numpy arrays (generation order); `table()` sorts them by start time and
    builds the Arrow table (gathers and string takes mostly release the GIL)."""

    def __init__(self, gen: ChunkGenerator, r: dict[str, np.ndarray], base_ms: int) -> None:
        self.gen, self.r, self.base_ms = gen, r, base_ms

    def __len__(self) -> int:
        return int(self.r["ts"].size)

    def table(self) -> pa.Table:
        topo, r = self.gen.topo, self.r
        # time order; the record index breaks ties, so every sort algorithm (numpy picks SIMD
        # variants by CPU) gives the same permutation and the output stays byte-identical
        order = np.argsort((r["ts"].astype(np.int64) << 27) | np.arange(r["ts"].size))
        node, to_node, remote = r["node"][order], r["node_is_dst"][order], r["remote"][order]
        src = np.where(to_node, remote, node)
        dst = np.where(to_node, node, remote)
        ts = self.base_ms + r["ts"][order].astype(np.int64)
        cust_if = 100 + topo.node_customer[node]
        return pa.Table.from_arrays([
            pa.array(ts, pa.int64()).cast(FLOW_SCHEMA.field("ts_start").type),
            pa.array(ts + r["dur"][order], pa.int64()).cast(FLOW_SCHEMA.field("ts_end").type),
            topo.addresses.take(pa.array(src)), topo.addresses.take(pa.array(dst)),
            pa.array(r["src_port"][order].astype(np.uint16)), pa.array(r["dst_port"][order].astype(np.uint16)),
            pa.array(r["proto"][order].astype(np.uint8)), pa.array(r["flags"][order].astype(np.uint8)),
            pa.array(r["pkts"][order]), pa.array(r["bytes"][order]),
            pa.array(topo.node_rate[node].astype(np.uint32)),
            self.gen.exporter_strings.take(pa.array(topo.node_exporter[node])),
            pa.array(np.where(to_node, 1, cust_if).astype(np.uint32)),
            pa.array(np.where(to_node, cust_if, 1).astype(np.uint32)),
        ], schema=FLOW_SCHEMA)


def _same_minute(ts: np.ndarray, rtt: np.ndarray) -> np.ndarray:
    """Answer start times (question + round trip, ms) kept inside the question's minute, so a
    record's `minute` field always equals the minute of its ts_start (outages, alert sums)."""
    return np.minimum(ts + rtt, ts - ts % MS_PER_MIN + MS_PER_MIN - 1)


_FIELDS = ("node", "minute", "node_is_dst", "remote", "src_port", "dst_port", "proto", "flags",
           "pkts", "bytes", "ts", "dur")


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {f: np.zeros(0, bool if f == "node_is_dst" else (float if f in ("pkts", "bytes") else np.int64))
                for f in _FIELDS}
    return {f: np.concatenate([np.asarray(p[f]) for p in parts]) for f in _FIELDS}
