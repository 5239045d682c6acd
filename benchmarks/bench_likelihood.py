"""Benchmark 5 (issue 7): the likelihood computations in torch on the device against the NumPy
reference on the CPU, with the score-evaluation floor of each.

a. PF-ODE log-likelihood with the exact divergence, aniso64-like mixture (K = 16 full, d = 64),
   N points: wall time, solver evaluations, error against the closed-form log-density; the
   floor is nfev x (2 N K d^2 flops for E[x0|x], E[eps|x] plus the same for the divergence's
   per-component products) / fp64 GEMM rate, a lower bound for any implementation that
   evaluates the mixture at every stage.
b. DDPM bound (ddpm_elbo) with the exact model, T = 1000, N examples: wall time per
   example-step, against the reference on the CPU.
c. Irreducible eps loss at one t over 10^7 exact draws.

Run: ``python benchmarks/bench_likelihood.py [--device cuda] [--quick] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_mixture_score import _sync, dgemm_rate, make_mixture

from diffusion_oracle.accelerated import TorchExactModel, TorchMixture, torch_schedule
from diffusion_oracle.accelerated import likelihood as tl
from diffusion_oracle.reference import (
    DiscreteSchedule,
    ExactModel,
    VPLinear,
    ddpm_elbo,
    pf_ode_log_likelihood,
)


def bench_ode(device, rate, N, n_ref):
    mix = make_mixture(16, 64, "full")
    tm = TorchMixture.from_reference(mix, device=device)
    sch = VPLinear()
    x = mix.sample(N, rng=0)
    xt = torch.tensor(x, device=device)
    _sync(device)
    t0 = time.perf_counter()
    res = tl.pf_ode_log_likelihood(tm, torch_schedule(sch), xt)
    _sync(device)
    wall = time.perf_counter() - t0
    err = float(np.abs(res.log_prob.cpu().numpy() - mix.log_prob(x)).max())
    K, d = 16, 64
    floor = res.nfev * 2 * (2.0 * N * K * d * d) / rate
    t0 = time.perf_counter()
    ref = pf_ode_log_likelihood(mix, sch, x[:n_ref])
    ref_wall = time.perf_counter() - t0
    ref_err = float(np.abs(ref.log_prob - mix.log_prob(x[:n_ref])).max())
    return dict(
        N=N, nfev=res.nfev, wall_s=wall, floor_s=floor, ratio_to_floor=wall / floor,
        max_abs_err_nats=err, reference_points=n_ref, reference_wall_s=ref_wall,
        reference_per_point_s=ref_wall / n_ref, device_per_point_s=wall / N,
        reference_max_abs_err=ref_err,
    )  # fmt: skip


def bench_elbo(device, rate, N, n_ref, T=1000):
    mix = make_mixture(16, 64, "full")
    sch = DiscreteSchedule.linear(T)
    model = TorchExactModel(TorchMixture.from_reference(mix, device=device), torch_schedule(sch))
    x = mix.sample(N, rng=1)
    gen = torch.Generator(device).manual_seed(2)
    _sync(device)
    t0 = time.perf_counter()
    terms = tl.ddpm_elbo(model, torch_schedule(sch), x, generator=gen, reduce_diffusion=True)
    _sync(device)
    wall = time.perf_counter() - t0
    floor = T * 2.0 * N * 16 * 64 * 64 / rate  # one x0 evaluation per step
    t0 = time.perf_counter()
    ref = ddpm_elbo(ExactModel(mix, sch, prediction="x0"), sch, x[:n_ref], rng=3)
    ref_wall = time.perf_counter() - t0
    return dict(
        N=N, T=T, wall_s=wall, floor_s=floor, ratio_to_floor=wall / floor,
        neg_elbo_nats=terms.mean(), stderr=terms.stderr(),
        reference_examples=n_ref, reference_wall_s=ref_wall,
        reference_neg_elbo=ref.mean(), reference_stderr=ref.stderr(),
        device_per_example_s=wall / N, reference_per_example_s=ref_wall / n_ref,
    )  # fmt: skip


def bench_floor(device, n):
    mix = make_mixture(16, 64, "full")
    tm = TorchMixture.from_reference(mix, device=device)
    ts = torch_schedule(VPLinear())
    tl.irreducible_loss(tm, ts, 0.3, n=1000)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    est = tl.irreducible_loss(tm, ts, 0.3, n=n, generator=torch.Generator(device).manual_seed(4))
    _sync(device)
    return dict(n=n, wall_s=time.perf_counter() - t0, value=est.value, stderr=est.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    rate = dgemm_rate(device)
    q = args.quick
    res = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dgemm_tflops": rate / 1e12,
        "ode": bench_ode(device, rate, 256 if q else 2**14, 8 if q else 64),
        "elbo": bench_elbo(device, rate, 256 if q else 2**16, 16 if q else 128),
        "floor": bench_floor(device, 10**4 if q else 10**7),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
