"""Seeded mutation fuzzing of netflowgen's inputs: the text readers (Zeek, Argus, nfdump CSV, CSV),
the Parquet table reader,
the binary ones (nfcapd, pcap; from the real traces when present), hostile canonical flows through
`features`, the settings loader, and the model and detector loaders.

Allowed outcomes: "ok" (records written, bad ones counted) or a clear error (InputError /
ConfigError); never another exception, a hang, or lost records: for the line-per-record formats
(nfdump CSV, CSV) every data line of the mutated file must be accepted or rejected, counted
independently of the reader. `run(cases_per_target, seed)` returns the outcome table;
`python tests/fuzz.py --cases N` (what `make fuzz` runs) prints it, and the bounded run in
tests/test_fuzz.py asserts every outcome is allowed.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.sources.test_golden_bidirectional import ARGUS_HEADER, ARGUS_ROWS, ZEEK_ROWS, write_zeek  # noqa: E402
from tests.sources.test_tables import NFDUMP_HEADER, nfdump_line  # noqa: E402

TOKENS = [b"", b"-", b"nan", b"inf", b"1e309", b"-1", b"99999999999999999999", b"\xff\xfe", b"\xd9\xa1",
          b"0x", b"::", b"300.1.2.3", b"#", b",", b"\t", b"   ", b"Summary", b"\x00", b"2100-01-01 00:00:00"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: byte flips, insertions, deletions, a token in place of a field,
    duplicated or swapped lines, truncation."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        if not b:
            b += rng.choice(TOKENS)
            continue
        i = rng.randrange(len(b))
        if op == 0:
            b[i] = rng.randrange(256)
        elif op == 1:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del b[i:i + rng.randint(1, 40)]
        elif op == 3:
            b[i:i + rng.randint(0, 12)] = rng.choice(TOKENS)
        elif op in (4, 5):
            lines = bytes(b).split(b"\n")
            j, k = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op == 4:
                lines.insert(k, lines[j])
            else:
                lines[j], lines[k] = lines[k], lines[j]
            b = bytearray(b"\n".join(lines))
        elif op == 6:
            del b[i:]
        else:
            b[i:i] = b"x" * rng.randint(1000, 100_000)  # a very long line
    return bytes(b)


def _samples(tmp: Path) -> dict[str, tuple[bytes, str]]:
    zeek = write_zeek(tmp / "z.log", ZEEK_ROWS).read_bytes()
    argus = ("\n".join([ARGUS_HEADER, *ARGUS_ROWS]) + "\n").encode()
    nfd = ("\n".join([NFDUMP_HEADER] + [nfdump_line(f"2018-12-01 12:04:{s:02d}", "1.5", p, f, "3")
                                        for s, (p, f) in enumerate([("TCP", "...AP.SF"), ("UDP", "........"),
                                                                    ("ICMP", "........"), ("TCP", "......S.")] * 3)])
           + "\n").encode()
    csv = ("src_ip,dst_ip,ts_start,proto,packets,bytes,src_port,dst_port\n" + "".join(
        f"10.0.0.{i},192.0.2.{i % 4},{1_700_000_000 + i},{6 if i % 2 else 17},{i + 1},{60 * (i + 1)},{1000 + i},80\n"
        for i in range(12))).encode()
    import io

    import polars as pl
    buf = io.BytesIO()
    pl.read_csv(io.BytesIO(csv)).write_parquet(buf, compression="zstd", row_group_size=4)
    return {"zeek": (zeek, "conn.log"), "argus": (argus, "a.binetflow"), "nfdump-csv": (nfd, "n.csv"),
            "csv": (csv, "t.csv"), "parquet": (buf.getvalue(), "t.parquet")}


def _data_lines(fmt: str, data: bytes) -> int | None:
    """Independent count of the record lines a reader must account for (None: no invariant)."""
    if fmt not in ("nfdump-csv", "csv"):
        return None
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n")]
    if not lines:
        return 0
    header, n, footer = lines[0], 0, False
    names = header.split(b",")
    opkt = names.index(b"opkt") if fmt == "nfdump-csv" and b"opkt" in names else None
    for ln in lines[1:]:
        if fmt == "nfdump-csv":
            if ln == header:
                footer = False
                continue
            if footer or ln == b"Summary":
                footer = True
                continue
        if not ln:
            continue
        n += 1
        # an nfdump CSV line with output packets is two records (the reverse direction too)
        parts = ln.split(b",")
        if opkt is not None and len(parts) == len(names) and parts[opkt].strip() not in (b"", b"-", b"0"):
            try:
                ln.decode("utf-8")
                n += 1
            except UnicodeDecodeError:
                pass
    return n


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def _reader_case(fmt: str, data: bytes, name: str, tmp: Path) -> str:
    from netflowgen.rejects import InputError, RejectCounter
    from netflowgen.sources import SourceOptions, open_source
    path = tmp / name
    path.write_bytes(data)
    rj = RejectCounter()
    try:
        for _ in open_source([path], fmt, SourceOptions(default_sampling_rate=1, input_timezone="UTC"), rj):
            pass
    except InputError:
        return "InputError"
    want = _data_lines(fmt, data)
    if want is not None and rj.accepted + rj.rejected != want:
        return f"LOST {want - rj.accepted - rj.rejected} of {want} lines"
    return "ok"


REAL = Path(__import__("os").environ.get("NETFLOWGEN_REAL_DATA", HERE.parent.parent / "shared" / "data" / "real"))
BINARY = {"nfcapd": REAL / "stopddos" / "nfcapd" / "amp.UDP.isakmp" / "nfcapd.202106141945",
          "pcap": REAL / "stopddos" / "pcap" / "amp.UDP.isakmp.pcap"}


def _binary_case(fmt: str, data: bytes, tmp: Path) -> str:
    """A mutated nfcapd file or capture (read through nfdump / nfpcapd, both watched for hangs and
    runaway errors): ok (what was read, with what could not be counted as rejects) or InputError."""
    return _reader_case(fmt, data, "nfcapd.mutant" if fmt == "nfcapd" else "mutant.pcap", tmp)


def _flows_case(rng: random.Random, tmp: Path) -> str:
    """Canonical flows with hostile values (extreme counts, far times, odd IPs and ports, nulls
    where allowed) through `features`: ok or InputError."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from netflowgen.features.build import build_features
    from netflowgen.features.settings import FeatureConfig
    from netflowgen.rejects import InputError
    from netflowgen.schema import FLOW_SCHEMA
    n = 40
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    cols = {"ts_start": [t0 + dt.timedelta(seconds=rng.randrange(0, 7200)) for _ in range(n)],
            "src_ip": [rng.choice(["10.0.0.1", "10.0.0.2", "::1", "2001:db8::9"]) for _ in range(n)],
            "dst_ip": [rng.choice(["192.0.2.1", "192.0.2.2", "10.0.0.1"]) for _ in range(n)],
            "src_port": [rng.randrange(65536) for _ in range(n)], "dst_port": [rng.choice([0, 53, 80, 443]) for _ in range(n)],
            "proto": [rng.choice([1, 6, 17, 47, 255]) for _ in range(n)], "tcp_flags": [rng.randrange(256) for _ in range(n)],
            "packets": [rng.randrange(1, 1000) for _ in range(n)], "bytes": [rng.randrange(40, 10**6) for _ in range(n)],
            "sampling_rate": [rng.choice([1, 10, 1000]) for _ in range(n)],
            "exporter": [rng.choice([None, "r1", "r2"]) for _ in range(n)], "in_if": [None] * n, "out_if": [None] * n}
    for _ in range(rng.randint(1, 4)):  # hostile values
        k = rng.randrange(n)
        what = rng.randrange(6)
        if what == 0:
            cols["ts_start"][k] = rng.choice([dt.datetime(1971, 1, 1, tzinfo=dt.timezone.utc),
                                              dt.datetime(2099, 12, 31, tzinfo=dt.timezone.utc), t0 - dt.timedelta(days=900)])
        elif what == 1:
            cols["packets"][k] = rng.choice([0, 2**62, 2**53 + 1])
        elif what == 2:
            cols["bytes"][k] = rng.choice([0, 2**62])
        elif what == 3:
            cols["sampling_rate"][k] = rng.choice([0, 2**32 - 1])
        elif what == 4:
            cols["dst_ip"] = [rng.choice(["192.0.2.1", "0.0.0.0", "255.255.255.255", "::"]) for _ in range(n)]
        else:
            cols["exporter"][k] = "x" * rng.randint(1, 5000)
    cols["ts_end"] = [t + dt.timedelta(seconds=rng.choice([0, 1, 3600, 10**6])) for t in cols["ts_start"]]
    path = tmp / "flows.parquet"
    pq.write_table(pa.table(cols).select(FLOW_SCHEMA.names).cast(FLOW_SCHEMA), path)
    try:
        build_features([path], tmp / "features.parquet", FeatureConfig(min_flows=1, spread_over_minutes=rng.random() < 0.5))
    except InputError:
        return "InputError"
    return "ok"


