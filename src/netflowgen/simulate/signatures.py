"""What attacks and bulk benign surges look like on the wire: one `Signature` per event type.

A volumetric event sends a *bulk leg* into the node (the attack traffic, or the download/upload of a
backup, update or speed test) and, for some types, an *answer leg* out of the node (SYN-ACKs of a
SYN-flood victim, the ACK stream of a bulk TCP transfer, the upload of a speed test). The signature
lives in protocol, ports, packet sizes and flags, not only in volume, so a model of per-feature
behaviour can tell a DNS amplification from a backup even when their byte counts match.
Flash crowds are not here: they scale the node's own session mix (netflowgen.simulate.traffic).
"""

from __future__ import annotations

from dataclasses import dataclass

ANY = ((1, 65535, 1.0),)
HIGH = ((1024, 65535, 1.0),)


@dataclass(frozen=True)
class Signature:
    """Bulk leg: remote -> node, `proto`, ports drawn from the ranges, bytes per packet uniform in
    `bpp`; flags of TCP legs drawn from (value, weight) lists. `sources`: log-uniform range of the
    number of distinct remote peers (reflectors, bots, spoofed addresses, transfer streams)."""

    name: str
    proto: int
    remote_pool: str
    remote_ports: tuple[tuple[int, int, float], ...]
    node_ports: tuple[tuple[int, int, float], ...]
    bpp: tuple[float, float]
    sources: tuple[float, float]
    in_flags: tuple[tuple[int, float], ...] = ((0, 1.0),)
    answer_prob: float = 0.0  # share of bulk records answered by the node
    answer_ratio: float = 0.0  # answer packets per bulk packet
    answer_bpp: tuple[float, float] = (40.0, 60.0)
    answer_flags: tuple[tuple[int, float], ...] = ((0, 1.0),)


SIGNATURES: dict[str, Signature] = {s.name: s for s in (
    # Reflected DNS answers (large, EDNS0 ANY/TXT) from source port 53 to whatever port the spoofed
    # query carried; 15 % are IP fragments past the first, which carry no ports at all.
    Signature("dns_amp", 17, "reflectors_dns", ((53, 53, 0.85), (0, 0, 0.15)), ANY, (1100, 1500),
              (30, 3000)),
    # NTP monlist answers: 468/482-byte packets from source port 123.
    Signature("ntp_amp", 17, "reflectors_ntp", ((123, 123, 1.0),), ANY, (440, 490), (30, 2000)),
    # Botnet UDP flood: random ports both sides, any packet size.
    Signature("udp_flood", 17, "bots", ANY, ANY, (60, 1400), (10, 1000)),
    # SYN flood from spoofed sources to a service port; the victim answers part of it with SYN-ACK
    # (or RST once its backlog is full) - visible in its outgoing flag mix.
    Signature("syn_flood", 6, "spoofed", HIGH, ((80, 80, 0.4), (443, 443, 0.4), (22, 22, 0.2)),
              (40, 60), (200, 5000), ((2, 1.0),), 0.6, 0.8, (40, 60), ((18, 0.8), (20, 0.2))),
    # --- benign bulk surges ---
    # Backup: a few large TCP streams into the node's ssh/rsync port, acknowledged by the node.
    Signature("backup", 6, "clients", HIGH, ((22, 22, 0.5), (873, 873, 0.5)), (1300, 1500), (1, 4),
              ((24, 0.5), (27, 0.5)), 1.0, 0.5, (52, 66), ((24, 0.4), (16, 0.3), (27, 0.3))),
    # Software update: downloads from remote HTTPS servers to the node's NAT ports.
    Signature("update", 6, "servers", ((443, 443, 1.0),), ((1024, 65535, 1.0),), (1300, 1460), (2, 20),
              ((27, 0.7), (24, 0.3)), 1.0, 0.5, (52, 66), ((27, 0.7), (24, 0.2), (16, 0.1))),
    # Speed test: big TCP both ways against port 8080 of a test server.
    Signature("speedtest", 6, "servers", ((8080, 8080, 1.0),), ((1024, 65535, 1.0),), (1300, 1460),
              (4, 16), ((27, 0.8), (24, 0.2)), 1.0, 0.9, (1300, 1460), ((27, 0.8), (24, 0.2))),
)}
# A carpet-bombing campaign hits every node of a customer at once, each record being either a
# DNS-amplification or a UDP-flood record (a multi-vector attack spread over the prefix).
CARPET_VECTORS: tuple[str, ...] = ("dns_amp", "udp_flood")

ATTACK_TYPES: tuple[str, ...] = ("dns_amp", "ntp_amp", "udp_flood", "syn_flood", "carpet_bomb")
SURGE_TYPES: tuple[str, ...] = ("flash_crowd", "backup", "update", "speedtest")
# Benign surge types by archetype (weights): each keeps the service's normal look.
SURGES_BY_ARCHETYPE: dict[str, dict[str, float]] = {
    "web": {"flash_crowd": 0.5, "backup": 0.25, "update": 0.25},
    "dns": {"flash_crowd": 0.6, "backup": 0.4},
    "ntp": {"flash_crowd": 0.5, "backup": 0.5},
    "mail": {"flash_crowd": 0.4, "backup": 0.6},
    "nat": {"speedtest": 0.4, "update": 0.4, "flash_crowd": 0.2},
    "idle": {"update": 0.5, "backup": 0.5},
}
