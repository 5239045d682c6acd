"""Benchmark 1 of the accelerated issue: the exact mixture score.

For each case (N points, K components, d dimensions, covariance type) it measures, in one run:
- ours: ``TorchMixture.score`` (float64): the latency of one call (median of 15, each waited
  for), and the throughput of 20 calls issued back to back (host work overlaps the GPU's);
- the floor: 2 N K d^2 flops (one pass of the points through every component's d x d factor;
  2 N K d for isotropic components) over the float64 GEMM rate measured in the same run (an
  8192^3 DGEMM), or reading x and writing the score at the measured copy bandwidth if larger;
- on CUDA, for full covariances, the same ratio under sustained load: rounds of half a second
  of DGEMMs then half a second of calls (each waited for), each round's floor from its own
  GEMM rate. A DGEMM draws the GPU's power limit and its clock falls after the first tenth of a
  second (bench_power_state.py), so the rate of the short measurement above is higher than
  what any sustained matrix product gets; both ratios are reported;
- the user's baseline: ``torch.distributions.MixtureSameFamily`` of ``MultivariateNormal`` and
  autograd of ``log_prob(x).sum()`` (what one writes today), timed once;
- the NumPy reference on the CPU, timed on a slice of the points and scaled linearly in N;
- agreement of ours with the reference on 4096 points (max relative error, normwise per row).

Run: ``python benchmarks/bench_mixture_score.py [--device cuda] [--quick] [--json out.json]``.
Results go to benchmarks/RESULTS.md by hand, with device and date.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import numpy as np
import torch

from diffusion_oracle.accelerated.targets import TorchMixture
from diffusion_oracle.reference import GaussianMixture


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, repeat=5, warmup=1):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(fn, device, calls=20):
    """Seconds per call of ``calls`` calls issued back to back (one wait at the end)."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def dgemm_rate(device, n=8192):
    """Float64 GEMM rate (flop/s) on an n x n x n product."""
    if device.type == "cpu":
        n = 2048
    a = torch.randn(n, n, dtype=torch.float64, device=device)
    b = torch.randn(n, n, dtype=torch.float64, device=device)
    t = timeit(lambda: a @ b, device, repeat=5, warmup=2)
    return 2 * n**3 / t


def sustained(fn, flops, device, rounds=5, seconds=0.5, n=8192):
    """Rounds of (8192^3 DGEMMs back to back for ``seconds``, then calls of ``fn``, each waited
    for, for ``seconds``), after one such round not counted; per round the floor flops / (that
    round's GEMM rate) over the median call. Returns the rounds' fractions, GEMM rates (flop/s)
    and median call times (s)."""
    a = torch.randn(n, n, dtype=torch.float64, device=device)
    b = torch.randn(n, n, dtype=torch.float64, device=device)
    fracs, rates, times = [], [], []
    for r in range(rounds + 1):  # round 0, not counted, brings the GPU to its sustained state
        _sync(device)
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:  # queue a few, then check the clock
            for _ in range(4):
                a @ b
            count += 4
            _sync(device)
        rate = 2 * n**3 * count / (time.perf_counter() - t0)
        calls, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t1 = time.perf_counter()
            fn()
            _sync(device)
            calls.append(time.perf_counter() - t1)
        t = statistics.median(calls)
        if r == 0:
            continue
        fracs.append(flops / rate / t)
        rates.append(rate)
        times.append(t)
    return fracs, rates, times


def copy_bandwidth(device):
    """Device memory bandwidth (bytes/s, read + write) of a 1 GiB tensor copy."""
    a = torch.empty(1 << 27, dtype=torch.float64, device=device)
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), device, repeat=5, warmup=2)
    return 2 * a.numel() * 8 / t


def make_mixture(K, d, ctype, seed=0):
    g = np.random.default_rng(seed)
    w = g.dirichlet(np.full(K, 5.0))
    means = 3.0 * g.standard_normal((K, d)) / math.sqrt(d)
    if ctype == "full":
        covs = []
        for _ in range(K):
            Q, _ = np.linalg.qr(g.standard_normal((d, d)))
            covs.append((Q * np.logspace(-3, 0, d)) @ Q.T)
        covs = np.stack(covs)
    else:
        covs = np.exp(g.uniform(np.log(1e-3), 0.0, K))
    return GaussianMixture(w, means, covs, covariance_type=ctype)