def _config_case(data: bytes, tmp: Path) -> str:
    from netflowgen.config import ConfigError, load
    from netflowgen.detect.stages import FinetuneRun
    p = tmp / "c.toml"
    p.write_bytes(data)
    try:
        load(FinetuneRun, p)
    except ConfigError:
        return "ConfigError"
    return "ok"


def _model_folder(tmp: Path) -> Path:
    import polars as pl
    import torch

    from netflowgen.api import NetFlowGen
    from netflowgen.model import TrafficGPT, model_config
    from netflowgen.tokens import Binner
    from tests.model.fixtures import node_minute_table
    d = tmp / "model"
    if not d.exists():
        torch.manual_seed(0)
        b = Binner.fit(node_minute_table(n_nodes=2, n_minutes=60).filter(pl.col("missing").not_()))
        cfg = model_config("paper", n_layers=1, n_heads=2, d_model=8, d_ff=16, context=16, dropout=0.0)
        NetFlowGen(TrafficGPT(cfg, len(b.nodes), len(b.customers)), b).save_pretrained(d)
    return d


def _folder_case(src: Path, files: list[str], load: Callable[[Path], object], rng: random.Random,
                 tmp: Path) -> str:
    """A copy of the artifact folder `src` with one of `files` mutated, then `load` on it."""
    import shutil

    from netflowgen.rejects import InputError
    d = tmp / f"{src.name}-mutant"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    target = d / rng.choice(files)
    target.write_bytes(mutate(target.read_bytes(), rng))
    try:
        load(d)
    except InputError:
        return "InputError"
    return "ok"


