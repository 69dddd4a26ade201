"""Customer table parsing and longest-prefix matching (SPEC 2)."""

from __future__ import annotations

import ipaddress
import random

import polars as pl
import pytest

from netflowgen.nodes import BAD_IP_REASON, CustomerTable, default_nodes, node_table, parse_ips
from netflowgen.rejects import InputError, RejectCounter


def table(tmp_path, text: str) -> CustomerTable:
    p = tmp_path / "customers.csv"
    p.write_text(text)
    return CustomerTable.from_csv(p)


def assign(t: CustomerTable, ips: list[str], rejects=None) -> dict[str, str]:
    df = t.assign(pl.Series(ips), rejects)
    return dict(zip(df["node"], df["customer"]))


def test_longest_prefix_v4_and_v6(tmp_path):
    t = table(tmp_path, "customer_id,prefix,comment\nwide,10.0.0.0/8,x\nmid,10.1.0.0/16,\n"
                        "host,10.1.2.3/32,\nv6wide,2001:db8::/32,\nv6narrow,2001:db8:1::/48,\n"
                        "\nall6,::/0,\n")
    got = assign(t, ["10.9.9.9", "10.1.0.1", "10.1.2.3", "10.1.2.4", "11.0.0.1",
                     "2001:db8::1", "2001:db8:1::5", "2001:db8:2::", "fe80::1"])
    assert got == {"10.9.9.9": "wide", "10.1.0.1": "mid", "10.1.2.3": "host", "10.1.2.4": "mid",
                   "2001:db8::1": "v6wide", "2001:db8:1::5": "v6narrow",
                   "2001:db8:2::": "v6wide", "fe80::1": "all6"}  # 11.0.0.1: no v4 prefix


def test_matches_ipaddress_reference_on_random_prefixes(tmp_path):
    """Property: the vectorized match equals a brute-force longest match with `ipaddress`."""
    rnd = random.Random(7)
    rows, nets = [], []
    for i in range(60):
        length = rnd.choice([8, 12, 16, 20, 24, 28, 32])
        net = ipaddress.ip_network(f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
                                   f"/{length}", strict=False)
        if any(n == net for n, _ in nets):
            continue
        nets.append((net, f"c{i}"))
        rows.append(f"c{i},{net}")
    t = table(tmp_path, "customer_id,prefix\n" + "\n".join(rows) + "\n")
    ips = [f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}" for _ in range(3000)]
    got = assign(t, ips)
    for ip in set(ips):
        inside = [(n.prefixlen, c) for n, c in nets if ipaddress.ip_address(ip) in n]
        assert got.get(ip) == (max(inside)[1] if inside else None), ip


def test_invalid_ips_are_counted_not_nodes(tmp_path):
    t = table(tmp_path, "customer_id,prefix\nall,0.0.0.0/0\n")
    r = RejectCounter()
    assert assign(t, ["1.2.3.4", "300.1.1.1", "bogus", "1.2.3"], r) == {"1.2.3.4": "all"}
    assert r.counts[BAD_IP_REASON] == 3


@pytest.mark.parametrize("text, message", [
    ("customer,prefix\na,10.0.0.0/8\n", r"customers.csv:1: .*lacks column\(s\) \['customer_id'\]"),
    ("customer_id,prefix\na,10.0.0.0/8\nb,10.0.0.300/24\n", r"customers.csv:3: prefix '10.0.0.300/24'"),
    ("customer_id,prefix\na,10.0.0.1/24\n", r"customers.csv:2: .*has host bits set"),
    ("customer_id,prefix\na,2001:db8::/129\n", r"customers.csv:2: prefix '2001:db8::/129'"),
    ("customer_id,prefix\n,10.0.0.0/8\n", r"customers.csv:2: customer_id is empty"),
    ("customer_id,prefix\na,10.0.0.0/8\nb,10.0.0.0/8\n", r"customers.csv:3: .*already belongs to customer 'a' \(line 2\)"),
    ("customer_id,prefix\n", r"customers.csv: customer table has no prefixes"),
])
def test_bad_customer_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        table(tmp_path, text)


def test_missing_customer_file(tmp_path):
    with pytest.raises(InputError, match="nope.csv: cannot read customer table"):
        CustomerTable.from_csv(tmp_path / "nope.csv")


def test_default_rule_and_node_table_order():
    counts = pl.DataFrame({"dst_ip": ["10.0.0.10", "10.0.0.9", "2001:db8::1", "10.0.0.2"],
                           "n": [5, 10, 12, 9]})
    nodes = node_table(default_nodes(counts, min_flows=10))
    assert nodes.to_dicts() == [  # text order, row numbers as node_idx
        {"node": "10.0.0.9", "customer": "default", "node_idx": 0},
        {"node": "2001:db8::1", "customer": "default", "node_idx": 1}]


def test_parse_ips_halves():
    df = parse_ips(pl.Series(["1.2.3.4", "::1", "2001:db8::ff"])).sort("ip")
    v = {r["ip"]: (r["family"], r["hi"], r["lo"]) for r in df.iter_rows(named=True)}
    assert v["1.2.3.4"] == (4, 0, 0x01020304)
    assert v["::1"] == (6, 0, 1)
    assert v["2001:db8::ff"] == (6, 0x20010DB800000000, 0xFF)


def test_text_prefixes_cover_every_address_inside(tmp_path):
    """Every canonical text of an address inside a prefix starts with one of the survey's text
    prefixes, and a text outside all of them is no node (so skipping it loses nothing)."""
    t = table(tmp_path, "customer_id,prefix\na,10.1.0.0/16\nb,192.168.4.0/22\nc,6.0.0.0/7\n")
    prefixes = t.text_prefixes()
    assert prefixes == ["6.", "7.", "10.", "192."]
    rnd = random.Random(3)
    ips = [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(20_000)]
    ips += ["10.1.200.7", "192.168.7.255", "7.255.255.255", "6.0.0.0", "100.1.2.3", "19.1.1.1"]
    nodes = assign(t, ips)
    assert nodes and all(any(ip.startswith(p) for p in prefixes) for ip in nodes)
    skipped = [ip for ip in ips if not any(ip.startswith(p) for p in prefixes)]
    assert assign(t, skipped) == {}
    # No short list: an IPv6 prefix, or too many first octets.
    assert table(tmp_path, "customer_id,prefix\na,10.0.0.0/8\nb,2001:db8::/32\n").text_prefixes() is None
    assert table(tmp_path, "customer_id,prefix\na,0.0.0.0/0\n").text_prefixes() is None
