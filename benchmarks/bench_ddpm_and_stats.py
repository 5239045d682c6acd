"""Benchmarks 2 and 3 of the accelerated issue.

2. A 1000-step DDPM run (fixed_small variance, VP-linear, uniform grid) over N = 2^20 samples
   of the benchmark-1 mixture (K = 16 full-covariance components, d = 64), float64, on the
   device: wall time against the floor of its 1000 score evaluations, 1000 x 2 N K d^2 flops
   over the fp64 GEMM rate measured in the same run; also one model call alone, so the time
   outside the score (the update, the noise) is visible. Run twice: the unfused sampler
   (model call, then the update and torch noise) and the default, which on CUDA fuses each step
   into one kernel (``_fused.fused_ddpm_steps``).
3. verify()'s four tier-3 statistics (responsibilities, projected KS, NLL, MMD) on 10^7 samples
   of ring8 (verify's default target): cold (nulls drawn and the MMD null simulated) and warm
   (the MMD null cached, as verify caches it).

Run: ``python benchmarks/bench_ddpm_and_stats.py [--device cuda] [--quick] [--json out.json]``
(``--sweep``: also time one fused step per kernel configuration; ``--only-stats``: benchmark 3
alone, so that with an empty cache, ``TRITON_CACHE_DIR=$(mktemp -d)``, its cold time includes
every compilation it needs, as on a machine's first run).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_mixture_score import _sync, dgemm_rate, make_mixture, timeit

from diffusion_oracle.accelerated import TorchMixture, torch_schedule
from diffusion_oracle.accelerated import stats as ts
from diffusion_oracle.accelerated.model import TorchExactModel
from diffusion_oracle.accelerated.samplers import DDPM, TorchGrid
from diffusion_oracle.reference import ring8
from diffusion_oracle.reference.schedules import VPLinear

SWEEP = [(b, w, st) for b in (32, 64, 128) for w in (4, 8) for st in (1, 2, 3)]


def sweep_step(tm, x, device):
    """One fused DDPM step (at alpha = 0.8, sigma = 0.6) per kernel configuration (BM, warps,
    stages): seconds, or the error of a configuration that does not compile."""
    from diffusion_oracle.accelerated._fused import fused_ddpm_step

    gen = torch.Generator(device=device).manual_seed(0)
    out = {}
    for cfg in SWEEP:
        key = f"BM={cfg[0]},warps={cfg[1]},stages={cfg[2]}"
        try:
            out[key] = timeit(
                lambda cfg=cfg: fused_ddpm_step(
                    tm, x, 0.8, 0.6, 1.0, 0.1, 0.1, generator=gen, config=cfg
                ),
                device,
            )
        except Exception as err:  # a configuration that does not compile: reported
            out[key] = f"failed: {str(err)[:120]}"
        print(f"  step {key}: {out[key]}", flush=True)
    return out


def bench_ddpm(device, rate, N, steps, K=16, d=64, sweep=False):
    mixture = make_mixture(K, d, "full")
    tm = TorchMixture.from_reference(mixture, device=device)
    model = TorchExactModel(tm, torch_schedule(VPLinear()), prediction="eps")
    t = np.linspace(1.0, 1e-3, steps)  # steps - 1 intervals, then the final jump
    grid = TorchGrid(model.schedule, t, final_zero=True)
    gen = torch.Generator(device=device).manual_seed(0)
    x = tm.sample(N, gen, alpha=grid.alpha[0], sigma=grid.sigma[0])
    t_call = timeit(lambda: model(x, 0.5), device)
    configs = sweep_step(tm, x, device) if sweep and tm.fused else {}
    walls = {}
    for fused in (False, None):  # unfused, then the default (fused on CUDA)
        DDPM(fused=fused)(model, x[:1024], grid, rng=gen)  # warm-up (kernel compilation)
        _sync(device)
        t0 = time.perf_counter()
        out = DDPM(fused=fused)(model, x, grid, rng=gen)
        _sync(device)
        walls[fused] = time.perf_counter() - t0
    wall = walls[None]
    calls = steps  # steps - 1 DDPM steps and the final jump: one model call each
    floor = calls * 2.0 * N * K * d * d / rate
    return dict(
        N=N, K=K, d=d, steps=steps, model_calls=calls, wall_s=wall, floor_s=floor,
        ratio_to_floor=wall / floor, one_call_s=t_call, calls_x_one_call_s=calls * t_call,
        unfused_wall_s=walls[False], unfused_ratio_to_floor=walls[False] / floor,
        finite=bool(torch.isfinite(out).all()), step_configs=configs,
    )  # fmt: skip


def bench_stats(device, n):
    tm = TorchMixture.from_reference(ring8(), device=device)
    x = tm.sample(n, torch.Generator(device=device).manual_seed(1))
    a = 0.0025
    res = {}
    for label in ("cold", "warm"):
        _sync(device)
        t0 = time.perf_counter()
        if label == "cold":
            null = ts.mmd_null(tm, 500, replicates=int(2 / a) - 1, rng=3)
        out = [
            ts.responsibility_test(tm, x, alpha=a, rng=4),
            ts.projected_ks_test(tm, x, alpha=a, rng=5),
            ts.nll_test(tm, x, alpha=a, rng=6),
            ts.mmd_test(tm, x[:500], alpha=a, null=null),
        ]
        _sync(device)
        res[f"{label}_s"] = time.perf_counter() - t0
        res[f"{label}_passed"] = [r.passed for r in out]
    res["n"] = n
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run on a CPU)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--sweep", action="store_true", help="time one fused step per configuration")
    ap.add_argument("--only-stats", action="store_true", help="benchmark 3 alone")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    N, steps, n = (1 << 12, 20, 10**5) if args.quick else (1 << 20, 1000, 10**7)
    rate = b2 = None
    if not args.only_stats:
        rate = dgemm_rate(device)
        print(f"device {name}, torch {torch.__version__}, fp64 GEMM {rate / 1e12:.1f} TFLOP/s")
        b2 = bench_ddpm(device, rate, N, steps, sweep=args.sweep)
        print(
            f"[2] DDPM {b2['steps']} steps, N=2^{N.bit_length() - 1}, K=16, d=64 full: "
            f"{b2['wall_s']:.2f} s, floor {b2['floor_s']:.2f} s (x{b2['ratio_to_floor']:.2f}); "
            f"one model call {b2['one_call_s'] * 1e3:.2f} ms (x{b2['model_calls']} = "
            f"{b2['calls_x_one_call_s']:.2f} s)"
        )
    else:
        print(f"device {name}, torch {torch.__version__}")
    b3 = bench_stats(device, n)
    print(
        f"[3] tier-3 statistics on {n:.0e} samples of ring8: cold {b3['cold_s']:.2f} s, "
        f"warm {b3['warm_s']:.2f} s; verdicts {b3['warm_passed']}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(device=name, torch=torch.__version__,
                           dgemm_tflops=rate and rate / 1e12, ddpm=b2, stats=b3), fh,
                      indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
