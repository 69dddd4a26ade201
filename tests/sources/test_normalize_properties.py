"""Property checks of the shared normalization on many generated values (seeded, no extra deps)."""

from __future__ import annotations

import ipaddress
import random

import polars as pl

from netflowgen.rejects import RejectCounter
from netflowgen.sources.normalize import FLAG_LETTERS, TimeLayout, normalize

N = 2000


def frame(n: int, **cols: list[str]) -> pl.DataFrame:
    base = {"ts_start": ["1700000000"] * n, "src_ip": ["10.0.0.1"] * n, "dst_ip": ["10.0.0.2"] * n,
            "proto": ["6"] * n, "packets": ["1"] * n, "bytes": ["40"] * n}
    base.update(cols)
    return pl.DataFrame({**{k: pl.Series(k, v, pl.String) for k, v in base.items()},
                         "_line": pl.Series("_line", range(1, n + 1), pl.Int64)})


def run(df: pl.DataFrame, layout: TimeLayout = TimeLayout()) -> tuple[dict, RejectCounter]:
    rj = RejectCounter()
    return normalize(df, "gen", layout, rj, default_rate=1).to_pydict(), rj


def letters(value: int) -> str:
    return "".join(ch if value & (0x80 >> i) else "." for i, ch in enumerate(FLAG_LETTERS))


def test_every_flag_value_in_letters_numbers_and_hex() -> None:
    values = list(range(256))
    for text in ([letters(v) for v in values], [str(v) for v in values], [hex(v) for v in values]):
        out, rj = run(frame(256, tcp_flags=text))
        assert out["tcp_flags"] == values and rj.rejected == 0


def test_epoch_seconds_are_exact_to_the_millisecond() -> None:
    rng = random.Random(7)
    # every millisecond of the plausible window (1990 .. now; times outside it are rejected, counted)
    ms = [rng.randrange(631_152_000_000, 1_760_000_000_000) for _ in range(N)]
    # extra sub-ms digits are truncated, as nfdump does; floats would round some of these wrong
    text = [f"{m // 1000}.{m % 1000:03d}{rng.randrange(1000):03d}" for m in ms]
    out, _ = run(frame(N, ts_start=text))
    assert [int(t.timestamp() * 1000 + 0.5) for t in out["ts_start"]] == ms


def test_icmp_type_code_text_becomes_netflow_port() -> None:
    rng = random.Random(8)
    pairs = [(rng.randrange(256), rng.randrange(256)) for _ in range(N)]
    out, rj = run(frame(N, proto=["1"] * N, dst_port=[f"{t}.{c}" for t, c in pairs]))
    assert out["dst_port"] == [t * 256 + c for t, c in pairs] and rj.rejected == 0


def test_ip_text_is_validated_and_ipv6_compressed() -> None:
    rng = random.Random(9)
    v6 = [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(N // 2)]
    v4 = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(N // 2)]
    src = [a.exploded.upper() for a in v6] + [str(a) for a in v4]
    out, rj = run(frame(N, src_ip=src))
    assert out["src_ip"] == [a.compressed for a in v6] + [str(a) for a in v4]
    bad = ["256.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "::g", "host.example"]
    out, rj = run(frame(len(bad), src_ip=bad))
    assert out["src_ip"] == [] and rj.counts["bad IP address"] == len(bad)
