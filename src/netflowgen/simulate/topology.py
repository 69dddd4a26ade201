"""Who is on the simulated network: customers with a prefix each (a /24, or a /20 when one owns
more than 254 nodes), their nodes (archetype, scale, time
offset, exporter) and the pool of remote addresses the nodes talk to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from netflowgen.simulate.config import TopologyConfig
from netflowgen.simulate.traffic import ARCHETYPE_INDEX, ARCHETYPES, POOLS

# Customers live in 198.18.0.0/15 (RFC 2544 benchmarking space: never a real customer), one
# prefix each; exporters in 192.0.2.0/24 (documentation space).
CUSTOMER_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
EXPORTER_BASE = int(ipaddress.IPv4Address("192.0.2.1"))
# Shares of the remote pool per role (POOLS order); clients get the biggest slice.
POOL_SHARES = (0.45, 0.12, 0.05, 0.10, 0.05, 0.15, 0.08)


@dataclass(frozen=True)
class Topology:
    """Arrays over nodes (shape (V,)) and customers (shape (C,)); addresses as one string pool whose
    first V entries are the node IPs, followed by the remote addresses."""

    customer_ids: list[str]
    customer_prefixes: list[str]
    node_ip: list[str]
    node_customer: np.ndarray  # (V,) customer index
    node_archetype: np.ndarray  # (V,) archetype index
    node_scale: np.ndarray  # (V,) peak sessions per minute
    node_hour_offset: np.ndarray  # (V,) hours added to UTC for the daily profile
    node_exporter: np.ndarray  # (V,) exporter index
    exporter_ip: list[str]
    exporter_rate: np.ndarray  # (E,) sampling 1:N
    pool_start: np.ndarray  # (len(POOLS),) first address-pool index of each remote role
    pool_size: np.ndarray  # (len(POOLS),)
    addresses: pa.Array  # (V + remote_pool [+ remote_pool IPv6],) strings
    node_v6: np.ndarray  # (V,) bool: the node is an IPv6 address
    v6_shift: int  # add to a remote index to get the IPv6 twin of that peer

    @property
    def n_nodes(self) -> int:
        return len(self.node_ip)

    @property
    def node_rate(self) -> np.ndarray:
        """(V,) sampling rate of each node's exporter."""
        return self.exporter_rate[self.node_exporter]


def _ip_strings(values: np.ndarray) -> list[str]:
    """IPv4 integers -> dotted text, vectorized (the remote pool has ~10^5 addresses)."""
    v = np.asarray(values, np.int64)
    octets = [pl.Series(f"o{s}", (v >> s) & 255).cast(pl.String) for s in (24, 16, 8, 0)]
    return pl.DataFrame(octets).select(pl.concat_str(pl.all(), separator=".")).to_series().to_list()


