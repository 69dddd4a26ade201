"""The model of normal traffic: session kinds, node archetypes and their daily/weekly profiles.

A *session kind* is one sort of conversation (an HTTPS request to a web server, a DNS query from a
NAT'd home, ...). Each session gives one forward record (client -> server) and, usually, one reverse
record (server -> client), as a unidirectional NetFlow exporter would. An *archetype* (web, dns, ntp,
mail, nat, idle) is a mixture of session kinds plus a daily shape and a weekend factor.

Everything here is a plain table so that flow generation can gather per-session parameters with one
numpy indexing operation per field (see `KindTable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Port ranges (inclusive) used by the specs below.
EPHEMERAL = (49152, 65535, 1.0)  # modern OS client ports (IANA private range)
NAT_PORTS = (1024, 65535, 1.0)  # carrier-grade NAT hands out registered and private ports
ANY_PORT = (1, 65535, 1.0)

# TCP flags as cumulative OR: F=1 S=2 R=4 P=8 A=16.
COMPLETE, LONG, ACK, HALF_S, HALF_SA, RESET, RST_ACK, SYNACK_FIN = 27, 24, 16, 2, 18, 4, 20, 19

# A TCP session's outcome: (weight, client flags, server flags, max packets per direction).
# Half-open (SYN seen, SYN-ACK answered, nothing more) and refused (SYN answered by RST) sessions
# carry one packet each way; that is what makes the flag mix of a service look real.
TCP_OUTCOMES = (
    (0.70, COMPLETE, COMPLETE, 0), (0.08, LONG, LONG, 0), (0.06, ACK, ACK, 0),
    (0.05, 25, 25, 0), (0.05, HALF_S, HALF_SA, 1), (0.03, HALF_S, RST_ACK, 1),
    (0.03, 30, RESET, 0),
)
UDP_OUTCOMES = ((1.0, 0, 0, 0),)


@dataclass(frozen=True)
class Kind:
    """One session kind. Packets per direction are lognormal (median, sigma); bytes per packet are
    uniform in [lo, hi]. `node_is_server`: the node answers (inbound session) or initiates."""

    name: str
    proto: int
    node_is_server: bool
    server_ports: tuple[tuple[int, int, float], ...]
    client_ports: tuple[tuple[int, int, float], ...]
    fwd_pkts: tuple[float, float]
    fwd_bpp: tuple[float, float]
    rev_pkts: tuple[float, float]
    rev_bpp: tuple[float, float]
    reply_prob: float = 1.0
    remote_pool: str = "clients"  # which slice of the remote address pool the peer comes from
    outcomes: tuple[tuple[float, int, int, int], ...] = UDP_OUTCOMES


def _tcp(name: str, node_is_server: bool, server_ports, client_ports, fwd, fwd_bpp, rev, rev_bpp,
         pool: str = "clients") -> Kind:
    return Kind(name, 6, node_is_server, server_ports, client_ports, fwd, fwd_bpp, rev, rev_bpp,
                1.0, pool, TCP_OUTCOMES)


KINDS: tuple[Kind, ...] = (
    # --- the node is a server ---
    _tcp("https_in", True, ((443, 443, 1.0),), (EPHEMERAL, NAT_PORTS), (9, 1.1), (60, 400), (12, 1.6), (700, 1460)),
    _tcp("http_in", True, ((80, 80, 1.0),), (EPHEMERAL, NAT_PORTS), (7, 1.0), (60, 400), (10, 1.6), (600, 1460)),
    Kind("dns_in", 17, True, ((53, 53, 1.0),), (EPHEMERAL, NAT_PORTS), (1, 0.3), (55, 90), (1, 0.3), (90, 480)),
    Kind("ntp_in", 17, True, ((123, 123, 1.0),), ((123, 123, 0.5), EPHEMERAL), (1, 0.2), (76, 76), (1, 0.2), (76, 76)),
    _tcp("smtp_in", True, ((25, 25, 0.6), (587, 587, 0.2), (993, 993, 0.2)), (EPHEMERAL,), (18, 1.4), (120, 1400), (12, 0.8), (60, 200)),
    _tcp("ssh_in", True, ((22, 22, 1.0),), (EPHEMERAL,), (25, 1.5), (60, 300), (25, 1.5), (60, 600)),
    Kind("icmp_in", 1, True, ((2048, 2048, 1.0),), ((0, 0, 1.0),), (2, 0.8), (64, 98), (2, 0.8), (64, 98), 0.9),
    # background radiation: SYN scans to any port; most go unanswered, the rest get a RST
    Kind("scan_in", 6, True, (ANY_PORT,), (EPHEMERAL,), (1, 0.3), (40, 60), (1, 0.1), (40, 40), 0.3,
         "scanners", ((1.0, HALF_S, RST_ACK, 1),)),
    # --- the node is a client ---
    _tcp("web_out", False, ((443, 443, 0.8), (80, 80, 0.2)), (NAT_PORTS,), (10, 1.2), (60, 400), (14, 1.8), (900, 1460), "servers"),
    Kind("quic_out", 17, False, ((443, 443, 1.0),), (NAT_PORTS,), (12, 1.4), (60, 1350), (20, 1.8), (1200, 1350), 1.0, "servers"),
    Kind("p2p_out", 17, False, ((1024, 65535, 1.0),), (NAT_PORTS,), (4, 1.5), (60, 1200), (4, 1.6), (60, 1200), 0.8, "clients"),
    _tcp("p2p_tcp_out", False, ((1024, 65535, 1.0),), (NAT_PORTS,), (6, 1.5), (60, 1400), (8, 1.8), (60, 1460), "clients"),
    Kind("dns_out", 17, False, ((53, 53, 1.0),), (EPHEMERAL,), (1, 0.3), (55, 90), (1, 0.3), (90, 480), 0.97, "servers"),
    Kind("ntp_out", 17, False, ((123, 123, 1.0),), ((123, 123, 1.0),), (1, 0.1), (76, 76), (1, 0.1), (76, 76), 0.95, "servers"),
    _tcp("smtp_out", False, ((25, 25, 1.0),), (EPHEMERAL,), (15, 1.4), (120, 1400), (10, 0.8), (60, 200), "servers"),
)
KIND_INDEX: dict[str, int] = {k.name: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class Archetype:
    """A node role: session mix (kind name -> weight), daily shape and weekend factor.

    Daily activity = floor + (1 - floor) * ((1 + cos(2 pi (hour - peak_hour) / 24)) / 2) ** sharpness.
    `scale` multiplies the node's drawn peak sessions per minute (idle hosts are nearly silent).
    """

    name: str
    mix: dict[str, float]
    peak_hour: float
    floor: float
    sharpness: float
    weekend: float
    scale: float = 1.0


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype("web", {"https_in": 0.60, "http_in": 0.14, "dns_out": 0.08, "web_out": 0.05,
                      "ssh_in": 0.02, "icmp_in": 0.03, "scan_in": 0.08}, 15.0, 0.25, 1.5, 0.85),
    Archetype("dns", {"dns_in": 0.72, "dns_out": 0.20, "icmp_in": 0.03, "scan_in": 0.03,
                      "ssh_in": 0.02}, 20.0, 0.30, 1.2, 1.05),
    Archetype("ntp", {"ntp_in": 0.82, "ntp_out": 0.04, "dns_out": 0.04, "icmp_in": 0.04,
                      "scan_in": 0.06}, 12.0, 0.70, 1.0, 1.0),
    Archetype("mail", {"smtp_in": 0.45, "smtp_out": 0.22, "dns_out": 0.18, "https_in": 0.06,
                       "icmp_in": 0.02, "scan_in": 0.07}, 11.0, 0.15, 2.0, 0.35),
    Archetype("nat", {"web_out": 0.42, "quic_out": 0.14, "p2p_out": 0.18, "p2p_tcp_out": 0.10,
                      "dns_out": 0.12, "ntp_out": 0.01, "scan_in": 0.02, "icmp_in": 0.01},
              21.0, 0.12, 1.8, 1.2, 2.0),
    Archetype("idle", {"scan_in": 0.65, "icmp_in": 0.25, "dns_out": 0.06, "ntp_out": 0.04},
              12.0, 0.9, 1.0, 1.0, 0.05),
)
ARCHETYPE_INDEX: dict[str, int] = {a.name: i for i, a in enumerate(ARCHETYPES)}


def daily_profile(archetype: Archetype, hour: np.ndarray) -> np.ndarray:
    """Activity in (0, 1] at fractional hour-of-day `hour` (any shape, hours UTC + node offset)."""
    bump = ((1.0 + np.cos(2 * np.pi * (hour - archetype.peak_hour) / 24.0)) / 2.0) ** archetype.sharpness
    return archetype.floor + (1.0 - archetype.floor) * bump


def _lognormal_mean(median: float, sigma: float) -> float:
    return median * float(np.exp(sigma * sigma / 2.0))


def mean_in_bytes_per_session(archetype: Archetype) -> float:
    """Expected bytes per session arriving at the node (forward leg of inbound sessions, reverse leg
    of outbound ones) for this archetype's mix; used to size attacks relative to normal traffic."""
    total, wsum = 0.0, 0.0
    for name, w in archetype.mix.items():
        k = KINDS[KIND_INDEX[name]]
        if k.node_is_server:
            b = _lognormal_mean(*k.fwd_pkts) * sum(k.fwd_bpp) / 2
        else:
            b = k.reply_prob * _lognormal_mean(*k.rev_pkts) * sum(k.rev_bpp) / 2
        total += w * b
        wsum += w
    return total / wsum


