"""Why benchmark 1's and 2's ratios move between runs: the GPU's clock under its power limit.

Times, with CUDA events, (a) the 8192^3 float64 GEMM of the floor in blocks of 25 calls, printing
the SM clock, power draw and temperature after each block; (b) eight rounds that each time 10
GEMMs, 20 ``TorchMixture.score`` calls (N = 2^20, K = 16, d = 64, full) and 10 fused DDPM steps
back to back, with each round's ratio to its own GEMM rate; (c) 200 score calls in a row, then
50 GEMMs. ``dgemm_rate`` (what the benchmarks use: 2 warm-up calls, median of 5) is printed at
the start and after the GEMM blocks, for comparison.

Run: ``python benchmarks/bench_power_state.py`` (CUDA only; clocks and power through
``torch.cuda.clock_rate``/``power_draw``, which need pynvml).
"""

from __future__ import annotations

import torch
from bench_mixture_score import dgemm_rate, make_mixture

from diffusion_oracle.accelerated._fused import fused_ddpm_steps
from diffusion_oracle.accelerated.targets import TorchMixture


def state():
    try:
        return (
            f"{torch.cuda.clock_rate()} MHz, {torch.cuda.power_draw() / 1000:.0f} W, "
            f"{torch.cuda.temperature()} C"
        )
    except Exception as err:  # pynvml missing: reported, the timings still run
        return f"(clock unavailable: {err})"


def per_call(fn, calls):
    """Seconds per call of ``calls`` calls back to back, timed with CUDA events."""
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    e0.record()
    for _ in range(calls):
        fn()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / 1e3 / calls


def main():
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)}; idle: {state()}", flush=True)
    print(f"dgemm_rate at the start: {dgemm_rate(dev) / 1e12:.1f} TFLOP/s; {state()}")
    n = 8192
    a = torch.randn(n, n, dtype=torch.float64, device=dev)
    b = torch.randn(n, n, dtype=torch.float64, device=dev)
    gemm = 2 * n**3
    for i in range(6):
        t = per_call(lambda: a @ b, 25)
        print(f"GEMM block {i}: {gemm / t / 1e12:.1f} TFLOP/s; {state()}", flush=True)
    print(f"dgemm_rate after them: {dgemm_rate(dev) / 1e12:.1f} TFLOP/s")
    N, K, d = 1 << 20, 16, 64
    tm = TorchMixture.from_reference(make_mixture(K, d, "full"), device=dev)
    x = tm.sample(N, torch.Generator(device=dev).manual_seed(0), alpha=0.8, sigma=0.6)
    flops = 2 * N * K * d * d
    steps = [(0.8, 0.6, 1.0, 0.1, 0.1)] * 10
    g = torch.Generator(device=dev).manual_seed(1)
    tm.score(x, 0.8, 0.6)
    fused_ddpm_steps(tm, x, steps, generator=g)  # compiled before the timings
    for i in range(8):
        rate = gemm / per_call(lambda: a @ b, 10)
        t_score = per_call(lambda: tm.score(x, 0.8, 0.6), 20)
        t_step = per_call(lambda: fused_ddpm_steps(tm, x, steps, generator=g), 2) / len(steps)
        floor = flops / rate
        print(
            f"round {i}: GEMM {rate / 1e12:.1f} TFLOP/s, score {t_score * 1e3:.3f} ms "
            f"({100 * floor / t_score:.1f}% of the floor), DDPM step {t_step * 1e3:.3f} ms "
            f"(x{t_step / floor:.3f}); {state()}",
            flush=True,
        )
    t_score = per_call(lambda: tm.score(x, 0.8, 0.6), 200)
    print(f"200 score calls: {t_score * 1e3:.3f} ms each; {state()}")
    rate = gemm / per_call(lambda: a @ b, 50)
    print(
        f"50 GEMMs right after: {rate / 1e12:.1f} TFLOP/s, so the score at "
        f"{100 * flops / rate / t_score:.1f}% of the floor; {state()}"
    )


if __name__ == "__main__":
    main()
