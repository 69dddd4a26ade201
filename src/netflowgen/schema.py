"""The two contracts every stage shares: the canonical flow record (SPEC 1) and the ordered list of
the 86 node-minute traffic features (SPEC 3).

Tools outside the project read these names; change them only with a version bump. The feature list
is built here and nowhere else; `FEATURE_SET_HASH` identifies it inside every artifact.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

# --- SPEC 1: canonical flow record -------------------------------------------------------------
TIMESTAMP = pa.timestamp("ms", tz="UTC")

FLOW_SCHEMA = pa.schema(
    [
        pa.field("ts_start", TIMESTAMP, nullable=False),
        pa.field("ts_end", TIMESTAMP, nullable=False),
        pa.field("src_ip", pa.string(), nullable=False),
        pa.field("dst_ip", pa.string(), nullable=False),
        pa.field("src_port", pa.uint16(), nullable=False),
        pa.field("dst_port", pa.uint16(), nullable=False),
        pa.field("proto", pa.uint8(), nullable=False),  # IANA protocol number
        pa.field("tcp_flags", pa.uint8(), nullable=False),  # cumulative OR of TCP flags
        pa.field("packets", pa.int64(), nullable=False),  # as recorded (sampled)
        pa.field("bytes", pa.int64(), nullable=False),  # as recorded (sampled)
        pa.field("sampling_rate", pa.uint32(), nullable=False),  # 1 = unsampled; resolved, never null
        pa.field("exporter", pa.string(), nullable=True),
        pa.field("in_if", pa.uint32(), nullable=True),
        pa.field("out_if", pa.uint32(), nullable=True),
    ]
)
FLOW_COLUMNS: tuple[str, ...] = tuple(FLOW_SCHEMA.names)

# --- SPEC 3: the 86 features, in contract order -------------------------------------------------
DIRECTIONS: tuple[str, ...] = ("in", "out")  # in: node is destination; out: node is source
MEASURES: tuple[str, ...] = ("pkt", "byt", "flow")
PROTOCOL_CLASSES: dict[str, tuple[int, ...] | None] = {
    "icmp": (1, 58),
    "tcp": (6,),
    "udp": (17,),
    "other": None,  # everything else
}
# Port classes: (name, lowest port, highest port); ranges are inclusive. Port-less protocols
# (anything but TCP/UDP/SCTP/UDP-Lite) count in port0 whatever their port fields hold (ICMP
# type/code sits in the destination port of many exporters).
PORT_CLASSES: tuple[tuple[str, int, int], ...] = (
    ("port0", 0, 0),
    ("port53", 53, 53),
    ("port80", 80, 80),
    ("port123", 123, 123),
    ("port443", 443, 443),
    ("portwk", 1, 1023),  # well-known ports other than 53, 80, 123, 443
    ("portreg", 1024, 49151),
    ("portpriv", 49152, 65535),
)
PORT_BEARING_PROTOCOLS: tuple[int, ...] = (6, 17, 132, 136)
TCP_FLAG_VALUES: tuple[int, ...] = (0, 16, 24, 2, 17, 18, 4, 25)  # out_flag{f}_flow, TCP only


def _build_feature_names() -> tuple[str, ...]:
    names: list[str] = []
    for d in DIRECTIONS:
        names += [f"{d}_all_{m}" for m in MEASURES]
    for d in DIRECTIONS:
        for p in PROTOCOL_CLASSES:
            names += [f"{d}_{p}_{m}" for m in MEASURES]
    for d in DIRECTIONS:
        for c, _, _ in PORT_CLASSES:
            names += [f"{d}_{c}_{m}" for m in MEASURES]
    names += [f"out_flag{f}_flow" for f in TCP_FLAG_VALUES]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _build_feature_names()
N_FEATURES: int = len(FEATURE_NAMES)
assert N_FEATURES == 86, N_FEATURES
LIGHT_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES[:6]  # paper section 7.2: volume only

FEATURE_SET_HASH: str = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:16]

# --- SPEC 3: the node-minute table --------------------------------------------------------------
NODE_MINUTE_KEY_COLUMNS: tuple[str, ...] = ("node", "customer", "minute", "missing")
NODE_MINUTE_SCHEMA = pa.schema(
    [
        # large_string: Polars' string type, so that its Parquet sink writes this schema exactly.
        pa.field("node", pa.large_string(), nullable=False),
        pa.field("customer", pa.large_string(), nullable=False),
        pa.field("minute", TIMESTAMP, nullable=False),
        pa.field("missing", pa.bool_(), nullable=False),
    ]
    + [pa.field(name, pa.float64(), nullable=False) for name in FEATURE_NAMES],
    metadata={b"netflowgen.feature_set_hash": FEATURE_SET_HASH.encode()},
)


# The train / validation fractions of the time range (SPEC 5); the rest is test. Defined here only:
# every later stage reads them from its input (the model's config.json, the detector's detector.json).
DEFAULT_SPLIT: tuple[float, float] = (0.72, 0.08)


def time_splits(n_minutes: int, train: float = DEFAULT_SPLIT[0], val: float = DEFAULT_SPLIT[1]
                ) -> dict[str, tuple[int, int]]:
    """Contiguous train / val / test minute ranges (SPEC 5; paper 95,232 / 10,752 / 26,496 minutes).

    Returns
    -------
    dict[str, tuple[int, int]]
        split name -> (first minute index, one past the last), covering 0..n_minutes.
    """
    if not (0 < train < 1 and 0 <= val < 1 and train + val <= 1):
        raise ValueError(f"bad split fractions train={train} val={val}")
    a = int(round(n_minutes * train))
    b = int(round(n_minutes * (train + val)))
    return {"train": (0, a), "val": (a, b), "test": (b, n_minutes)}

MS_PER_MINUTE: int = 60_000  # node-minute tables are keyed by UTC minute starts in epoch milliseconds