@dataclass(frozen=True)
class KindTable:
    """The kinds as arrays, for vectorized gathering. Shapes: (K,) or (K, R) with padded ranges."""

    proto: np.ndarray
    node_is_server: np.ndarray
    fwd_mu: np.ndarray
    fwd_sigma: np.ndarray
    rev_mu: np.ndarray
    rev_sigma: np.ndarray
    fwd_bpp: np.ndarray  # (K, 2)
    rev_bpp: np.ndarray  # (K, 2)
    reply_prob: np.ndarray
    pool: np.ndarray  # index into POOLS
    server_ports: "RangeTable"
    client_ports: "RangeTable"
    outcome_cdf: np.ndarray  # (K, O) cumulative weights, rows end at 1
    outcome_flags: np.ndarray  # (K, O, 2) client flags, server flags
    outcome_max_pkts: np.ndarray  # (K, O), 0 = unlimited


POOLS: tuple[str, ...] = ("clients", "servers", "scanners", "reflectors_dns", "reflectors_ntp",
                          "spoofed", "bots")


@dataclass(frozen=True)
class RangeTable:
    """Per-row choice among weighted inclusive ranges: lo/hi/cdf of shape (K, R)."""

    lo: np.ndarray
    hi: np.ndarray
    cdf: np.ndarray

    @staticmethod
    def build(rows: list[tuple[tuple[int, int, float], ...]]) -> "RangeTable":
        r = max(len(x) for x in rows)
        lo = np.zeros((len(rows), r), np.int32)
        hi = np.zeros((len(rows), r), np.int32)
        cdf = np.ones((len(rows), r))
        for i, ranges in enumerate(rows):
            w = np.array([x[2] for x in ranges], float)
            c = np.cumsum(w / w.sum())
            for j, (a, b, _) in enumerate(ranges):
                lo[i, j], hi[i, j], cdf[i, j] = a, b, c[j]
            cdf[i, len(ranges) - 1:] = 1.0
            lo[i, len(ranges):], hi[i, len(ranges):] = lo[i, len(ranges) - 1], hi[i, len(ranges) - 1]
        return RangeTable(lo, hi, cdf)

    def sample(self, rng: np.random.Generator, row: np.ndarray) -> np.ndarray:
        """One value per element of `row` (int array of row indices) -> int64 array, same shape."""
        j = choose(rng, self.cdf, row)
        lo, hi = self.lo[row, j], self.hi[row, j]
        return lo + (rng.random(row.shape[0]) * (hi - lo + 1)).astype(np.int32)


