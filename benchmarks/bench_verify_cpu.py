"""The default ``diffusion-oracle verify`` (every built-in sampler on ring8, VP-linear) on the CPU:
wall time of the command as a user runs it (issue 23: <= 20 s on 2 cores), with the plots of
``make demo`` (``--out``), in one process (``--jobs 1``), and (``--torch``) on the torch path
(``--device cpu``); whether the verdict tables agree. States the machine, its load, the date and
the commit, and writes the rows as JSON (``--json FILE``) and markdown (stdout).

Run: ``python benchmarks/bench_verify_cpu.py [--repeat 3] [--json FILE] [--quick] [--torch]``
(about two minutes on 2 cores; ``--quick`` times the default command only). The load average is
printed before each run: a number measured beside other work is not the command's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time


def run(extra):
    """(wall seconds, CPU seconds of the command and its workers, exit code, stdout)."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = [a.replace("{tmp}", tmp) for a in extra]
        r0 = os.times()
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "diffusion_oracle", "verify", *extra],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        r1 = os.times()
        cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
        return wall, cpu, p.returncode, p.stdout


def verdicts(out):
    rows = {}
    for line in out.splitlines():
        m = re.match(
            r"^(\S.{0,27}?)\s+(uniform|log_snr|karras)\s.*\s(PASS|FAIL|INCONCLUSIVE)\b", line
        )
        if m:
            rows[m.group(1).strip()] = m.group(3)
    return rows


def commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        p = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)  # fmt: skip
        return p.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


CASES = [
    ("verify (default: 2 worker processes)", []),
    ("verify --out (make demo: with the plots)", ["--out", "{tmp}"]),
    ("verify --jobs 1", ["--jobs", "1"]),
]
TORCH = ("verify --device cpu (torch path)", ["--device", "cpu"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per case (the median is kept)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="the default command only")
    ap.add_argument("--torch", action="store_true", help="also the torch path (minutes)")
    args = ap.parse_args()
    cpu_name = platform.processor() or platform.machine()
    head = (f"CPU: {cpu_name}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
            f"commit {commit()}, Python {platform.python_version()}")  # fmt: skip
    print(head)
    rows, base = [], None
    cases = CASES[:1] if args.quick else CASES + ([TORCH] if args.torch else [])
    for name, extra in cases:
        times = []
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            wall, cpu, code, out = run(extra)
            times.append((wall, cpu, load))
            print(f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {code}, load before "
                  f"{load:.2f}", file=sys.stderr)  # fmt: skip
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        v = verdicts(out)
        base = base or v
        rows.append(dict(case=name, wall_s=round(wall, 1), cpu_s=round(cpu, 1),
                         load=round(max(t[2] for t in times), 2), exit=code, samplers=len(v),
                         verdicts_agree=(v == base)))  # fmt: skip
    print("\n| command | wall (s) | CPU (s) | load before | samplers | verdicts as the default |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| `{r['case']}` | {r['wall_s']} | {r['cpu_s']} | {r['load']} | {r['samplers']} | "
              f"{'yes' if r['verdicts_agree'] else 'NO'} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": head, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
