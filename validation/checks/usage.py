"""Check 10, **img2img start** (issue 21, usage loops): the noise an img2img pipeline adds.

diffusers' img2img pipelines run, after ``set_timesteps(N)``,

    timesteps, N = get_timesteps(N, strength)        # set_begin_index(N - int(N strength))
    latents = scheduler.add_noise(image_latents, noise, timesteps[:1])   # FlowMatch: scale_noise
    for t in timesteps: ...                          # the network is told timesteps[0] first

so ``add_noise`` must put the latents exactly at the level the first label names: x =
alpha x0 + sigma eps with (alpha, sigma) of that level, in the scheduler's frame (VP for the
discrete schedulers, x0 + sigma eps for the sigma schedulers, (1 - sigma) x0 + sigma eps for
flow). Read on a point mass (x0 = c on coordinate 0, the noise on coordinate 1, so that the
added noise's coefficients are the two coordinates of the result), at N = 10 and 25 with
strength 0.3, 0.6 and 0.9, the level of ``add_noise`` is compared, in label units, with the
level ``step`` assumes: the scheduler's own sigma at the begin index where it keeps an inference
table (Karras sigmas sit between integer labels), else the level the label names
(:class:`validation.pipeline.Convention`).

Tolerance: the scheduler's float32 tables (alpha_bar a cumulative product: relative LAMBDA
sqrt(k + 2) u32, divided by 1 - alpha_bar in log-SNR; each sigma rounded once: 2 u32), the
add_noise arithmetic (LAMBDA 4 u32 on each coordinate, twice in lambda), through d label /
d lambda; no half unit: add_noise must hit the level the step assumes, not the nearest integer.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["IMG2IMG_STEPS", "IMG2IMG_STRENGTHS", "check_img2img", "img2img_start_levels"]

IMG2IMG_STEPS = (10, 25)
IMG2IMG_STRENGTHS = (0.3, 0.6, 0.9)
C = 0.5  # the point mass's data coordinate


def _noise_fn(sched):
    if hasattr(sched, "add_noise"):
        return "add_noise"
    if hasattr(sched, "scale_noise"):
        return "scale_noise"
    return None


def img2img_start_levels(factory, N: int, strength: float, *, call=None, reference=None):
    """(label, lambda of the latents add_noise makes, lambda the label names, the
    convention, the frame) for one img2img start, or raises PipelineError naming who."""
    import torch

    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import (
        Pipeline,
        PipelineError,
        _level_of_sigma,
        _scheduler_call,
        inference_sigmas,
        network_convention,
        prepare,
        sample_frame,
    )

    ref = reference or training_schedule(factory())
    kw = dict(call or {})
    kw.pop("strength", None)
    kw.pop("begin_index", None)
    pipe = Pipeline(strength=strength, **kw)
    sched, labels, begin = prepare(factory, N, pipe, ref)
    how = _noise_fn(sched)
    if how is None:
        raise PipelineError("configuration", "the scheduler has no add_noise / scale_noise",
                            where="add_noise")  # fmt: skip
    conv = network_convention(sched, ref)
    frame = sample_frame(sched)
    x0 = torch.tensor([[C, 0.0]], dtype=torch.float32)
    eps = torch.tensor([[0.0, 1.0]], dtype=torch.float32)
    t = sched.timesteps[begin:begin + 1]
    name = type(sched).__name__
    if how == "add_noise":
        x = _scheduler_call(f"{name}.add_noise", sched.add_noise, x0, eps, t, call=0,
                            label=float(labels[0]), dtype=pipe.dtype)  # fmt: skip
    else:
        x = _scheduler_call(f"{name}.scale_noise", sched.scale_noise, x0, t, eps, call=0,
                            label=float(labels[0]), dtype=pipe.dtype)  # fmt: skip
    x = x.detach().double().numpy().reshape(-1)
    a, s = x[0] / C, abs(x[1])
    lam = 2.0 * (math.log(a) - math.log(s)) if a > 0 and s > 0 else (
        math.inf if s == 0 else -math.inf)  # fmt: skip
    # the level step() assumes: the scheduler's own sigma where it keeps an inference table
    # (Karras sigmas sit between the integer labels), else the label's
    if inference_sigmas(sched):
        lam_want = _level_of_sigma(frame, float(sched.sigmas[begin].double()))
    else:
        lam_want = float(conv.log_snr(labels[0]))
    return float(labels[0]), lam, lam_want, conv, frame


def check_img2img(case, *, steps=IMG2IMG_STEPS, strengths=IMG2IMG_STRENGTHS):
    """Check 10 of ``case`` (module docstring)."""
    from diffusion_oracle.validation.checks.common import CheckResult
    from diffusion_oracle.validation.pipeline import PipelineError
    from diffusion_oracle.verification.tolerances import LAMBDA

    name = "img2img start (add_noise after set_begin_index)"
    if case.inverse:
        return CheckResult(name, None, None, "an inversion: no img2img start")
    factory = case.factory()
    if _noise_fn(factory()) is None:
        return CheckResult(name, None, None, "no add_noise / scale_noise")
    call = {"set_timesteps": dict(case.set_timesteps), "step": dict(case.step)}
    u32 = 2.0**-24
    worst, first = 0.0, None
    for N in steps:
        for strength in strengths:
            try:
                label, lam, lam_label, conv, frame = img2img_start_levels(
                    factory, N, strength, call=call)  # fmt: skip
            except PipelineError as exc:
                return CheckResult(name, False, None, f"N = {N}, strength {strength}: {exc}")
            if not (math.isfinite(lam) and math.isfinite(lam_label)):
                if lam == lam_label:
                    continue
                first = first or (N, strength, label, lam, lam_label, math.inf, 0.0, conv)
                continue
            exact, want = float(conv.label_of(lam)), float(conv.label_of(lam_label))
            h = 1e-4
            slope = abs(float(conv.label_of(lam + h) - conv.label_of(lam - h))) / (2 * h)
            one_minus_ab = math.exp(-float(np.logaddexp(0.0, lam)))
            k = max(label, 0.0)
            # float32 alpha_bar (cumulative product) and sigma tables, and add_noise's own
            # arithmetic: 4 u32 on each of the two coordinates, twice in lambda
            tol_lam = LAMBDA * (u32 * math.sqrt(k + 2.0) / max(one_minus_ab, u32) + 2 * u32
                                + 16 * u32)  # fmt: skip
            tol = slope * tol_lam + LAMBDA * u32 * abs(label)
            diff = abs(exact - want)
            worst = max(worst, diff / tol)
            if diff > tol and first is None:
                first = (N, strength, label, lam, lam_label, diff, tol, conv)
    if first is not None:
        N, strength, label, lam, lam_label, diff, tol, conv = first
        sig = conv.describe(label)
        return CheckResult(
            name, False, diff,
            f"N = {N}, strength {strength}: add_noise puts the latents at log-SNR {lam:.5g} "
            f"(label {float(conv.label_of(lam)) if math.isfinite(lam) else lam:.5g}) while the "
            f"first step assumes log-SNR {lam_label:.5g} (the network is told {sig}): off by "
            f"{diff:.3g} "
            f"{conv.unit}, tolerance {tol:.2g}",
        )  # fmt: skip
    return CheckResult(name, True, worst, f"at N = {list(steps)}, strength {list(strengths)} "
                       f"add_noise lands on the level of the first label (worst {worst:.2g} of "
                       "the tolerance)")  # fmt: skip