def _model_case(rng: random.Random, tmp: Path) -> str:
    from netflowgen.model.io import load_model
    return _folder_case(_model_folder(tmp), ["config.json", "binner.json", "model.safetensors"], load_model, rng, tmp)


def _detector_folder(tmp: Path) -> Path:
    """A fitted Seasonal-band detector of a tiny table (saved once)."""
    d = tmp / "detector"
    if not d.exists():
        import polars as pl

        from netflowgen.detect.cube import NodeMinuteCube
        from netflowgen.detect.finetune import FinetuneConfig
        from netflowgen.detect.pipeline import DetectionContext
        from tests.detect.synthetic import make_dataset
        feats, _, _ = make_dataset(n_nodes=2, n_minutes=300, attacks_per_node=1)
        ex = pl.DataFrame({"id": [0], "node_row": [0], "start": [0], "label": [0], "label_t": [63],
                           "onset_t": [-1], "end_t": [-1], "true_onset_t": [-1], "split": ["train"], "pair": [0],
                           "customer": ["c0"], "attack_type": [""]})
        ctx = DetectionContext.build(NodeMinuteCube.from_table(feats), ex, 64, 64, None, [0.6, 0.2])
        det = ctx.new_detector("Seasonal-band", FinetuneConfig())
        det.theta, det.warmup = 0.5, 8
        det.save(d)
    return d


