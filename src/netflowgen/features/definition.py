"""The 86 traffic features (SPEC 3) as ONE declarative table, derived from `netflowgen.schema`.

Every flow is first reduced, per direction, to four small integer *class codes*:

- `dir`:   0 = in (the node is the destination), 1 = out (the node is the source);
- `proto`: index into `PROTOCOL_CLASSES` (icmp, tcp, udp, other);
- `port`:  index into `PORT_CLASSES`, first match in order, so `portwk` (1..1023) never takes 53, 80,
           123 or 443; the port is the destination port for `in`, the source port for `out`, and
           protocols outside `PORT_BEARING_PROTOCOLS` always fall in `port0`;
- `flag`:  index into `TCP_FLAG_VALUES` for TCP flows whose cumulative flags equal one of the eight
           values, `FLAG_UNLISTED` for other TCP flag values, `FLAG_NOT_TCP` for non-TCP flows.

A feature is then (direction, measure, one optional condition on proto/port/flag). The engines
(`polars_engine`, `spark_engine`) compile `FEATURES` into their own expressions, so the rules live
here once and both engines agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from netflowgen.schema import (
    DIRECTIONS,
    FEATURE_NAMES,
    MEASURES,
    PORT_BEARING_PROTOCOLS,
    PORT_CLASSES,
    PROTOCOL_CLASSES,
    TCP_FLAG_VALUES,
)

DIR_IN, DIR_OUT = DIRECTIONS.index("in"), DIRECTIONS.index("out")
PROTO_CODES: dict[str, int] = {name: i for i, name in enumerate(PROTOCOL_CLASSES)}
PORT_CODES: dict[str, int] = {name: i for i, (name, _, _) in enumerate(PORT_CLASSES)}
PORT0_CODE: int = PORT_CODES["port0"]
FLAG_CODES: dict[int, int] = {value: i for i, value in enumerate(TCP_FLAG_VALUES)}
FLAG_UNLISTED: int = len(TCP_FLAG_VALUES)  # a TCP flow whose flags are none of the eight values
FLAG_NOT_TCP: int = len(TCP_FLAG_VALUES) + 1
_TCP_NUMBERS = PROTOCOL_CLASSES["tcp"]
assert _TCP_NUMBERS is not None
TCP: int = _TCP_NUMBERS[0]

# Each measure is the estimated (sampling-scaled) total of one per-flow value.
MEASURE_VALUE: dict[str, str] = {"pkt": "est_pkt", "byt": "est_byt", "flow": "est_flow"}


@dataclass(frozen=True)
class Feature:
    """One output column: the sum of `measure` over the flows of `direction` that satisfy the
    (at most one) condition. `code_column` is one of "proto", "port", "flag" or None (all traffic)."""

    name: str
    direction: int  # DIR_IN or DIR_OUT
    measure: str  # "pkt" | "byt" | "flow"
    code_column: str | None = None
    code: int | None = None

    @property
    def value_column(self) -> str:
        return MEASURE_VALUE[self.measure]


def _build() -> tuple[Feature, ...]:
    feats: list[Feature] = []
    for d, dname in enumerate(DIRECTIONS):
        feats += [Feature(f"{dname}_all_{m}", d, m) for m in MEASURES]
    for d, dname in enumerate(DIRECTIONS):
        for p, code in PROTO_CODES.items():
            feats += [Feature(f"{dname}_{p}_{m}", d, m, "proto", code) for m in MEASURES]
    for d, dname in enumerate(DIRECTIONS):
        for c, code in PORT_CODES.items():
            feats += [Feature(f"{dname}_{c}_{m}", d, m, "port", code) for m in MEASURES]
    feats += [Feature(f"out_flag{f}_flow", DIR_OUT, "flow", "flag", FLAG_CODES[f])
              for f in TCP_FLAG_VALUES]
    return tuple(feats)


FEATURES: tuple[Feature, ...] = _build()
# The schema's ordered list is the contract; the definition must produce exactly it.
assert tuple(f.name for f in FEATURES) == FEATURE_NAMES, "feature definition drifted from schema"


def protocol_rules() -> tuple[list[tuple[tuple[int, ...], int]], int]:
    """(list of (IANA numbers, proto code), code for everything else) from PROTOCOL_CLASSES."""
    rules = [(tuple(nums), PROTO_CODES[name]) for name, nums in PROTOCOL_CLASSES.items()
             if nums is not None]
    default = [PROTO_CODES[name] for name, nums in PROTOCOL_CLASSES.items() if nums is None]
    if len(default) != 1:
        raise AssertionError("PROTOCOL_CLASSES needs exactly one catch-all class (None)")
    return rules, default[0]


def port_rules() -> list[tuple[int, int, int]]:
    """(lowest, highest, port code) in PORT_CLASSES order; the first match wins."""
    return [(lo, hi, PORT_CODES[name]) for name, lo, hi in PORT_CLASSES]


__all__ = ["FEATURES", "Feature", "DIR_IN", "DIR_OUT", "PORT_BEARING_PROTOCOLS", "FLAG_CODES",
           "FLAG_UNLISTED", "FLAG_NOT_TCP", "PORT0_CODE", "TCP", "protocol_rules", "port_rules"]
