"""Wall time of the conformance reports the README quotes, as a user runs them on the CPU:
``diffusion-oracle conformance k-diffusion | flow_matching | torchcfm [| diffusers]`` (each with
``--out`` to a temporary folder and the default ``--jobs``), with the machine, its load, the date
and the commit. The diffusers report takes minutes: pass ``--diffusers`` to include it.

Run: ``python benchmarks/bench_conformance_cpu.py [--diffusers] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_verify_cpu import commit  # noqa: E402

LIBRARIES = ["k-diffusion", "flow_matching", "torchcfm"]


def run(library):
    """(wall seconds, CPU seconds of the command and its workers, exit code, last line)."""
    with tempfile.TemporaryDirectory() as tmp:
        r0, t0 = os.times(), time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "diffusion_oracle", "conformance", library, "--out", tmp],
            capture_output=True,
            text=True,
        )
        wall, r1 = time.perf_counter() - t0, os.times()
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    # the report's summary: its last line that is not a file written
    lines = [ln for ln in p.stdout.strip().splitlines()
             if ln.strip() and not ln.startswith(("plot:", "report:", "plots:"))]  # fmt: skip
    last = lines[-1] if lines else ""
    return wall, cpu, p.returncode, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--diffusers", action="store_true", help="also the diffusers report")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    head = (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{time.strftime('%Y-%m-%d')}, commit {commit()}")  # fmt: skip
    print(head)
    rows = []
    for lib in LIBRARIES + (["diffusers"] if args.diffusers else []):
        load = os.getloadavg()[0]
        wall, cpu, code, last = run(lib)
        rows.append(dict(library=lib, wall_s=round(wall, 1), cpu_s=round(cpu, 1),
                         load=round(load, 2), exit=code, summary=last))  # fmt: skip
        print(f"  {lib}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {code}, load before "
              f"{load:.2f}: {last}", file=sys.stderr)  # fmt: skip
    print("\n| report | wall (s) | CPU (s) | load before | exit | last line |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| `conformance {r['library']}` | {r['wall_s']} | {r['cpu_s']} | {r['load']} | "
              f"{r['exit']} | {r['summary']} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": head, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