def choose(rng: np.random.Generator, cdf: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Categorical draw per element: column index j of cdf[row] (cdf rows non-decreasing, ending 1).

    Vectorized by offsetting each row's cdf by its row number so a single searchsorted serves all.
    """
    n_rows, n_cols = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    u = row + rng.random(row.shape[0]) * (1 - 1e-12)
    j = np.searchsorted(flat, u, side="right") - row * n_cols
    return np.minimum(j, n_cols - 1)


def build_kind_table() -> KindTable:
    """The KINDS tuple as a KindTable."""
    n_out = max(len(k.outcomes) for k in KINDS)
    ocdf = np.ones((len(KINDS), n_out))
    oflags = np.zeros((len(KINDS), n_out, 2), np.uint8)
    omax = np.zeros((len(KINDS), n_out), np.int64)
    for i, k in enumerate(KINDS):
        w = np.array([o[0] for o in k.outcomes])
        ocdf[i, :len(w)] = np.cumsum(w / w.sum())
        ocdf[i, len(w) - 1:] = 1.0
        for j, o in enumerate(k.outcomes):
            oflags[i, j] = (o[1], o[2])
            omax[i, j] = o[3]
    arr = lambda f: np.array([f(k) for k in KINDS])  # noqa: E731
    return KindTable(
        proto=arr(lambda k: k.proto).astype(np.uint8), node_is_server=arr(lambda k: k.node_is_server),
        fwd_mu=np.log(arr(lambda k: k.fwd_pkts[0])), fwd_sigma=arr(lambda k: k.fwd_pkts[1]),
        rev_mu=np.log(arr(lambda k: k.rev_pkts[0])), rev_sigma=arr(lambda k: k.rev_pkts[1]),
        fwd_bpp=arr(lambda k: k.fwd_bpp).astype(float), rev_bpp=arr(lambda k: k.rev_bpp).astype(float),
        reply_prob=arr(lambda k: k.reply_prob), pool=arr(lambda k: POOLS.index(k.remote_pool)),
        server_ports=RangeTable.build([k.server_ports for k in KINDS]),
        client_ports=RangeTable.build([k.client_ports for k in KINDS]),
        outcome_cdf=ocdf, outcome_flags=oflags, outcome_max_pkts=omax)


def archetype_mix_cdf() -> np.ndarray:
    """(A, K) cumulative session-kind weights of each archetype."""
    m = np.zeros((len(ARCHETYPES), len(KINDS)))
    for a, arch in enumerate(ARCHETYPES):
        for name, w in arch.mix.items():
            m[a, KIND_INDEX[name]] = w
    return np.cumsum(m / m.sum(1, keepdims=True), axis=1)
