"""Scaling curves of the exact mixture score (issue 23): time and peak device memory of
``TorchMixture.score`` against N (points), K (components) and d (dimension), one axis at a time,
with the hardware floor of each size on the same plot.

The floor of a size is the larger of the compute floor, 2 N K d^2 flops for full covariances
(one pass of the points through every component's d x d factor; 2 N K d for isotropic ones) at
the float64 GEMM rate measured in the same run, and the memory floor, reading x and writing the
score (2 N d float64) at the measured copy bandwidth (benchmark 1's model,
``bench_mixture_score.py``). Each point is the median of a few calls, each waited for; memory is
``torch.cuda.max_memory_allocated`` above what the inputs hold (not measured on a CPU).

Sweeps (full covariances, float64): N = 2^10..2^24 at K = 16, d = 64; K = 1..1024 at N = 2^16,
d = 16; d = 1..1024 at N = 2^14, K = 8 (``--quick``: smaller ranges, for a CPU). The torch
mixture evaluates its intermediates in chunks (``chunk_elems``), so only x and the score have to
fit in memory.

Run: ``python benchmarks/bench_scaling.py [--device cuda] [--quick] [--json FILE] [--png FILE]``;
the PNG (default ``benchmarks/figures/scaling_<device>.png``) is linked from RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mixture_score import copy_bandwidth, dgemm_rate, make_mixture  # noqa: E402

from diffusion_oracle.accelerated.targets import TorchMixture  # noqa: E402

SWEEPS = {
    "N": dict(fixed=dict(K=16, d=64), values=[2**p for p in range(10, 25, 2)]),
    "K": dict(fixed=dict(N=2**16, d=16), values=[1, 4, 16, 64, 256, 1024]),
    "d": dict(fixed=dict(N=2**14, K=8), values=[1, 4, 16, 64, 256, 1024]),
}
QUICK = {
    "N": dict(fixed=dict(K=16, d=16), values=[2**p for p in range(10, 19, 2)]),
    "K": dict(fixed=dict(N=2**12, d=8), values=[1, 4, 16, 64, 256]),
    "d": dict(fixed=dict(N=2**11, K=4), values=[1, 4, 16, 64, 256]),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(N, K, d, device, rate, bw, repeat=3):
    """(median seconds of one score call, peak extra device bytes or None, floor seconds)."""
    tm = TorchMixture.from_reference(make_mixture(K, d, "full"), device=device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(N, d, generator=g, device=device, dtype=torch.float64)
    tm.score(x[: min(N, 1024)], 0.8, 0.6)  # compile / warm up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        tm.score(x, 0.8, 0.6)
        _sync(device)
        times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    floor = max(2.0 * N * K * d * d / rate, 2.0 * N * d * 8 / bw)
    return statistics.median(times), mem, floor


def plot(rows, path, head):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, axis in zip(axes, ("N", "K", "d")):
        rs = [r for r in rows if r["axis"] == axis]
        xs = [r[axis] for r in rs]
        ax.loglog(xs, [r["time_s"] for r in rs], "o-", label="TorchMixture.score")
        ax.loglog(xs, [r["floor_s"] for r in rs], "k--", label="hardware floor")
        if any(r["mem_bytes"] for r in rs):
            ax2 = ax.twinx()
            ax2.loglog(xs, [max(r["mem_bytes"] or 1, 1) for r in rs], "s:", color="C2",
                       label="peak memory (bytes)")  # fmt: skip
            ax2.set_ylabel("peak extra memory (bytes)", color="C2")
        fixed = ", ".join(f"{k}={v}" for k, v in rs[0]["fixed"].items())
        ax.set_title(f"against {axis} ({fixed})", fontsize=9)
        ax.set_xlabel(axis)
        ax.set_ylabel("seconds per call")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(head, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.94, bottom=0.13, top=0.85, wspace=0.45)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    rate, bw = dgemm_rate(device), copy_bandwidth(device)
    head = (f"{name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}: fp64 GEMM "
            f"{rate / 1e12:.2f} TFLOP/s, copy {bw / 1e9:.0f} GB/s")  # fmt: skip
    print(head)
    sweeps = QUICK if args.quick else SWEEPS
    rows = []
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        def tqdm(it, **_):
            return it
    todo = [(axis, v) for axis, sw in sweeps.items() for v in sw["values"]]
    for axis, v in tqdm(todo, desc="sizes", file=sys.stderr):
        size = dict(sweeps[axis]["fixed"], **{axis: v})
        t, mem, floor = measure(size["N"], size["K"], size["d"], device, rate, bw)
        rows.append(dict(axis=axis, fixed=sweeps[axis]["fixed"], **size, time_s=t,
                         mem_bytes=mem, floor_s=floor, ratio=t / floor))  # fmt: skip
    print("\n| axis | N | K | d | time (ms) | floor (ms) | time / floor | peak extra memory |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mem = "-" if r["mem_bytes"] is None else f"{r['mem_bytes'] / 2**20:.0f} MiB"
        print(f"| {r['axis']} | {r['N']} | {r['K']} | {r['d']} | {r['time_s'] * 1e3:.3g} | "
              f"{r['floor_s'] * 1e3:.3g} | {r['ratio']:.1f} | {mem} |")  # fmt: skip
    png = args.png or os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures",
                                   f"scaling_{device.type}.png")  # fmt: skip
    plot(rows, png, head)
    print(f"\nplot: {png}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": head, "rows": rows}, f, indent=2, default=float)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