def baseline_autograd(mixture, x, alpha, sigma):
    """What a user writes today: MixtureSameFamily + autograd."""
    dev = x.device
    covs = torch.tensor(mixture.covs, device=dev)
    C = alpha**2 * covs + sigma**2 * torch.eye(mixture.d, device=dev, dtype=torch.float64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.tensor(mixture.weights, device=dev)),
        torch.distributions.MultivariateNormal(
            loc=alpha * torch.tensor(mixture.means, device=dev), covariance_matrix=C
        ),
    )
    xr = x.clone().requires_grad_(True)
    mix.log_prob(xr).sum().backward()
    return xr.grad


SWEEP = [(b, w, st) for b in (16, 32, 64, 128) for w in (4, 8) for st in (1, 2, 3)]


def run_case(N, K, d, ctype, device, rate, bw, baseline=True, sweep=False, rounds=5):
    mixture = make_mixture(K, d, ctype)
    alpha, sigma = 0.8, 0.6
    g = np.random.default_rng(1)
    x_np = alpha * mixture.sample(N, g) + sigma * g.standard_normal((N, d))
    x = torch.tensor(x_np, device=device)
    tm = TorchMixture.from_reference(mixture, device=device)
    t_ours = timeit(lambda: tm.score(x, alpha, sigma), device, repeat=15, warmup=2)
    t_thru = throughput(lambda: tm.score(x, alpha, sigma), device)
    t_unfused = t_compiled = None
    configs = {}
    if device.type == "cuda":
        tu = TorchMixture.from_reference(mixture, device=device, fused=False)
        t_unfused = timeit(lambda: tu.score(x, alpha, sigma), device)
        tc = TorchMixture.from_reference(mixture, device=device, compile=True, fused=False)
        t_compiled = timeit(lambda: tc.score(x, alpha, sigma), device, warmup=2)
        if sweep and tm.fused:
            from diffusion_oracle.accelerated._fused import fused_eval

            xf = x.reshape(-1, d)
            for cfg in SWEEP:
                try:
                    t = timeit(
                        lambda cfg=cfg: fused_eval(tm, xf, alpha, sigma, ("score",), config=cfg),
                        device,
                    )
                    configs[f"BM={cfg[0]},warps={cfg[1]},stages={cfg[2]}"] = t
                except Exception as err:  # a config that does not compile: reported
                    configs[f"BM={cfg[0]},warps={cfg[1]},stages={cfg[2]}"] = (
                        f"failed: {str(err)[:120]}"
                    )
    # agreement with the reference on 4096 points
    m = min(N, 4096)
    ref = mixture.score(x_np[:m], alpha, sigma)
    got = tm.score(x[:m], alpha, sigma).cpu().numpy()
    rel = float(np.max(np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)))
    # the other fused outputs against the reference on the same points
    xm = x[:m]
    lp_ref = mixture.log_prob(x_np[:m], alpha, sigma)
    lp = tm.log_prob(xm, alpha, sigma).cpu().numpy()
    rel_lp = float(np.max(np.abs(lp - lp_ref) / np.maximum(1.0, np.abs(lp_ref))))
    x0_ref = mixture.denoise(x_np[:m], alpha, sigma)
    x0 = tm.denoise(xm, alpha, sigma).cpu().numpy()
    rel_x0 = float(np.max(np.linalg.norm(x0 - x0_ref, axis=1) / np.linalg.norm(x0_ref, axis=1)))
    # NumPy reference on a slice, scaled linearly
    m_ref = min(N, 1 << 14)
    t0 = time.perf_counter()
    mixture.score(x_np[:m_ref], alpha, sigma)
    t_ref = (time.perf_counter() - t0) * N / m_ref
    # compute floor: one pass of the points through the K factors (d x d each; d x 1 for the
    # isotropic case, whose factor is a scalar); memory floor: read x, write the score
    flops = 2.0 * N * K * d * (d if ctype == "full" else 1)
    floor = max(flops / rate, 2.0 * N * d * 8 / bw)
    sus = None
    if device.type == "cuda" and ctype == "full" and rounds:
        fracs, rates, times = sustained(lambda: tm.score(x, alpha, sigma), flops, device, rounds)
        sus = dict(
            fractions=fracs,
            median_fraction=statistics.median(fracs),
            dgemm_tflops=[r / 1e12 for r in rates],
            call_s=times,
        )
    out = dict(
        N=N,
        K=K,
        d=d,
        covariance_type=ctype,
        fused=tm.fused,
        ours_s=t_ours,
        ours_back_to_back_s=t_thru,
        fraction_of_floor_back_to_back=floor / t_thru,
        unfused_eager_s=t_unfused,
        compiled_unfused_s=t_compiled,
        sweep=configs,
        floor_s=floor,
        fraction_of_floor=floor / t_ours,
        reference_cpu_s_extrapolated=t_ref,
        speedup_vs_reference=t_ref / t_ours,
        max_rel_err_vs_reference=rel,
        max_rel_err_log_prob=rel_lp,
        max_rel_err_x0=rel_x0,
        sustained=sus,
    )
    if baseline:
        try:
            t_base = timeit(lambda: baseline_autograd(mixture, x, alpha, sigma), device, 1, 0)
            out.update(baseline_autograd_s=t_base, speedup_vs_baseline=t_base / t_ours)
        except RuntimeError as err:  # out of memory: reported, not hidden
            out.update(baseline_autograd_s=None, baseline_error=str(err)[:200])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run on a CPU)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--sweep", action="store_true", help="time the fused kernel's block sizes")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the sustained ratio (0: none)")
    args = ap.parse_args()
    device = torch.device(args.device)
    rate = dgemm_rate(device)
    bw = copy_bandwidth(device)
    if args.quick:
        cases = [(1 << 12, 16, 64, "full"), (1 << 12, 16, 64, "iso")]
    else:
        cases = [(1 << 20, 16, 64, "full"), (1 << 18, 64, 128, "full"), (1 << 20, 16, 64, "iso")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    results = dict(
        device=name,
        torch=torch.__version__,
        dgemm_tflops=rate / 1e12,
        copy_tb_s=bw / 1e12,
        cases=[],
    )
    print(
        f"device {name}, torch {torch.__version__}, fp64 GEMM {rate / 1e12:.1f} TFLOP/s, "
        f"copy {bw / 1e12:.2f} TB/s"
    )
    for N, K, d, ctype in cases:
        r = run_case(
            N, K, d, ctype, device, rate, bw, baseline=not args.no_baseline, sweep=args.sweep,
            rounds=args.rounds,
        )  # fmt: skip
        results["cases"].append(r)
        line = (
            f"N=2^{int(math.log2(N))} K={K} d={d} {ctype}: ours {r['ours_s'] * 1e3:.2f} ms, "
            f"floor {r['floor_s'] * 1e3:.2f} ms ({100 * r['fraction_of_floor']:.0f}% of it; back "
            f"to back {r['ours_back_to_back_s'] * 1e3:.2f} ms, "
            f"{100 * r['fraction_of_floor_back_to_back']:.0f}%), "
            + (
                f"unfused {r['unfused_eager_s'] * 1e3:.2f} ms, compiled unfused "
                f"{r['compiled_unfused_s'] * 1e3:.2f} ms, "
                if r["unfused_eager_s"]
                else ""
            )
            + f"reference (CPU, extrapolated) {r['reference_cpu_s_extrapolated']:.1f} s "
            f"(x{r['speedup_vs_reference']:.0f}), rel err score {r['max_rel_err_vs_reference']:.1e}"
            f" log_prob {r['max_rel_err_log_prob']:.1e} x0 {r['max_rel_err_x0']:.1e}"
            + (f", sweep {r['sweep']}" if r["sweep"] else "")
        )
        if r["sustained"]:
            su = r["sustained"]
            line += (
                f", sustained: {100 * su['median_fraction']:.0f}% of the floor (rounds "
                + ", ".join(
                    f"{100 * f:.0f}% at {g:.1f} TFLOP/s, {t * 1e3:.2f} ms"
                    for f, g, t in zip(su["fractions"], su["dgemm_tflops"], su["call_s"])
                )
                + ")"
            )
        if r.get("baseline_autograd_s"):
            line += (
                f", MixtureSameFamily+autograd {r['baseline_autograd_s']:.2f} s "
                f"(x{r['speedup_vs_baseline']:.0f})"
            )
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