def build_topology(cfg: TopologyConfig, seed: int) -> Topology:
    """Draw customers, nodes and addresses deterministically from `seed`."""
    if cfg.customers < 1 or cfg.nodes < cfg.customers:
        raise ValueError(f"need 1 <= customers <= nodes, got customers={cfg.customers} nodes={cfg.nodes}")
    rng = np.random.default_rng([seed, 1])
    C, V = cfg.customers, cfg.nodes
    # Customers own a Zipf-like number of nodes: a few big ones, many small ones, each at least one.
    weights = 1.0 / np.arange(1, C + 1) ** 0.8
    extra = rng.multinomial(V - C, weights / weights.sum())
    counts = 1 + extra[rng.permutation(C)]
    node_customer = np.repeat(np.arange(C), counts)
    names = list(cfg.archetype_shares)
    unknown = [n for n in names if n not in ARCHETYPE_INDEX]
    if unknown:
        raise ValueError(f"unknown archetype(s) {unknown}; known: {list(ARCHETYPE_INDEX)}")
    shares = np.array([cfg.archetype_shares[n] for n in names], float)
    arch = rng.choice([ARCHETYPE_INDEX[n] for n in names], size=V, p=shares / shares.sum())
    # make the mix visible in small setups: each archetype with a share gets at least one node
    for i, a in enumerate(sorted({ARCHETYPE_INDEX[n] for n, s in zip(names, shares) if s > 0})):
        if i < V and a not in arch:
            arch[rng.integers(V)] = a
    arch_scale = np.array([ARCHETYPES[a].scale for a in arch])
    scale = np.exp(rng.uniform(np.log(cfg.scale_min), np.log(cfg.scale_max), V)) * arch_scale
    hour_offset = rng.uniform(-1.5, 1.5, V)  # customers' users are not all on the same clock
    exporter_of_customer = rng.permutation(C) % cfg.exporters  # every exporter serves someone
    rates = np.array([cfg.sampling_rates[i % len(cfg.sampling_rates)] for i in range(cfg.exporters)],
                     np.int64)
    if (rates < 1).any():
        raise ValueError(f"sampling rates must be >= 1, got {cfg.sampling_rates}")

    # the smallest common prefix length that holds the biggest customer's nodes
    plen = next((p for p in (24, 23, 22, 21, 20) if counts.max() <= 2 ** (32 - p) - 2), None)
    if plen is None or C > 2 ** (plen - 15):
        raise ValueError(f"{C} customers with up to {counts.max()} nodes each do not fit in 198.18.0.0/15")
    size = 2 ** (32 - plen)
    node_ip_int = np.empty(V, np.int64)
    for c in range(C):
        idx = np.flatnonzero(node_customer == c)
        hosts = rng.choice(np.arange(1, size - 1), size=len(idx), replace=False)
        node_ip_int[idx] = CUSTOMER_BASE + c * size + np.sort(hosts)
    # Remote addresses: random public-looking IPv4 (first octet 1..223, not 10/127/198.18-19).
    remote = rng.integers(1 << 24, 224 << 24, cfg.remote_pool, dtype=np.int64)
    bad = (remote >> 24 == 10) | (remote >> 24 == 127) | ((remote >> 17) == (CUSTOMER_BASE >> 17))
    remote[bad] ^= 1 << 29
    sizes = np.floor(np.array(POOL_SHARES) * cfg.remote_pool).astype(np.int64)
    starts = len(node_ip_int) + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    node_ips = _ip_strings(node_ip_int)
    prefixes = [f"{ipaddress.IPv4Address(CUSTOMER_BASE + c * size)}/{plen}" for c in range(C)]
    # IPv6 customers (own stream: the IPv4 draws above do not depend on the share): a /64 each in
    # the documentation range, talking to an IPv6 copy of the remote pool (no mixed families).
    rng6 = np.random.default_rng([seed, 5])
    n6 = int(round(cfg.ipv6_customers * C)) if cfg.ipv6_customers > 0 else 0
    v6_customers = np.sort(rng6.choice(C, size=min(n6, C), replace=False)) if n6 else np.zeros(0, int)
    node_v6 = np.isin(node_customer, v6_customers)
    for c in v6_customers:
        prefixes[c] = f"2001:db8:0:{c + 1:x}::/64"
        for v in np.flatnonzero(node_customer == c):
            node_ips[v] = str(ipaddress.IPv6Address(f"2001:db8:0:{c + 1:x}::") + int(node_ip_int[v] & 0xFFF))
    remote6 = _ip6_strings(rng6, cfg.remote_pool) if n6 else []
    addresses = pa.array(node_ips + _ip_strings(remote) + remote6, pa.string())
    return Topology(
        customer_ids=[f"c{c:03d}" for c in range(C)],
        customer_prefixes=prefixes,
        node_ip=node_ips, node_customer=node_customer, node_archetype=arch, node_scale=scale,
        node_hour_offset=hour_offset, node_exporter=exporter_of_customer[node_customer],
        exporter_ip=[str(ipaddress.IPv4Address(EXPORTER_BASE + e)) for e in range(cfg.exporters)],
        exporter_rate=rates, pool_start=starts, pool_size=sizes, addresses=addresses,
        node_v6=node_v6, v6_shift=cfg.remote_pool)


def _ip6_strings(rng: np.random.Generator, n: int) -> list[str]:
    """n random IPv6 addresses in 2001:db8:ff00::/40 as canonical text (every written group
    non-zero, so `::` always stands for the same three zero groups)."""
    a = rng.integers(0xFF00, 0x10000, n)
    b, c = rng.integers(1, 0x10000, n), rng.integers(1, 0x10000, n)
    hexes = [np.char.mod("%x", x) for x in (a, b, c)]
    return list(np.char.add(np.char.add(np.char.add(np.char.add("2001:db8:", hexes[0]), ":"),
                                        np.char.add(hexes[1], "::")), hexes[2]))


def draw_remote(rng: np.random.Generator, topo: Topology, pool: np.ndarray, skew: float | np.ndarray = 1.0
                ) -> np.ndarray:
    """Address-pool indices for peers drawn from role `pool` (int array, index into POOLS).

    skew > 1 concentrates draws on the first addresses of the role (popular servers / clients).
    """
    u = rng.random(pool.shape[0]) ** skew
    return topo.pool_start[pool] + (u * topo.pool_size[pool]).astype(np.int64)


assert len(POOL_SHARES) == len(POOLS)
