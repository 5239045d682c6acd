"""Check 8, **as shipped** (issue 21): a configuration run the way users run it.

The pipeline-faithful loop (:func:`validation.pipeline.drive`: set_timesteps, scale_model_input,
the exact network called with the label, step) in float32, the dtype diffusers ships, for every
step count N in :data:`SHIPPED_STEPS` (1..50, 100, 250, 1000), and in float16 and bfloat16
(half-precision latents and network outputs, as half-precision pipelines run them) for the same
N. Per run it records, and the check names, every N where

- the scheduler (or its configuration) **raises** (who raised, the exception, the call);
- the output is **not finite**;
- the **timesteps repeat** where the method does not repeat them, or there are not as many
  distinct timesteps as the method's documented calls need: N for one call per step; Heun
  (Karras et al. 2022, Alg. 1), DPM-Solver-2 ancestral (its midpoint is sigma_next) and PNDM's
  PLMS warm-up repeat one level per step or once; KDPM2 (DPM-Solver-2, Lu et al. 2022, Alg. 1
  with the log-midpoint) asks a new midpoint level per step: 2N - 1 distinct labels. Integer
  labels that repeat on distinct levels (Karras sigmas denser than the training steps) are the
  quantization the label check judges: reported, not a repeated step;
- the **model calls** differ from the method's calls per step (:func:`expected_calls`).

An N the scheduler refuses with a ValueError / TypeError from ``set_timesteps`` where it
documents that limit (:data:`DOCUMENTED_LIMITS`: LCM and TCD above their original steps) is
reported, not judged; any other refusal is a crash. A failure of diffusion-oracle's own driver
is reported and leaves the check not judged, never charged to the scheduler.

float32 decides the verdict (the dtype the scheduler is shipped and documented in); the half
precisions are reported with their N lists (a scheduler may document them unsupported).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SHIPPED_STEPS", "HALF_DTYPES", "check_shipped", "expected_calls", "shipped_runs"]

SHIPPED_STEPS = tuple(range(1, 51)) + (100, 250, 1000)
HALF_DTYPES = ("float16", "bfloat16")


def expected_calls(name: str, config, N: int):
    """(model calls, distinct timesteps) a run of N steps documents, or None where this
    module does not know the method's pattern (then only repeats are judged). Sources: the
    algorithms as published (Heun: Karras et al. 2022, Alg. 1, a second call per step except
    the last, into sigma = 0; DPM-Solver-2: Lu et al. 2022, Alg. 1, and DPM-Solver++(2S) SDE:
    Lu et al. 2023, Alg. 1, a midpoint call per step except the last; PLMS: Liu et al. 2022,
    Sec. 3.3, one extra call at the first step when the Runge-Kutta warm-up is skipped, N > 1)
    and one call per step for every other diffusers scheduler."""
    if name in HEUN_PATTERN:
        return 2 * N - 1, N
    if name in ("KDPM2DiscreteScheduler", "DPMSolverSDEScheduler"):
        return 2 * N - 1, 2 * N - 1
    if name == "PNDMScheduler":
        if not config.get("skip_prk_steps", False):
            return None  # the PRK warm-up: 4 calls on each of its first steps
        return (N + 1 if N > 1 else 1), N  # one step alone has no second step to warm up
    return N, N


# a second call per step at the next step's level: Heun (Karras et al. 2022, Alg. 1), and
# DPM-Solver-2 ancestral, whose log-midpoint of sigma and sigma_down = sigma_next^2 / sigma
# (eta = 1) is sigma_next itself
HEUN_PATTERN = ("HeunDiscreteScheduler", "FlowMatchHeunDiscreteScheduler",
                "KDPM2AncestralDiscreteScheduler")  # fmt: skip


def _repeats(labels, name, levels=None, exact=None, exact_tol=None):
    """(repeated, quantized): calls whose label repeats an earlier one where the method does
    not (Heun-pattern methods repeat each level once, consecutively; PNDM its warm-up level
    once), split by whether the levels differ (``levels``: the run's sigmas where the
    scheduler keeps an inference table): integer labels rounded from distinct levels repeat
    by quantization (the label check judges them), equal levels are a repeated step.
    ``exact`` the exact label of each level, ``exact_tol`` how far a float32 label may sit from
    it beyond the half unit of integer rounding (:func:`_exact_label_tolerance`)."""
    seen, bad, quant = {}, [], []
    for i, lab in enumerate(labels):
        if lab in seen:
            j = seen[lab]
            allowed = (name in HEUN_PATTERN + ("PNDMScheduler",)) and j == i - 1
            if not allowed:
                # the nearest training step of a distinct level (half a unit, and the float32
                # label's own rounding): quantization; a level off its label: a repeated step
                nearest = (levels is not None and exact is not None and i < len(levels)
                           and levels[i] != levels[j]
                           and abs(lab - exact[i]) <= 0.5 + (exact_tol[i] if exact_tol
                                                             else 0.0))  # fmt: skip
                (quant if nearest else bad).append(i)
        seen.setdefault(lab, i)
    return bad, quant


def _exact_label_tolerance(conv, lam: float, label: float) -> float:
    """How far a label stored in float32 may sit from the exact label of a level read off a
    float32 sigma, through rounding alone: the label's own storage (u32 |label|) and the sigma's
    (relative u32: diffusers builds its tables in float64 and stores them once, 2 u32 in
    lambda) through d label / d lambda; LAMBDA times (verification.tolerances)."""
    from diffusion_oracle.verification.tolerances import LAMBDA

    u32 = 2.0**-24
    if not math.isfinite(lam):
        return LAMBDA * u32 * abs(label)
    h = 1e-4
    slope = abs(float(conv.label_of(lam + h)) - float(conv.label_of(lam - h))) / (2 * h)
    return LAMBDA * (u32 * abs(label) + slope * 2.0 * u32)


def shipped_runs(factory, *, dtype="float32", steps=SHIPPED_STEPS, target="ring8", seed=0,
                 call=None):  # fmt: skip
    """Run ``factory()``'s scheduler for every N in ``steps`` in ``dtype`` with the exact
    network of ``target`` on 2 draws, with ``call`` the pipeline's set_timesteps / step keyword
    arguments, strength and begin index (a dict of :class:`validation.pipeline.Pipeline`
    fields); returns {N: record} with the record's ``error`` (the PipelineError text, who
    raised), ``finite``, ``calls``, ``labels`` (the run's timesteps)."""
    from diffusion_oracle.reference.model import ExactModel
    from diffusion_oracle.reference.targets import get_target
    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import (
        ExactNetwork,
        Pipeline,
        PipelineError,
        _level_of_sigma,
        drive,
        frame_scales,
        inference_sigmas,
        network_convention,
        prepare,
        sample_frame,
        start_level,
    )

    tgt = get_target(target) if isinstance(target, str) else target
    g = np.random.default_rng(seed)
    x0 = tgt.sample(2, rng=g)
    out = {}
    ref = None
    for N in steps:
        custom = [v for k, v in (call or {}).get("set_timesteps", {}).items()
                  if k in ("timesteps", "sigmas") and v is not None]  # fmt: skip
        rec = {"error": None, "who": None, "where": None, "finite": None, "calls": None,
               "labels": None, "levels": None, "exact": None, "exact_tol": None,
               "steps": len(custom[0]) if custom else N}  # fmt: skip
        out[N] = rec
        pipe = Pipeline(dtype=dtype, **(call or {}))
        try:
            ref = ref or training_schedule(factory())
            prepared = prepare(factory, N, pipe, ref)
            sched, labels, begin = prepared
            # the timesteps as set: judged for repeats even when the run then raises
            rec["labels"] = [float(v) for v in labels]
            conv = network_convention(sched, ref)
            if inference_sigmas(sched):
                sig = sched.sigmas.detach().double().numpy()
                rec["levels"] = [float(v) for v in sig[begin:begin + len(labels)]]
                frame0 = sample_frame(sched)
                lams = [_level_of_sigma(frame0, v) for v in rec["levels"]]
                rec["exact"] = [float(conv.label_of(v)) for v in lams]
                rec["exact_tol"] = [_exact_label_tolerance(conv, v, e)
                                    for v, e in zip(lams, rec["exact"], strict=True)]
            frame = sample_frame(sched)
            lam0 = start_level(sched, labels, begin, conv)
            a, s = frame_scales(frame, lam0)
            x = (a if math.isfinite(a) else 1.0) * x0 + min(s, 1e30) * g.standard_normal(x0.shape)
            net = ExactNetwork(ExactModel(tgt, ref), conv, dtype=dtype)

            def draw(shape, dt, g=g):
                import torch

                return torch.from_numpy(g.standard_normal(shape)).to(dt or torch.float32)

            r = drive(factory, net, x, N, pipe, draw=draw, reference=ref, prepared=prepared)
        except PipelineError as exc:
            rec["error"], rec["who"], rec["where"] = str(exc), exc.who, exc.where
            rec["refused"] = (exc.where.endswith("set_timesteps")
                              and isinstance(exc.__cause__, (ValueError, TypeError)))  # fmt: skip
            continue
        rec["finite"] = bool(np.isfinite(r.sample).all())
        rec["calls"], rec["labels"] = r.calls, list(r.labels)
    return out


# arguments a scheduler documents as invalid, refused with a ValueError from set_timesteps:
# LCM / TCD need N <= original_inference_steps (their docstrings; the consistency-distilled
# network was trained on that many skipped steps)
DOCUMENTED_LIMITS = {
    "LCMScheduler": lambda cfg, N: N > int(cfg.get("original_inference_steps", 50)),
    "TCDScheduler": lambda cfg, N: N > int(cfg.get("original_inference_steps", 50)),
}


def _summarise(name, config, runs):
    """Lists of (N, detail): crashes, non-finite outputs, repeated timesteps (a repeated
    step), wrong model calls; and, reported only: N the scheduler refuses (a ValueError or
    TypeError from set_timesteps: an argument it documents as invalid, e.g. LCM above its
    original steps), and labels repeated by quantization (distinct levels)."""
    crash, nonfinite, repeat, calls, refused, quant, ours = [], [], [], [], [], [], []
    limit = DOCUMENTED_LIMITS.get(name)
    for N, rec in runs.items():
        if rec["error"] and rec.get("refused") and limit is not None and limit(config, N):
            refused.append((N, rec["error"]))
        elif rec["error"] and rec["who"] == "diffusion-oracle":
            ours.append((N, rec["error"]))  # the driver's own failure: never the scheduler's
        elif rec["error"]:
            crash.append((N, rec["error"]))
        elif not rec["finite"]:
            nonfinite.append((N, "non-finite output"))
        if rec["labels"] is None:
            continue  # set_timesteps itself raised
        lab = rec["labels"]
        rep, qrep = _repeats(lab, name, rec.get("levels"), rec.get("exact"),
                             rec.get("exact_tol"))  # fmt: skip
        want = expected_calls(name, config, rec.get("steps", N))
        distinct = len(set(lab))
        if qrep:
            quant.append((N, f"label {lab[qrep[0]]:g} repeated at call {qrep[0]} on a "
                             "different level"))  # fmt: skip
        if rep or (want is not None and not qrep and distinct < want[1]):
            at = rep[0] if rep else None
            detail = (f"label {lab[at]:g} repeated at call {at}" if at is not None else
                      f"{distinct} distinct timesteps for {want[1]}")  # fmt: skip
            repeat.append((N, detail))
        if rec["calls"] is not None and want is not None and rec["calls"] != want[0]:
            calls.append((N, f"{rec['calls']} model calls for {want[0]}"))
    return crash, nonfinite, repeat, calls, refused, quant, ours


def _ns(items) -> str:
    """'4..25, 31 (12 values)' for a list of (N, detail)."""
    ns = sorted(n for n, _ in items)
    runs, start = [], None
    for i, n in enumerate(ns):
        if start is None:
            start = n
        if i + 1 == len(ns) or ns[i + 1] != n + 1:
            runs.append(f"{start}..{n}" if n > start else f"{n}")
            start = None
    return ", ".join(runs) + (f" ({len(ns)} values)" if len(ns) > 1 else "")


def check_shipped(case, *, steps=SHIPPED_STEPS, half=True, target="ring8", seed=0):
    """Check 8 of ``case`` (module docstring): a CheckResult judged on the float32 runs, the
    half-precision findings in its detail and data."""
    from diffusion_oracle.validation.checks.common import CheckResult

    factory = case.factory()
    name = case.scheduler
    config = dict(case.kwargs)
    parts, data, ok = [], {}, True
    for dtype in ("float32",) + (HALF_DTYPES if half else ()):
        call = {"set_timesteps": dict(case.set_timesteps), "step": dict(case.step),
                "strength": case.strength, "begin_index": case.begin_index}  # fmt: skip
        runs = shipped_runs(factory, dtype=dtype, steps=steps, target=target, seed=seed,
                            call=call)  # fmt: skip
        crash, nonfinite, repeat, calls, refused, quant, ours = _summarise(name, config, runs)
        data[dtype] = {"crash": crash, "non_finite": nonfinite, "repeated": repeat,
                       "calls": calls, "refused": refused, "quantized": quant,
                       "driver": ours}  # fmt: skip
        found = []
        if crash:
            found.append(f"raises at N = {_ns(crash)}, first: {crash[0][1][:160]}")
        if nonfinite:
            found.append(f"non-finite output at N = {_ns(nonfinite)}")
        if repeat:
            found.append(f"repeated timesteps at N = {_ns(repeat)} (N = {repeat[0][0]}: "
                         f"{repeat[0][1]})")  # fmt: skip
        if calls:
            found.append(f"model calls off at N = {_ns(calls)} (N = {calls[0][0]}: "
                         f"{calls[0][1]})")  # fmt: skip
        ok_here = not found
        if ours:
            found.append(f"diffusion-oracle's driver failed at N = {_ns(ours)} (not judged: "
                         f"{ours[0][1][:120]})")  # fmt: skip
            ok_here = None if ok_here else ok_here
        if refused:
            found.append(f"refuses N = {_ns(refused)} (reported: {refused[0][1][:120]})")
        if quant:
            found.append(f"integer labels repeat on distinct levels at N = {_ns(quant)} "
                         f"(reported: quantization, judged by the label check)")  # fmt: skip
        if dtype == "float32":
            ok = ok_here
            parts.append("float32: " + ("; ".join(found) if found else
                                        f"{len(steps)} step counts clean"))  # fmt: skip
        else:
            parts.append(f"{dtype} (reported): " + ("; ".join(found) if found else "clean"))
    worst = len(data["float32"]["crash"]) + len(data["float32"]["non_finite"]) + len(
        data["float32"]["repeated"]) + len(data["float32"]["calls"])  # fmt: skip
    return CheckResult("as shipped (float32, N = 1..50, 100, 250, 1000)", ok, float(worst),
                       " | ".join(parts), data)  # fmt: skip
