"""Check 7 (**forward process**) of the conformance catalogue: ``add_noise(x0, eps, k)`` equals
alpha x0 + sigma eps of the reference schedule at n = k + 1 (VP frame, Ho et al. 2020, eq. 4) or
x0 + sigma eps (VE frame, Karras et al. 2022, Table 1), and every ``scale_model_input`` of a run
equals the reference x_t, relative to the data scale, within T x 2^-24 (diffusers keeps
alphas_cumprod as a float32 cumulative product of T factors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diffusion_oracle.validation.diffusers import run_scheduler

from .common import CheckResult

if TYPE_CHECKING:
    pass

__all__ = [
    "check_forward",
]


def check_forward(factory, model, frame, seed):
    import torch

    sched = factory()
    name = "forward process (add_noise, scale_model_input)"
    if not hasattr(sched, "add_noise"):
        return CheckResult(name, None, None, "no add_noise")
    g = np.random.default_rng(seed + 3)
    x0 = model.target.sample(64, rng=g)
    eps = g.standard_normal(x0.shape)
    sched.set_timesteps(25)
    ks = sched.timesteps[:: max(1, len(sched.timesteps) // 6)]
    worst = 0.0
    try:
        for k in ks:
            kk = k.reshape(1).repeat(len(x0))
            got = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), kk).double().numpy()
            sigmas = getattr(sched, "sigmas", None)
            if frame == "vp" and sigmas is not None:  # VE sigma of timestep k -> (alpha, sigma)
                ts_list = [float(v) for v in np.asarray(sched.timesteps)]
                sv = float(np.asarray(sigmas)[ts_list.index(float(k))])
                a = 1.0 / np.sqrt(1.0 + sv * sv)
                want = a * x0 + a * sv * eps
            elif frame == "vp":
                t = (round(float(k)) + 1) / model.schedule.T
                want = model.schedule.alpha(t) * x0 + model.schedule.sigma(t) * eps
            else:
                sig = float(
                    np.asarray(sched.sigmas)[list(np.asarray(sched.timesteps)).index(float(k))]
                )
                want = x0 + sig * eps  # VE frame
            worst = max(worst, float(np.abs(got - want).max() / max(1.0, np.abs(want).max())))
    except Exception as exc:  # noqa: BLE001
        return CheckResult(name, False, None, repr(exc)[:160])
    r = run_scheduler(factory, model, np.zeros((4, model.d)) + 0.3, 20, rng=seed)
    worst = max(worst, r.input_error / 0.3)
    # add_noise uses the scheduler's float32 alphas_cumprod, a cumulative product of T float32
    # factors: relative error up to ~T x 2^-24 (6e-5 at T = 1000)
    tol = max(1e-6, getattr(model.schedule, "T", 1) * 2.0**-24)
    detail = f"max relative error {worst:.1e} (tolerance {tol:.0e})"
    return CheckResult(name, worst <= tol, worst, detail)