def _detector_case(rng: random.Random, tmp: Path) -> str:
    from netflowgen.detect.detector import Detector
    return _folder_case(_detector_folder(tmp), ["detector.json", "detector.json", "detector.safetensors"],
                        Detector.load, rng, tmp)


def _outcome(fn: Callable[[], str], limit_s: int = 20) -> str:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    try:
        return fn()
    except Hang:
        return "HANG"
    except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
        return f"CRASH {type(e).__name__}: {str(e)[:100]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run(cases: int, seed: int = 0, tmp: Path | None = None) -> dict[str, Counter]:
    """Outcome counts per target (reader formats, "features input", "config", "model", "detector")
    and "_findings": every outcome that is not allowed, with its reproducer."""
    own = tmp is None
    tmpdir = Path(tempfile.mkdtemp(prefix="netflowgen-fuzz-")) if own else tmp
    assert tmpdir is not None
    rng = random.Random(seed)
    table: dict[str, Counter] = {}
    findings: list[str] = []
    targets = [(fmt, data, cases, lambda f, m, n=name: _reader_case(f, m, n, tmpdir))
               for fmt, (data, name) in _samples(tmpdir).items()]
    targets += [(fmt, src.read_bytes(), max(1, cases // 10), lambda f, m: _binary_case(f, m, tmpdir))
                for fmt, src in BINARY.items() if src.exists()]  # the real traces are not shipped
    for fmt, data, count, case in targets:
        c: Counter = Counter()
        for k in range(count):
            mutant = mutate(data, rng)
            out = _outcome(lambda f=fmt, m=mutant, run_case=case: run_case(f, m))
            c[out.split(":")[0] if out.startswith("CRASH") else out.split(" of ")[0] if out.startswith("LOST") else out] += 1
            if out not in ("ok", "InputError"):
                repro = tmpdir / f"repro-{fmt}-{k}"
                repro.write_bytes(mutant)
                findings.append(f"{fmt}: {out} (reproducer {repro})")
        table[fmt] = c
    c = Counter()
    for _ in range(max(1, cases // 10)):
        out = _outcome(lambda: _flows_case(rng, tmpdir), limit_s=60)
        c[out.split(":")[0]] += 1
        if out not in ("ok", "InputError"):
            findings.append(f"features input: {out}")
    table["features input"] = c
    base = b'method = "MS-LSTM"\nlabels = "val"\n[finetune]\nepochs = 3\nvariant = "safe"\n[metrics]\nwarmup = 8\n'
    c = Counter()
    for _ in range(cases):
        mutant = mutate(base, rng)
        out = _outcome(lambda m=mutant: _config_case(m, tmpdir))
        c[out.split(":")[0]] += 1
        if out not in ("ok", "ConfigError"):
            findings.append(f"config: {out} ({mutant!r})")
    table["config"] = c
    for target, case in (("model", _model_case), ("detector", _detector_case)):
        c = Counter()
        for _ in range(max(1, cases // 3)):
            out = _outcome(lambda k=case: k(rng, tmpdir))
            c[out.split(":")[0]] += 1
            if out not in ("ok", "InputError"):
                findings.append(f"{target}: {out}")
        table[target] = c
    table["_findings"] = Counter(findings)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description="seeded mutation fuzzing of netflowgen's inputs")
    ap.add_argument("--cases", type=int, default=2000, help="mutations per reader and for the config")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    table = run(a.cases, a.seed)
    findings = table.pop("_findings")
    print(f"| target | mutations | outcomes (seed {a.seed}) |\n|---|---|---|")
    for target, c in table.items():
        print(f"| {target} | {sum(c.values())} | " + ", ".join(f"{k}: {v}" for k, v in c.most_common()) + " |")
    for f in findings:
        print("FINDING", f)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
