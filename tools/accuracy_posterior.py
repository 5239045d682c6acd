"""Measure the posterior q(x_s | x_t, x_0) and lambda_t - lambda_s (reference float64 and the
torch twin) against 50-digit mpmath for s next to t; prints the posterior table of
docs/accuracy.md.

Run from the repository root with the project installed:
``python tools/accuracy_posterior.py [--device cuda]``.

Pairs: t in {1e-6, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 0.9999, 1}, s = t (1 - gap)
with gap in {0.9, 0.5, 0.1, 1e-3, 1e-6, 1e-9, 1e-12}, and for the discrete schedules the DDPM
pair ((n-1)/T, n/T) and s = t - m/T for m in {2.5, 9.5, 20.5, 100.5} (whole steps between).
Each entry is the worst relative error over the pairs. The last column is what the plain
subtraction lambda(t) - lambda(s) of two correctly computed log-SNRs gives: the
cancellation that log_snr_diff avoids.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import mpmath as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mp_oracle import mp_posterior  # noqa: E402

from diffusion_oracle.reference import (  # noqa: E402
    EDM,
    DiscreteSchedule,
    Flow,
    SubVP,
    VEGeometric,
    VPCosine,
    VPLinear,
    posterior,
    rescale_zero_terminal_snr,
)

TIMES = (1e-6, 1e-4, 1e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 0.9999, 1.0)
GAPS = (0.9, 0.5, 1e-1, 1e-3, 1e-6, 1e-9, 1e-12)
LABELS = ("log_snr_diff", "coef_x0", "coef_xt", "var")
WHOLE_STEPS = (2.5, 9.5, 20.5, 100.5)  # s this many steps before t (discrete schedules)


def schedules():
    return {
        "vp-linear": VPLinear(),
        "vp-cosine": VPCosine(),
        "vp-cosine-s0": VPCosine(0.0),
        "ve": VEGeometric(),
        "edm": EDM(),
        "subvp": SubVP(),
        "flow": Flow(),
        "ddpm-linear": DiscreteSchedule.linear(1000),
        "ddpm-linear-T4000": DiscreteSchedule.linear(4000),
        "ddpm-cosine": DiscreteSchedule.cosine(1000),
        "ddpm-zero-snr": rescale_zero_terminal_snr(DiscreteSchedule.linear(1000)),
        "ddpm-T2-zero-snr": DiscreteSchedule([0.5, 1.0]),
    }


def pairs(schedule):
    """The (s, t) pairs of the module docstring."""
    out = []
    for t in TIMES:
        out += [(t * (1.0 - g), t) for g in GAPS if 0.0 < t * (1.0 - g) < t]
        if isinstance(schedule, DiscreteSchedule):
            n = max(1, round(t * schedule.T))
            out.append(((n - 1) / schedule.T, n / schedule.T))
            # across whole steps: the prefix sums' difference must keep its digits
            out += [(t - m / schedule.T, t) for m in WHOLE_STEPS if t - m / schedule.T > 0]
    return out


def rel(got, want):
    """Relative error of a float64 against an mpf (exact match required for infinities)."""
    want = mp.mpf(want)
    if mp.isinf(want):
        return 0.0 if got == float(want) else math.inf
    if want == 0:
        return abs(got)
    return float(abs(mp.mpf(got) - want) / abs(want))


def evaluate(impl, schedule, s, t):
    """(lambda_t - lambda_s, coef_x0, coef_xt, var) by "reference" or the torch twin on the
    device ``impl`` ("cpu", "cuda")."""
    if impl == "reference":
        p = posterior(schedule, s, t)
        return schedule.log_snr_diff(s, t), p.coef_x0, p.coef_xt, p.var
    import torch

    from diffusion_oracle.accelerated.model import posterior_coefficients
    from diffusion_oracle.accelerated.schedules import torch_schedule

    ts = torch_schedule(schedule)
    s_ = torch.tensor(s, dtype=torch.float64, device=impl)
    t_ = torch.tensor(t, dtype=torch.float64, device=impl)
    c0, ct, var = posterior_coefficients(ts, s_, t_)
    return float(ts.log_snr_diff(s_, t_)), float(c0), float(ct), float(var)


def measure(impls=("reference", "cpu")):
    """{(schedule, impl): {label: worst}} plus the plain subtraction's worst under "plain"."""
    out = {}
    for name, sch in schedules().items():
        oracle = {(s, t): mp_posterior(sch, s, t) for s, t in pairs(sch)}
        oracle = {k: v for k, v in oracle.items() if v is not None}
        for impl in impls:
            worst = dict.fromkeys(LABELS, 0.0)
            for (s, t), want in oracle.items():
                for label, g, w in zip(LABELS, evaluate(impl, sch, s, t), want):
                    worst[label] = max(worst[label], rel(g, w))
            out[(name, impl)] = worst
        out[(name, "plain")] = {"log_snr_diff": max(
            rel(float(sch.log_snr(t)) - float(sch.log_snr(s)), w[0]) for (s, t), w in oracle.items()
        )}  # fmt: skip
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="also the torch twin on this device (cuda)")
    args = ap.parse_args(argv)
    impls = ("reference", "cpu") + ((args.device,) if args.device else ())
    res = measure(impls)
    names = list(dict.fromkeys(k[0] for k in res))
    print("| schedule | impl | " + " | ".join(LABELS) + " | plain lambda_t - lambda_s |")
    print("|" + "---|" * (len(LABELS) + 3))
    for n in names:
        for i in impls:
            cells = " | ".join(f"{res[(n, i)][k]:.1e}" for k in LABELS)
            plain = f"{res[(n, 'plain')]['log_snr_diff']:.1e}" if i == "reference" else ""
            print(f"| {n} | {'torch-' + i if i != 'reference' else i} | {cells} | {plain} |")


if __name__ == "__main__":
    main()
