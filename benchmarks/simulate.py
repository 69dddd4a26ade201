"""Benchmark of `netflowgen simulate`: flow records per second and peak memory, for several run
lengths (memory must not grow with days), plus the static-threshold difficulty figure.

    python benchmarks/simulate.py                    # 1 and 7 days at the defaults, + difficulty
    python benchmarks/simulate.py --days 7 --no-difficulty

Each run happens in a fresh subprocess so its peak RSS is its own. Results go to stdout as a table
and, with --json FILE, as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
from netflowgen.simulate import SimConfig, simulate
cfg = SimConfig(seed=int(sys.argv[3]))
cfg.time.days = float(sys.argv[2])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t, c = time.perf_counter(), cpu()
res = simulate(cfg, sys.argv[1])
sec, cpu_s = time.perf_counter() - t, cpu() - c
print(json.dumps({"days": cfg.time.days, "records": res.records, "seconds": sec,
                  "records_per_s": res.records / sec, "cpu_s": cpu_s,
                  "records_per_cpu_s": res.records / cpu_s, "load_avg_1m": os.getloadavg()[0], "alerts": res.alerts, "attack_rows": res.attacks,
                  "surges": res.surges, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(days: float, out: Path, seed: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(out), str(days), str(seed)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, nargs="+", default=[1.0, 7.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--difficulty", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the static-threshold F1 on the longest run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.days:
            out = Path(tmp) / f"days{d:g}"
            rows.append(run(d, out, args.seed))
            r = rows[-1]
            print(f"{r['days']:>5g} days  {r['records']:>12,} records  {r['seconds']:7.1f} s  "
                  f"{r['records_per_s'] / 1e6:6.2f} M records/s ({r['records_per_cpu_s'] / 1e6:.2f} M per CPU-s, "
                  f"load {r['load_avg_1m']:.1f})  peak RSS {r['peak_rss_mb']:5.0f} MB  "
                  f"{r['attack_rows']} attacks, {r['surges']} surges, {r['alerts']} alerts", flush=True)
        result: dict = {"runs": rows}
        if args.difficulty:
            from netflowgen.experiments.difficulty import measure
            rep = measure(Path(tmp) / f"days{max(args.days):g}", seed=args.seed)
            result["difficulty"] = {"test_f1": rep.test_f1, "val_f1": rep.val_f1, "theta": rep.theta,
                                    "windows": rep.windows, "test": rep.test}
            print(f"Table 5's static threshold ({rep.method}, {rep.labels} labels, as `experiment paper`): "
                  f"test F1 {rep.test_f1:.3f}, validation F1 {rep.val_f1:.3f}, theta {rep.theta:.3g}")
            print(f"  windows: {rep.windows}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
