"""Which IP addresses are nodes, and the customer of each (SPEC 2).

Two rules:

- a customer table (`customers.csv` with columns `customer_id,prefix`, IPv4 and IPv6 CIDRs): an IP
  is a node when some prefix contains it, and its customer is that of the *longest* such prefix;
- without a table, every destination IP with at least `min_flows` flow records is a node of
  customer "default".

Matching works on the *distinct* IPs of the input only (thousands to a few million, not one per
flow), vectorized per prefix length: mask all addresses to length L, hash-join against the prefixes
of length L, longest L first. The resulting node table is joined to the flows by the engines.
"""

from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from netflowgen.rejects import InputError, RejectCounter

DEFAULT_CUSTOMER = "default"
REQUIRED_COLUMNS = ("customer_id", "prefix")
BAD_IP_REASON = "invalid IP address text (counted once per distinct text; cannot be a node)"
_U64 = (1 << 64) - 1

# A node table: one row per node, sorted by `node` (text order), `node_idx` = row number.
NODE_TABLE_SCHEMA = {"node": pl.String, "customer": pl.String, "node_idx": pl.Int32}


@dataclass(frozen=True)
class Prefix:
    """One customer prefix: address family (4 or 6), prefix length, masked network as (hi, lo)
    64-bit halves (IPv4 lives in `lo`), the customer, and the CSV line it came from."""

    family: int
    length: int
    hi: int
    lo: int
    customer: str
    line: int


class CustomerTable:
    """Longest-prefix match of IPs to customers (SPEC 2)."""

    def __init__(self, prefixes: list[Prefix], source: str = "<memory>") -> None:
        self.prefixes = prefixes
        self.source = source

    @classmethod
    def from_csv(cls, path: Path | str) -> "CustomerTable":
        """Read `customer_id,prefix` (header required, other columns ignored). Raises InputError
        naming the file and line for a missing column, an invalid or host-bit CIDR, an empty
        customer id, or one prefix given to two customers."""
        p = Path(path)
        try:
            fh = p.open(newline="", encoding="utf-8")
        except OSError as e:
            raise InputError(f"{p}: cannot read customer table: {e.strerror}") from e
        try:
            with fh:
                return cls._read(csv.DictReader(fh), p)
        except UnicodeDecodeError as e:
            raise InputError(f"{p}: not UTF-8 text (byte {e.start} of a read block); save the customer "
                             "table as UTF-8") from None

    @classmethod
    def _read(cls, reader: "csv.DictReader[str]", p: Path) -> "CustomerTable":
        """The prefixes of an open customer table (see `from_csv`)."""
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{p}:1: customer table lacks column(s) {missing}; "
                             f"header is {header}, expected {list(REQUIRED_COLUMNS)}")
        reader.fieldnames = header
        prefixes: list[Prefix] = []
        seen: dict[tuple[int, int, int, int], Prefix] = {}
        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values()):
                continue  # blank line
            cust = (row.get("customer_id") or "").strip()
            text = (row.get("prefix") or "").strip()
            if not cust:
                raise InputError(f"{p}:{line}: customer_id is empty")
            pref = parse_prefix(text, cust, line, where=f"{p}:{line}")
            key = (pref.family, pref.length, pref.hi, pref.lo)
            if key in seen and seen[key].customer != cust:
                raise InputError(f"{p}:{line}: prefix {text} already belongs to customer "
                                 f"{seen[key].customer!r} (line {seen[key].line})")
            seen[key] = pref
            prefixes.append(pref)
        if not prefixes:
            raise InputError(f"{p}: customer table has no prefixes")
        return cls(prefixes, str(p))

    def text_prefixes(self, max_prefixes: int = 4) -> list[str] | None:
        """Short texts that the canonical text of every address inside a customer prefix starts
        with: the first octet and its dot ("10.") of each IPv4 prefix. A survey can skip the IP
        texts that start with none of them without parsing them (with one prefix list of 10/8 and
        20 M flows: 1.1 s instead of 3.8 s, measured). None when there is no short list: an IPv6
        prefix, or more than `max_prefixes` first octets (each costs a pass of `starts_with`).

        Only canonical texts ("10.1.2.3", as `netflowgen ingest` writes them) are matched: a
        zero-padded "010.1.2.3" in hand-made Parquet is skipped, not parsed."""
        octets: set[int] = set()
        for p in self.prefixes:
            if p.family != 4:
                return None
            first = p.lo >> 24
            octets.update(range(first, first + (1 << max(0, 8 - p.length))))
            if len(octets) > max_prefixes:
                return None
        return [f"{o}." for o in sorted(octets)]

    def assign(self, ips: pl.Series, rejects: RejectCounter | None = None) -> pl.DataFrame:
        """Nodes among distinct IP texts `ips`: DataFrame (node, customer) of those inside some
        prefix, customer of the longest one. Unparsable IP texts are counted in `rejects`."""
        addr = parse_ips(ips.unique(), rejects)
        plen = pl.DataFrame(
            {"family": [x.family for x in self.prefixes], "length": [x.length for x in self.prefixes],
             "hi": [x.hi for x in self.prefixes], "lo": [x.lo for x in self.prefixes],
             "customer": [x.customer for x in self.prefixes]},
            schema={"family": pl.Int8, "length": pl.Int16, "hi": pl.UInt64, "lo": pl.UInt64,
                    "customer": pl.String}).unique(["family", "length", "hi", "lo"])
        found: list[pl.DataFrame] = []
        todo = addr
        # Longest prefixes first: an address matched at length L is never looked at again.
        for family, length in sorted({(x.family, x.length) for x in self.prefixes},
                                     key=lambda fl: -fl[1]):
            if todo.height == 0:
                break
            hi_mask, lo_mask = _masks(family, length)
            cand = todo.filter(pl.col("family") == family).with_columns(
                mhi=pl.col("hi") & pl.lit(hi_mask, pl.UInt64),
                mlo=pl.col("lo") & pl.lit(lo_mask, pl.UInt64))
            table = plen.filter((pl.col("family") == family) & (pl.col("length") == length))
            hit = cand.join(table.select(mhi="hi", mlo="lo", customer="customer"),
                            on=["mhi", "mlo"], how="inner")
            if hit.height:
                found.append(hit.select(node="ip", customer="customer"))
                todo = todo.join(hit.select("ip"), on="ip", how="anti")
        if not found:
            return pl.DataFrame(schema={"node": pl.String, "customer": pl.String})
        return pl.concat(found)


