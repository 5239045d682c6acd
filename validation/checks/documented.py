"""Check 9, **documented grid** (issue 21): the noise levels a configuration promises, computed
from the published formula in float64, against the scheduler's own sigmas (as shipped).

- **Flow matching** (FlowMatch* schedulers, and ``use_flow_sigmas`` on the multistep solvers):
  the training sigmas run from 1 to 1/T; N inference sigmas are u = linspace(1, 1/T, N), then
  shifted: sigma = s u / (1 + (s - 1) u) with the static ``shift`` s (Esser et al. 2024,
  arXiv:2403.03206, eq. 23), or with dynamic shifting and ``mu`` the exponential time shift
  sigma = e^mu / (e^mu + 1/u - 1) (diffusers' ``time_shift``); then 0 appended.
- **Karras sigmas** (``use_karras_sigmas``): sigma_i = (sigma_max^(1/rho) + i/(N - 1)
  (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, rho = 7 (Karras et al. 2022, eq. 5), between
  the ends of the network's training levels (sigma of the first and last training step of the
  configured betas), then the final sigma.
- **Exponential sigmas** (``use_exponential_sigmas``): log sigma uniform between the same ends.

Tolerance, relative per entry: the scheduler's float32 storage (2 u32) plus, for the VP
tables, what the float32 training table diffusers builds knows of its ends: alphas_cumprod is a
float32 cumulative product (relative LAMBDA sqrt(k + 2) u32) and sigma = sqrt((1 - ab) / ab)
divides that by 2 (1 - ab) (at the first training step 1 - ab = beta_0 = 1e-4: relative 3e-3 at
LAMBDA = 8), carried into each Karras entry with the weight the formula gives it. A failure
names the first entry that differs and, where they differ, the last sigma. Other
configurations are reported as not documented here, with the reason: never judged on a guess.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DOCUMENTED_STEPS", "check_documented", "documented_sigmas"]

DOCUMENTED_STEPS = (4, 10, 25, 50)
RHO = 7.0


def _flow_family(sched) -> bool:
    from diffusion_oracle.validation.pipeline import _is_flow

    return _is_flow(sched)


def documented_sigmas(sched, N: int, *, mu=None):
    """(sigmas without the final entry, relative tolerances, what the formula is, why not)
    for the configuration of ``sched`` (module docstring); sigmas None with the reason where
    this module documents no formula for it."""
    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import diffusers_name
    from diffusion_oracle.verification.tolerances import LAMBDA

    cfg = sched.config
    u32 = 2.0**-24
    name = diffusers_name(sched)
    options = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
               if cfg.get(k, False)]  # fmt: skip
    if _flow_family(sched):
        if options or cfg.get("shift_terminal") or cfg.get("invert_sigmas"):
            return None, None, "", f"flow sigmas with {options or 'shift_terminal/invert'}"
        if not name.startswith("FlowMatch"):
            return None, None, "", "use_flow_sigmas: the flow_shift grid of the multistep solvers"
        T = int(cfg.get("num_train_timesteps", 1000))
        u = np.linspace(1.0, 1.0 / T, N)
        if cfg.get("use_dynamic_shifting", False):
            if mu is None:
                return None, None, "", "dynamic shifting needs mu (set_timesteps(mu=...))"
            if cfg.get("time_shift_type", "exponential") != "exponential":
                return None, None, "", "linear time shift"
            sig = math.exp(mu) / (math.exp(mu) + 1.0 / u - 1.0)
            what = f"exponential time shift mu = {mu:g} of linspace(1, 1/T, N)"
        else:
            s = float(cfg.get("shift", 1.0))
            sig = s * u / (1.0 + (s - 1.0) * u)
            what = f"shift {s:g} of linspace(1, 1/T, N) (Esser et al. 2024, eq. 23)"
        return sig, np.full(N, 4 * u32), what, ""
    if not options:
        return None, None, "", "a timestep spacing (no sigma formula)"
    if len(options) > 1 or options[0] == "use_beta_sigmas":
        return None, None, "", f"{', '.join(options)}"
    if cfg.get("sigma_min") is not None or cfg.get("sigma_max") is not None:
        return None, None, "", "sigma_min / sigma_max set in the configuration"
    ref = training_schedule(sched)
    lab = np.asarray(ref.log_alpha_bar[1:], dtype=np.float64)
    log_sig = 0.5 * np.log(np.expm1(-lab))
    lo, hi = math.exp(log_sig[0]), math.exp(log_sig[-1])
    # what the float32 table knows of its ends: relative LAMBDA sqrt(k + 2) u32 in alpha_bar;
    # d log sigma = -d log alpha_bar / (2 (1 - alpha_bar)) (sigma^2 = (1 - ab) / ab)
    ab = np.exp(lab[[0, -1]])
    k = np.array([0.0, len(lab) - 1.0])
    end_err = LAMBDA * np.sqrt(k + 2.0) * u32 / (2.0 * (1.0 - ab))
    if options[0] == "use_karras_sigmas":
        w = np.linspace(0.0, 1.0, N) if N > 1 else np.zeros(1)
        base = hi ** (1 / RHO) + w * (lo ** (1 / RHO) - hi ** (1 / RHO))
        sig = base**RHO
        # d log sigma_i / d log sigma_end = w_i (end / sigma_i)^(1/rho) for each end
        carry = (w * (lo / sig) ** (1 / RHO) * end_err[0]
                 + (1 - w) * (hi / sig) ** (1 / RHO) * end_err[1])  # fmt: skip
        what = f"Karras sigmas, rho = 7, sigma {lo:.4g} .. {hi:.4g} (Karras et al. 2022, eq. 5)"
    else:
        w = np.linspace(0.0, 1.0, N) if N > 1 else np.zeros(1)
        sig = np.exp((1 - w) * math.log(hi) + w * math.log(lo))
        carry = w * end_err[0] + (1 - w) * end_err[1]
        what = f"exponential sigmas, sigma {lo:.4g} .. {hi:.4g}"
    return sig, 4 * u32 + carry, what, ""


def _scheduler_sigmas(sched):
    """The distinct consecutive sigmas of the run, without the final entry (Heun-type
    schedulers repeat each level for their second stage)."""
    s = np.asarray(sched.sigmas.detach().cpu().double().numpy(), dtype=np.float64)
    keep = [s[0]] + [v for a, v in zip(s[:-1], s[1:], strict=True) if v != a]
    return np.asarray(keep[:-1]) if keep and keep[-1] == 0.0 else np.asarray(keep)


def check_documented(case, *, steps=DOCUMENTED_STEPS):
    """Check 9 of ``case`` (module docstring): the scheduler's sigmas after
    ``set_timesteps(N, **case.set_timesteps)`` against the documented formula at each N;
    the first entry that differs and by how much."""
    from diffusion_oracle.validation.conformance import CheckResult

    name = "documented grid (sigmas vs the published formula)"
    factory = case.factory()
    mu = case.set_timesteps.get("mu")
    worst, first, what = 0.0, None, ""
    for N in steps:
        sched = factory()
        if not hasattr(sched, "sigmas"):
            return CheckResult(name, None, None, "not documented here: no sigma table "
                               "(a timestep spacing)")  # fmt: skip
        want, tol, what, why = documented_sigmas(sched, N, mu=mu)
        if want is None:
            return CheckResult(name, None, None, f"not documented here: {why}")
        try:
            sched.set_timesteps(N, **case.set_timesteps)
        except Exception as exc:  # noqa: BLE001 - reported by check 8
            return CheckResult(name, None, None, f"set_timesteps({N}) raised "
                               f"{type(exc).__name__}: reported by the as-shipped check")
        got = _scheduler_sigmas(sched)
        if len(got) != len(want):
            first = first or (N, None, len(got), len(want))
            continue
        rel = np.abs(got / want - 1.0)
        worst = max(worst, float(rel.max() / max(tol.max(), 1e-300)))
        bad = np.nonzero(rel > tol)[0]
        if len(bad) and first is None:
            i = int(bad[0])
            first = (N, i, float(got[i]), float(want[i]), float(rel[i]), float(tol[i]),
                     float(got[-1]), float(want[-1]), bool(rel[-1] <= tol[-1]))  # fmt: skip
    if first is not None:
        if first[1] is None:
            N, _, ng, nw = first
            return CheckResult(name, False, None, f"N = {N}: {ng} sigmas where the formula "
                               f"({what}) gives {nw}")  # fmt: skip
        N, i, g, w, rel, tol, g_last, w_last, ok_last = first
        last = " (the last sigma)" if i == N - 1 else ""
        tail = "" if ok_last or i == N - 1 else (
            f"; the last sigma {g_last:.6g} where the formula gives {w_last:.6g}")  # fmt: skip
        return CheckResult(
            name, False, rel,
            f"N = {N}, entry {i}{last}: sigma {g:.6g}, the formula gives {w:.6g} (relative "
            f"{rel:.2g}, tolerance {tol:.1g}){tail}; {what}",
            {"steps": N, "entry": i, "got": g, "want": w, "last": [g_last, w_last]},
        )  # fmt: skip
    return CheckResult(name, True, worst, f"{what}: every entry within its float32 tolerance "
                       f"at N = {list(steps)} (worst {worst:.2g} of it)")  # fmt: skip
