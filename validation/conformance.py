"""Conformance checks of diffusers schedulers against the reference (issue 6, first part).

Per configuration (a scheduler class with keyword arguments) and step count:

1. **invariants**: timesteps finite, within the training range, non-increasing; model calls per
   run equal to ``len(scheduler.timesteps)``; the run ends at sigma = 0 (the data) where the
   scheduler says so; and each step lands on the time the next call evaluates (the previous
   timestep is the next scheduled one), measured with a point-mass model, for which every
   consistent deterministic step maps x_t = sigma_t eps to sigma_s eps exactly.
2. **same grid**: for schedulers with a reference counterpart, the run against the reference
   sampler on the times the scheduler used, from the same start (and the same noise): maximum
   difference relative to the sample scale. The tolerance is derived from the implementation's
   precision: 10x the difference between the scheduler run in float64 (this package's upcast)
   and as shipped (float32), and at least 1e-9.
3. **parameterization invariance**: the exact model given as epsilon, sample and v_prediction
   gives the same samples (float64), relative 1e-9 of the sample scale.
6. **finite**: no exception and a finite output for every step count 1..12 and the given ones
   (every residue modulo the solver orders).
7. **forward process**: ``add_noise(x0, eps, k)`` equals alpha x0 + sigma eps of the reference
   schedule at n = k + 1 (VP schedulers) or x0 + sigma eps in the VE frame, and every
   ``scale_model_input`` of a run equals the reference x_t, relative to the data scale, within
   T x 2^-24 (diffusers keeps alphas_cumprod as a float32 cumulative product of T factors).

Check 4 (orders) and 5 (tier-3 statistics) per configuration are the next increment: any
scheduler already runs through ``diffusion_oracle.verify`` as a
:class:`~diffusion_oracle.validation.diffusers.SchedulerSampler`, but orders measured on
integer-timestep grids need care (see docs/findings.md, "Measuring diffusers orders").
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from diffusion_oracle.reference.grids import Grid
from diffusion_oracle.reference.model import ExactModel
from diffusion_oracle.reference.targets import get_target

from .diffusers import frame_of, run_scheduler, scheduler_class, training_schedule

__all__ = ["CASES", "Case", "CheckResult", "check_case", "conformance_report"]


@dataclass(frozen=True)
class Case:
    """A scheduler configuration: diffusers class name, constructor kwargs, the name of the
    reference sampler that runs the same algorithm (or None), and the step counts to test."""

    scheduler: str
    kwargs: dict = field(default_factory=dict)
    reference: str | None = None
    steps: tuple = (10, 25)
    order: int | None = None  # the documented convergence order (None: not documented)
    stochastic: bool = False

    @property
    def label(self) -> str:
        kw = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.scheduler}({kw})"

    def factory(self):
        cls = scheduler_class(self.scheduler)
        return lambda: cls(**self.kwargs)

    def sampler(self):
        """This configuration as a sampler for ``diffusion_oracle.verify`` (it declares
        ``order`` and ``stochastic``); verify it on ``training_schedule(case.factory()())``."""
        from .diffusers import SchedulerSampler

        return SchedulerSampler(
            self.factory(), name=self.label, order=self.order, stochastic=self.stochastic
        )


def _reference_sampler(name):
    from diffusion_oracle import DDIM, DDPM, DPMSolverPP2M, DPMSolverPP3M, Euler, Heun

    return {
        "ddim": lambda: DDIM(0.0),
        "ddpm": lambda: DDPM("fixed_small"),
        "euler": Euler,
        "heun": Heun,
        "dpmpp2m": DPMSolverPP2M,
        "dpmpp3m-published": lambda: DPMSolverPP3M("published", warmup="diffusers"),
    }[name]()


CASES = (
    Case("DDIMScheduler", {"clip_sample": False}, "ddim", order=1),
    Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}, "ddim", order=1),
    Case("DDPMScheduler", {"clip_sample": False}, "ddpm", order=1, stochastic=True),
    Case("EulerDiscreteScheduler", {}, "euler", order=1),
    Case("EulerDiscreteScheduler", {"use_karras_sigmas": True}, "euler", order=1),
    Case("HeunDiscreteScheduler", {}, "heun", order=2),
    Case("DPMSolverMultistepScheduler", {}, "dpmpp2m", (15, 25), order=2),
    Case("DPMSolverMultistepScheduler", {"solver_order": 3}, "dpmpp3m-published", (15, 25), 3),
    Case("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, stochastic=True),
    Case("DPMSolverSinglestepScheduler", {}, order=2),
    Case("EulerAncestralDiscreteScheduler", {}, order=1, stochastic=True),
    Case("KDPM2DiscreteScheduler", {}, order=2),
    Case("KDPM2AncestralDiscreteScheduler", {}, stochastic=True),
    Case("LMSDiscreteScheduler", {}),
    Case("PNDMScheduler", {"skip_prk_steps": True}),
    Case("UniPCMultistepScheduler", {}),
    Case("DEISMultistepScheduler", {}, order=2),
    Case("EDMEulerScheduler", {}, order=1),
    Case("FlowMatchEulerDiscreteScheduler", {}, order=1),
    # the configuration space: beta schedules, spacings, sigma options, final sigmas, solvers
    Case("DDIMScheduler", {"clip_sample": False, "beta_schedule": "scaled_linear",
                           "beta_start": 0.00085, "beta_end": 0.012}, "ddim", order=1),
    Case("DDIMScheduler", {"clip_sample": False, "beta_schedule": "squaredcos_cap_v2"}, "ddim",
         order=1),
    Case("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "linspace"}, "ddim", order=1),
    Case("DDIMScheduler", {"clip_sample": False, "rescale_betas_zero_snr": True,
                           "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
         "ddim", order=1),
    Case("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, "euler", order=1),
    Case("EulerDiscreteScheduler", {"use_exponential_sigmas": True}, "euler", order=1),
    Case("EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min"}, order=1),
    Case("HeunDiscreteScheduler", {"use_karras_sigmas": True}, "heun", order=2),
    Case("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "dpmpp2m", (15, 25), 2),
    Case("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, order=2),
    Case("DPMSolverMultistepScheduler", {"solver_type": "heun"}, order=2),
    Case("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver",
                                         "final_sigmas_type": "sigma_min"}, order=2),
    Case("UniPCMultistepScheduler", {"solver_type": "bh1"}),
    Case("EDMDPMSolverMultistepScheduler", {}),
    Case("LCMScheduler", {}, stochastic=True),
    Case("TCDScheduler", {}, stochastic=True),
)  # fmt: skip


@dataclass
class CheckResult:
    """One check of one case: ``passed`` None when not applicable, ``value`` the measured
    deviation (relative to the sample scale where stated), ``detail`` a short reason."""

    name: str
    passed: bool | None
    value: float | None = None
    detail: str = ""


def _quiet():
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="diffusers")


def _start(model, t0, n, seed):
    sch = model.schedule
    a, s = float(sch.alpha(t0)), float(sch.sigma(t0))
    g = np.random.default_rng(seed)
    return a * model.target.sample(n, rng=g) + s * g.standard_normal((n, model.d))


def check_case(case: Case, target="ring8", *, n: int = 256, seed: int = 0) -> list[CheckResult]:
    """Run checks 1, 2, 3, 6 and 7 on ``case``; returns one :class:`CheckResult` per check."""
    _quiet()
    tgt = get_target(target) if isinstance(target, str) else target
    factory = case.factory()
    probe = factory()
    frame = frame_of(probe)
    ref_sch = training_schedule(probe)
    # v: its conversions divide by neither alpha nor sigma alone (zero terminal SNR works)
    model = ExactModel(tgt, ref_sch, prediction="v")
    out = []
    # 1 and 6: invariants and finiteness over step counts
    bad, detail = [], ""
    counts = sorted(set(range(1, 13)) | set(case.steps))
    for N in counts:
        try:
            r = run_scheduler(factory, model, np.zeros((2, tgt.d)) + 0.1, N, rng=seed)
        except Exception as exc:  # noqa: BLE001 - any failure is a finding
            bad.append(N)
            detail = detail or f"N={N}: {type(exc).__name__}: {exc}"[:160]
            continue
        if not np.isfinite(r.sample).all():
            bad.append(N)
            detail = detail or f"N={N}: non-finite output"
    if bad:
        detail = f"{len(bad)} of {len(counts)} step counts fail, first {detail}"
    out.append(
        CheckResult(
            "finite (N = 1..12 and the tested counts)",
            not bad,
            float(len(bad)),
            detail or f"{len(counts)} step counts",
        )
    )
    inv_ok, inv_detail, inv_val = True, "", 0.0
    for N in case.steps:
        sched = factory()
        sched.set_timesteps(N)
        ts = np.asarray([float(k) for k in sched.timesteps])
        r = run_scheduler(factory, model, np.zeros((1, tgt.d)) + 0.1, N, rng=seed)
        problems, notes = [], []
        if not np.isfinite(ts).all():
            problems.append("non-finite timestep")
        if frame in ("vp", "sigma") and ((ts < 0) | (ts > ref_sch.T - 1 + 1e-9)).any():
            problems.append(f"timestep outside [0, {ref_sch.T - 1}]: {ts.min():g}..{ts.max():g}")
        if (np.diff(ts) > 0).any():
            if "Ancestral" in case.scheduler:  # the second stage sits below the next step's sigma
                notes.append("timesteps re-increase between stages (ancestral re-noising)")
            else:
                problems.append("timesteps increase")
        if r.calls != len(ts):
            problems.append(f"{r.calls} model calls for {len(ts)} timesteps")
        sig = getattr(sched, "sigmas", None)
        if sig is not None:
            last = float(np.asarray(sig)[-1])
            documented_zero = sched.config.get("final_sigmas_type", "zero") == "zero"
            if last != 0.0 and documented_zero and "final_sigmas_type" in sched.config:
                problems.append(f"final sigma {last:.3g} with final_sigmas_type='zero'")
            elif last != 0.0:
                notes.append(f"ends at sigma {last:.3g}, not at the data (no zero option)")
        if not case.stochastic:
            land = _landing_error(factory, ref_sch, tgt.d, N)
            inv_val_land = max(land, 0.0)
            if land > 1e-5:
                problems.append(
                    f"steps land off the next call's sigma (relative {land:.1e}): the "
                    "previous timestep is not the next scheduled one"
                )
            notes.append(f"landing error {inv_val_land:.1e}")
        if problems:
            inv_ok, inv_detail = False, f"N={N}: " + "; ".join(problems)
        elif notes:
            inv_detail = "; ".join(notes)
        inv_val = max(inv_val, float(r.calls) / N)
    out.append(
        CheckResult(
            "invariants (timesteps, calls, final sigma)",
            inv_ok,
            inv_val,
            (inv_detail + "; " if inv_detail else "") + f"model calls per step {inv_val:.3g}",
        )
    )
    # 2: same grid as the reference sampler, same start and noise
    if case.reference is None:
        out.append(CheckResult("same grid as the reference", None, None, "no counterpart"))
    else:
        worst, tol_worst, ok = 0.0, 0.0, True
        for N in case.steps:
            r0 = run_scheduler(factory, model, np.zeros((1, tgt.d)) + 0.1, N, rng=seed)
            times = [r0.t[0]] + [b for a, b in zip(r0.t, r0.t[1:], strict=False) if b != a]
            x = _start(model, times[0], n, seed)
            run = run_scheduler(factory, model, x, N, rng=np.random.default_rng(seed + 1))
            f32 = run_scheduler(
                factory, model, x, N, rng=np.random.default_rng(seed + 1), upcast=False
            )
            grid = Grid(ref_sch, np.asarray(times), final_zero=True)
            y = _reference_sampler(case.reference)(
                model, x, grid, rng=np.random.default_rng(seed + 1)
            )
            scale = max(1.0, float(np.abs(y).max()))
            dev = float(np.abs(run.sample - y).max()) / scale
            tol = max(1e-9, 10.0 * float(np.abs(run.sample - f32.sample).max()) / scale)
            worst, tol_worst = max(worst, dev), max(tol_worst, tol)
            ok = ok and dev <= tol
        out.append(
            CheckResult(
                f"same grid as the reference ({case.reference})",
                ok,
                worst,
                f"max diff/scale {worst:.2e}, tolerance {tol_worst:.1e}",
            )
        )
    # 3: parameterization invariance (the types the scheduler supports)
    if frame in ("vp", "sigma"):
        out.append(_check_invariance(case, model, tgt, n, seed))
    else:
        out.append(CheckResult("prediction_type invariance (eps, x0, v)", None, None, "fixed"))
    # 7: add_noise against the forward process; scale_model_input along a run
    out.append(_check_forward(factory, model, frame, seed))
    return out


class _PointMass:
    """The exact model of a point mass at 0: x0 = 0, eps = x/sigma. Every consistent
    deterministic step maps x_t = sigma_t eps to sigma_s eps exactly, so the ratio of |x| between
    consecutive calls measures where each step landed."""

    prediction = "x0"

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, x, t):
        return np.zeros_like(x)


def _landing_error(factory, schedule, d, N):
    """max_i | |x_{i+1}|/|x_i| / (sigma_{i+1}/sigma_i) - 1 | over consecutive model calls."""
    r = run_scheduler(factory, _PointMass(schedule), np.full((1, d), 0.5), N, rng=0)
    nrm, sig = np.asarray(r.norms), np.asarray(r.sigma)
    if len(nrm) < 2:
        return 0.0
    ratio = (nrm[1:] / nrm[:-1]) / (sig[1:] / sig[:-1])
    return float(np.abs(ratio - 1.0).max())


def _check_invariance(case, model, tgt, n, seed):
    name = "prediction_type invariance (eps, x0, v)"
    N = case.steps[0]
    factory = case.factory()
    t0 = run_scheduler(factory, model, np.zeros((1, tgt.d)) + 0.1, N).t[0]
    x = _start(model, t0, n, seed)
    cls = scheduler_class(case.scheduler)
    outs, skipped = {}, []
    zero_snr = float(model.schedule.alpha(1.0)) == 0.0
    for pt in ("epsilon", "sample", "v_prediction"):
        if zero_snr and pt == "epsilon":
            skipped.append("epsilon (undefined at zero terminal SNR)")
            continue
        fac = lambda pt=pt: cls(**{**case.kwargs, "prediction_type": pt})  # noqa: E731
        try:
            outs[pt] = run_scheduler(fac, model, x, N, rng=np.random.default_rng(seed + 2)).sample
        except (NotImplementedError, ValueError) as exc:
            if "prediction_type" not in str(exc):
                return CheckResult(name, False, None, repr(exc)[:160])
            skipped.append(pt)  # documented as unsupported by the scheduler
    if len(outs) < 2:
        return CheckResult(name, None, None, f"supports only {sorted(outs)}")
    f32 = run_scheduler(factory, model, x, N, rng=np.random.default_rng(seed + 2), upcast=False)
    first = next(iter(outs.values()))
    scale = max(1.0, float(np.abs(first).max()))
    dev = max(float(np.abs(v - first).max()) for v in outs.values()) / scale
    # the conversions are exact in float64; what remains is the scheduler's float32 sigmas,
    # measured as 10x the float64-vs-float32 difference of the same run
    tol = max(1e-9, 10.0 * float(np.abs(outs.get("epsilon", first) - f32.sample).max()) / scale)
    note = f"; {', '.join(skipped)} unsupported" if skipped else ""
    return CheckResult(
        name, dev <= tol, dev, f"max diff/scale {dev:.2e}, tolerance {tol:.1e}{note}"
    )


def _check_forward(factory, model, frame, seed):
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


def conformance_report(cases=CASES, target="ring8", *, progress: bool = True) -> tuple[str, list]:
    """Markdown report: one row per case, one column per check (verdict and measured value)."""
    import diffusers

    rows = []
    it = cases
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(cases, desc="diffusers conformance", unit="config")
    for case in it:
        try:
            rows.append((case, check_case(case, target)))
        except Exception as exc:  # noqa: BLE001
            rows.append((case, [CheckResult("run", False, None, repr(exc)[:160])]))
    names = []
    for _, res in rows:
        for c in res:
            key = c.name.split(" (")[0]
            if key not in names:
                names.append(key)
    lines = [
        f"# diffusers {diffusers.__version__} conformance (target {target}, exact model)",
        "",
        "| scheduler (config) | " + " | ".join(names) + " | verdict |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for case, res in rows:
        by = {c.name.split(" (")[0]: c for c in res}
        cells = []
        for nm in names:
            c = by.get(nm)
            if c is None or c.passed is None:
                cells.append("n/a" if c is None else f"n/a ({c.detail})")
            else:
                cells.append(("PASS" if c.passed else "FAIL") + f": {c.detail}")
        verdict = "FAIL" if any(c.passed is False for c in res) else "PASS"
        lines.append(f"| `{case.label}` | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n", rows
