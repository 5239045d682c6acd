"""Benchmark 4 of the accelerated issue: the default ``diffusion-oracle verify`` (every built-in
sampler on ring8, VP-linear) on the CPU, NumPy reference path against the torch path
(``--device cpu``), wall time of each and whether the verdict tables agree.

Run: ``python benchmarks/bench_verify_cpu.py`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time


def run(extra):
    with tempfile.TemporaryDirectory() as tmp:  # the plots are not what is timed against
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "diffusion_oracle", "verify", "--out", tmp, *extra],
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - t0, p.returncode, p.stdout


def verdicts(out):
    rows = {}
    for line in out.splitlines():
        m = re.match(
            r"^(\S.{0,27}?)\s+(uniform|log_snr|karras)\s.*\s(PASS|FAIL|INCONCLUSIVE)\b", line
        )
        if m:
            rows[m.group(1).strip()] = m.group(3)
    return rows


def main():
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d')}")
    t_ref, c_ref, o_ref = run([])
    t_acc, c_acc, o_acc = run(["--device", "cpu"])
    v_ref, v_acc = verdicts(o_ref), verdicts(o_acc)
    print(f"reference (NumPy): {t_ref:.1f} s, exit {c_ref}, {len(v_ref)} samplers")
    print(f"torch --device cpu: {t_acc:.1f} s, exit {c_acc}, {len(v_acc)} samplers")
    print(f"ratio torch/reference: {t_acc / t_ref:.2f}")
    diff = {k: (v_ref.get(k), v_acc.get(k)) for k in v_ref if v_ref.get(k) != v_acc.get(k)}
    print("verdicts agree" if not diff and v_ref else f"verdicts differ: {diff}")


if __name__ == "__main__":
    main()
