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

from diffusion_oracle.validation.checks.common import noise_method

__all__ = [
    "GENERATOR_DOCUMENTED",
    "IMG2IMG_STEPS",
    "IMG2IMG_STRENGTHS",
    "check_generator",
    "check_img2img",
    "img2img_start_levels",
]

IMG2IMG_STEPS = (10, 25)
IMG2IMG_STRENGTHS = (0.3, 0.6, 0.9)
C = 0.5  # the point mass's data coordinate


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
    how = noise_method(sched)
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
    if noise_method(factory()) is None:
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


# ------------------------------------------------------------------- check 12: step's generator
# schedulers whose noise documentedly does not come from step's generator
GENERATOR_DOCUMENTED = {
    "DPMSolverSDEScheduler": "its Brownian tree is seeded by the noise_sampler_seed argument "
                             "(documented), not by step's generator",
}
GENERATOR_STEPS = 10


def check_generator(case, *, steps=GENERATOR_STEPS):
    """Check 12 of ``case``, **step with a generator** (issue 21, usage loops): a stochastic
    configuration run as pipelines run it, ``step(..., generator=torch.Generator().manual_seed
    (s))``, three times: seed 0 under two different global torch seeds, and seed 1. PASS when
    the two seed-0 runs are identical (all noise comes from the generator: a pipeline's seed
    reproduces its image) and seed 1 differs (the generator is used); otherwise the report
    says which (noise from the global RNG, or the generator ignored). Deterministic
    configurations are not applicable; documented exceptions (:data:`GENERATOR_DOCUMENTED`) are
    reported, not judged."""
    import inspect

    import torch

    from diffusion_oracle.reference._checks import positive_int
    from diffusion_oracle.reference.model import ExactModel
    from diffusion_oracle.reference.targets import get_target
    from diffusion_oracle.validation.checks.common import CheckResult
    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import (
        ExactNetwork,
        Pipeline,
        PipelineError,
        drive,
        frame_scales,
        network_convention,
        prepare,
        sample_frame,
        start_level,
    )

    name = "step with a generator (reproducible, used)"
    steps = positive_int(steps, "steps")
    if not case.stochastic:
        return CheckResult(name, None, None, "deterministic: no noise to draw")
    factory = case.factory()
    sched0 = factory()
    why = GENERATOR_DOCUMENTED.get(case.scheduler)
    if "generator" not in inspect.signature(sched0.step).parameters:
        if why:
            return CheckResult(name, None, None, f"not judged: {why}")
        return CheckResult(name, False, None, f"{type(sched0).__name__}.step takes no generator "
                           "although the configuration adds noise")  # fmt: skip
    ref = training_schedule(sched0)
    tgt = get_target("ring8")
    outs = []
    for seed, global_seed in ((0, 0), (0, 1), (1, 0)):
        pipe = Pipeline(set_timesteps=dict(case.set_timesteps),
                        step={**case.step, "generator": torch.Generator().manual_seed(seed)},
                        strength=case.strength, begin_index=case.begin_index)  # fmt: skip
        try:
            sched, labels, begin = prepare(factory, steps, pipe, ref)
            conv = network_convention(sched, ref)
            a0, s0 = frame_scales(sample_frame(sched), start_level(sched, labels, begin, conv))
            g = np.random.default_rng(7)
            x = a0 * tgt.sample(8, rng=g) + s0 * g.standard_normal((8, tgt.d))
            torch.manual_seed(global_seed)
            net = ExactNetwork(ExactModel(tgt, ref, prediction="v"), conv)
            outs.append(drive(factory, net, x, steps, pipe, reference=ref,
                              prepared=(sched, labels, begin)).sample)  # fmt: skip
        except PipelineError as exc:
            return CheckResult(name, None, None, f"N = {steps}: {exc} (the as-shipped check "
                               "reports crashes)")  # fmt: skip
    same_seed = np.array_equal(outs[0], outs[1], equal_nan=True)
    other_seed = not np.array_equal(outs[0], outs[2], equal_nan=True)
    if why and not (same_seed and other_seed):
        return CheckResult(name, None, None, f"not judged: {why}")
    if not same_seed:
        diff = float(np.abs(outs[0] - outs[1]).max())
        return CheckResult(name, False, diff, f"N = {steps}: the same generator seed gives "
                           f"different samples under another global torch seed (max diff "
                           f"{diff:.3g}): noise is drawn outside the generator")  # fmt: skip
    if not other_seed:
        return CheckResult(name, False, 0.0, f"N = {steps}: generator seeds 0 and 1 give the "
                           "same samples: step ignores its generator")  # fmt: skip
    return CheckResult(name, True, 0.0, f"N = {steps}: the same seed reproduces the samples "
                       "under another global seed, another seed changes them")  # fmt: skip