def parse_prefix(text: str, customer: str, line: int, where: str) -> Prefix:
    """One CIDR text -> Prefix; InputError naming `where` when invalid or when host bits are set
    (e.g. 10.0.0.1/24: probably a typo for 10.0.0.0/24, so it is refused rather than guessed)."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise InputError(f"{where}: prefix {text!r} is not a valid CIDR: {e}") from e
    n = int(net.network_address)
    return Prefix(net.version, net.prefixlen, n >> 64, n & _U64, customer, line)


def parse_ips(ips: pl.Series, rejects: RejectCounter | None = None) -> pl.DataFrame:
    """IP texts -> DataFrame (ip, family, hi, lo) with the address as two 64-bit halves.

    IPv4 (the bulk) is parsed vectorized; IPv6 with `ipaddress` (it has `::` shorthand). Texts that
    are neither are left out and counted in `rejects`, once per distinct text.
    """
    ips = ips.cast(pl.String).rename("ip")
    df = pl.DataFrame({"ip": ips}).filter(pl.col("ip").is_not_null())
    v4text = df.filter(pl.col("ip").str.contains(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$"))  # ASCII digits
    octets = v4text.with_columns(
        pl.col("ip").str.split_exact(".", 3).struct.rename_fields(["a", "b", "c", "d"])
        .alias("o")).unnest("o").with_columns(pl.col(c).cast(pl.UInt64) for c in "abcd")
    v4 = octets.filter(pl.max_horizontal("a", "b", "c", "d") <= 255).select(
        "ip", family=pl.lit(4, pl.Int8), hi=pl.lit(0, pl.UInt64),
        lo=pl.col("a") * (1 << 24) + pl.col("b") * (1 << 16) + pl.col("c") * 256 + pl.col("d"))
    rest = df.join(v4.select("ip"), on="ip", how="anti")["ip"].to_list()
    v6_ip, v6_hi, v6_lo, bad = [], [], [], []
    for text in rest:
        try:
            if not text.isascii():
                raise ValueError(text)
            a = ipaddress.IPv6Address(text)
        except ValueError:
            bad.append(text)
            continue
        n = int(a)
        v6_ip.append(text)
        v6_hi.append(n >> 64)
        v6_lo.append(n & _U64)
    if bad and rejects is not None:
        for text in bad:
            rejects.reject(BAD_IP_REASON, f"ip={text!r}")
    v6 = pl.DataFrame({"ip": v6_ip, "family": [6] * len(v6_ip), "hi": v6_hi, "lo": v6_lo},
                      schema={"ip": pl.String, "family": pl.Int8, "hi": pl.UInt64, "lo": pl.UInt64})
    return pl.concat([v4, v6])


def _masks(family: int, length: int) -> tuple[int, int]:
    """(hi, lo) 64-bit masks keeping the first `length` bits of an address of `family`."""
    if family == 4:
        return 0, ((1 << 32) - 1) ^ ((1 << (32 - length)) - 1)
    full = ((1 << 128) - 1) ^ ((1 << (128 - length)) - 1)
    return full >> 64, full & _U64


def default_nodes(dst_counts: pl.DataFrame, min_flows: int) -> pl.DataFrame:
    """SPEC 2 default rule. `dst_counts`: (dst_ip, n) flow records per destination IP ->
    DataFrame (node, customer) of those with n >= min_flows, customer "default"."""
    return dst_counts.filter(pl.col("n") >= min_flows).select(
        node=pl.col("dst_ip").cast(pl.String), customer=pl.lit(DEFAULT_CUSTOMER))


def node_table(nodes: pl.DataFrame) -> pl.DataFrame:
    """(node, customer) -> the node table: sorted by node text, with `node_idx` 0..n-1 (Int32)."""
    return nodes.unique("node").sort("node").with_row_index("node_idx").select(
        pl.col("node"), pl.col("customer"), pl.col("node_idx").cast(pl.Int32))
