"""Conformance checks of diffusers schedulers against the reference and exact ground truth.

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
4. **order** (:func:`check_order`): tier-1 exact Gaussian evidence, the W2 of the scheduler's
   exact output law to the ideal law on its own grids at N = 32..512, and the measured order
   against the documented one; judged only where the grid family refines in lambda or the
   reference algorithm attains the declared rate on the same grids.
5. **narrow modes** (:func:`check_narrow_modes`): tier-3 two-sample tests of the scheduler's
   samples on ring8 with mode std 0.025 against the exact law on its own grid (the exact
   marginal at the last call, then its final jump).
6. **finite**: no exception and a finite output for every step count 1..12 and the given ones
   (every residue modulo the solver orders).
7. **forward process**: ``add_noise(x0, eps, k)`` equals alpha x0 + sigma eps of the reference
   schedule at n = k + 1 (VP schedulers) or x0 + sigma eps in the VE frame, and every
   ``scale_model_input`` of a run equals the reference x_t, relative to the data scale, within
   T x 2^-24 (diffusers keeps alphas_cumprod as a float32 cumulative product of T factors).
8. **as shipped** (:mod:`validation.checks.shipped`): the pipeline loop in float32 for N =
   1..50, 100, 250, 1000: every N that raises (who raised), gives non-finite output, repeats a
   timestep the method does not repeat or makes other than the method's model calls; float16
   and bfloat16 reported.
9. **documented grid** (:mod:`validation.checks.documented`): the scheduler's sigmas against
   the formula its configuration documents (flow shift, dynamic shift, Karras, exponential),
   in float64, with the float32 table's tolerance; the first entry that differs.
10. **img2img start** (:mod:`validation.checks.usage`): ``add_noise`` (``scale_noise``)
    after ``set_begin_index`` puts the latents at the level of the first label, as img2img
    pipelines use it (strength 0.3, 0.6, 0.9).
11. **inpainting** (:mod:`validation.checks.inpainting`): the mask-based blend of diffusers'
    inpainting pipelines (RePaint: its step / undo_step loop) puts the known region at the
    level of the scheduler's state at every call (a two-block point-mass probe), ends at the
    image, and samples the exact conditional law (``GaussianMixture.condition``) on a target
    where the replacement method is exact.
12. **step with a generator** (:mod:`validation.checks.usage`): a stochastic configuration's
    noise comes from the generator passed to ``step`` (the same seed reproduces its samples
    under another global seed, another seed changes them).

Each check lives in its own module of :mod:`validation.checks` (``invariants`` 1 and 6,
``same_grid`` 2, ``invariance`` 3, ``order`` 4, ``narrow`` 5, ``forward`` 7, ``shipped`` 8,
``documented`` 9, ``usage`` 10 and 11, ``inverse`` for inversions); this module holds the
catalogue (:data:`CASES`, :data:`NOT_CATALOGUED`), runs it (:func:`check_case`,
:func:`conformance_report`) and draws it (:func:`plot_report`).

Checks 4 and 5 run each configuration refined (:func:`refined_case`: 100x the training steps,
the same continuous schedule), see docs/findings.md 9.

Inversion schedulers (``Case.inverse``: DDIMInverseScheduler) get the inversion's checks:
increasing timesteps and each step starting where the previous one landed (check 1), the
reference ``ddim_invert(model_time="next")`` on the same grid (2), tier 1 against the exact law
at the last timestep and the round trip through the forward scheduler (4,
:func:`check_inverse_order`). Consistency schedulers (LCM, TCD) run checks 4 and 5 with the
exact consistency model (:class:`validation.diffusers.ConsistencyModel`), against the data law
(:func:`check_consistency`, :func:`consistency_narrow_modes`). docs/design.md 33.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffusion_oracle.reference.model import ExactModel
from diffusion_oracle.reference.targets import get_target

from .checks.common import CheckResult, markdown_table, md_cell, parallel_rows, quiet, row_verdict
from .checks.forward import check_forward
from .checks.invariance import check_invariance
from .checks.invariants import check_invariants
from .checks.inverse import check_inverse, check_inverse_order
from .checks.narrow import check_narrow_modes, consistency_narrow_modes, narrow_mode_check
from .checks.order import check_consistency, check_order, refined_case
from .checks.same_grid import check_same_grid
from .diffusers import frame_of, scheduler_class, training_schedule

__all__ = [
    "ALL_CHECKS",
    "PIPELINE_CHECKS",
    "CASES",
    "Case",
    "CheckResult",
    "check_case",
    "check_consistency",
    "check_inverse_order",
    "check_narrow_modes",
    "check_order",
    "conformance_report",
    "consistency_narrow_modes",
    "md_cell",
    "narrow_mode_check",
    "plot_failures",
    "plot_report",
    "refined_case",
]


@dataclass(frozen=True)
class Case:
    """A scheduler configuration: diffusers class name, constructor kwargs, the name of the
    reference sampler that runs the same algorithm (or None), and the step counts to test;
    with what its pipeline passes (``set_timesteps`` and ``step`` keyword arguments,
    ``strength`` or ``begin_index``: :class:`validation.pipeline.Pipeline`), which
    :meth:`pipeline_sampler` runs."""

    scheduler: str
    kwargs: dict = field(default_factory=dict)
    reference: str | None = None
    steps: tuple = (10, 25)
    order: int | None = None  # the documented convergence order (None: not documented)
    stochastic: bool = False
    inverse: bool = False  # an inversion scheduler: data -> noise (DDIMInverseScheduler)
    set_timesteps: dict = field(default_factory=dict)
    step: dict = field(default_factory=dict)
    strength: float | None = None
    begin_index: int | None = None
    # the checks this configuration can be judged by (None: all); the others are reported as
    # not applicable with the reason (the algorithm driver of checks 1-7 does not frame it)
    checks: tuple | None = None

    @property
    def label(self) -> str:
        kw = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        call = [f"set_timesteps({', '.join(f'{k}={v}' for k, v in self.set_timesteps.items())})"
                if self.set_timesteps else "",
                f"step({', '.join(f'{k}={v}' for k, v in self.step.items())})"
                if self.step else "",
                f"strength={self.strength}" if self.strength is not None else "",
                f"begin_index={self.begin_index}" if self.begin_index is not None else ""]
        extra = "; ".join(c for c in call if c)
        return f"{self.scheduler}({kw})" + (f" [{extra}]" if extra else "")

    def factory(self):
        """A function returning a fresh scheduler of this configuration: a deep copy of one
        constructed prototype (KDPM2 runs set_timesteps(num_train_timesteps) in its
        constructor, O(T^2) in its sigma-to-t search: 2.6 s at T = 10^4)."""
        import copy

        proto = []

        def make():
            if not proto:
                proto.append(scheduler_class(self.scheduler)(**self.kwargs))
            return copy.deepcopy(proto[0])

        return make

    def sampler(self):
        """This configuration as a sampler for ``diffusion_oracle.verify`` (it declares
        ``order`` and ``stochastic``); verify it on ``training_schedule(case.factory()())``."""
        from .diffusers import AlgorithmSampler

        return AlgorithmSampler(
            self.factory(), name=self.label, order=self.order, stochastic=self.stochastic
        )

    def pipeline_sampler(self, dtype: str = "float32"):
        """This configuration run as its pipelines run it
        (:class:`validation.diffusers.SchedulerSampler`: the labels given to the network, its
        set_timesteps / step keyword arguments, strength or begin index, in ``dtype``);
        ``sampler.schedule`` is its training schedule."""
        from .diffusers import SchedulerSampler

        factory = self.factory()
        s = SchedulerSampler(factory, name=self.label, order=self.order,
                             stochastic=self.stochastic, dtype=dtype,
                             set_timesteps=self.set_timesteps, step=self.step,
                             strength=self.strength, begin_index=self.begin_index,
                             inverse=self.inverse)  # fmt: skip
        s.schedule = training_schedule(factory())
        return s


# the checks that run a configuration as pipelines run it (any scheduler the driver frames)
PIPELINE_CHECKS = (8, 9, 10, 11, 12)

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
    Case("UniPCMultistepScheduler", {}, order=3),  # UniPC-2 + UniC corrector: order 3
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
    # Karras sigmas refine in lambda with fixed ends: where the declared orders are the rates
    Case("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}, order=2),
    Case("UniPCMultistepScheduler", {"use_karras_sigmas": True}, order=3),
    Case("DEISMultistepScheduler", {"use_karras_sigmas": True}, order=2),
    Case("EDMDPMSolverMultistepScheduler", {}),
    # inversion: the data to the noise, the model called at the destination timestep
    Case("DDIMInverseScheduler", {"clip_sample": False}, "ddim-inverse", order=1, inverse=True),
    Case("DDIMInverseScheduler", {"clip_sample": False, "timestep_spacing": "trailing"},
         "ddim-inverse", order=1, inverse=True),
    Case("LCMScheduler", {}, stochastic=True),
    Case("TCDScheduler", {}, stochastic=True),
    # open upstream bugs (issue 21): found by checks 8 and 9
    Case("DPMSolverMultistepScheduler", {"beta_schedule": "squaredcos_cap_v2",
                                         "use_karras_sigmas": True}, order=2),
    Case("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, order=1),
    # negative controls (issue 21) and more classes on the pipeline route (checks 8, 9)
    Case("EulerDiscreteScheduler", {"prediction_type": "v_prediction"}, "euler", order=1),
    Case("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True},
         set_timesteps={"mu": 0.8}, order=1, checks=PIPELINE_CHECKS),
    Case("DDIMParallelScheduler", {"clip_sample": False}, order=1, checks=PIPELINE_CHECKS),
    Case("DDPMParallelScheduler", {"clip_sample": False}, stochastic=True, checks=PIPELINE_CHECKS),
    Case("DPMSolverMultistepInverseScheduler", {}, order=2, inverse=True, checks=PIPELINE_CHECKS),
    Case("FlowMatchHeunDiscreteScheduler", {}, order=2, checks=PIPELINE_CHECKS),
    Case("SASolverScheduler", {}, stochastic=True, checks=PIPELINE_CHECKS),
    Case("DDPMScheduler", {"clip_sample": False, "beta_schedule": "sigmoid"}, "ddpm", order=1,
         stochastic=True),
    Case("DPMSolverSDEScheduler", {}, stochastic=True, checks=PIPELINE_CHECKS),
    # inpainting with resampling jumps (its own loop: check 11)
    Case("RePaintScheduler", {"clip_sample": False}, stochastic=True, checks=(11,)),
)  # fmt: skip

# Every scheduler class diffusers 0.42 exports that CASES does not catalogue, with the reason
# (tests/test_conformance_shipped.py asserts the coverage against the installed release).
NOT_CATALOGUED = {
    "AmusedScheduler": "masked-token generation (aMUSEd): a discrete state space, no Gaussian "
                       "path (discrete diffusion, issue 26)",
    "VQDiffusionScheduler": "vector-quantized (discrete) diffusion: no Gaussian path (issue 26)",
    "DiscreteDDIMScheduler": "D3PM uniform corruption: a discrete state space (issue 26)",
    "EntropyBoundScheduler": "uniform discrete corruption: a discrete state space (issue 26)",
    "BlockRefinementScheduler": "block-wise commit-by-confidence refinement of discrete tokens",
    "RFD4ProteinaScheduler": "protein-structure flow with temporal score rescaling: needs its "
                             "modality's schedule_mode / noise_mode arguments",
    "PiflowScheduler": "PiFlow: the network outputs a widened grid of velocities (channels "
                       "divisible by n_grid), not a prediction the exact model gives",
    "HeliosScheduler": "Helios video pipeline: set_timesteps needs the pipeline's stage "
                       "configuration (raises KeyError without it)",
    "HeliosDMDScheduler": "Helios distribution-matching distillation: set_timesteps needs the "
                          "pipeline's stage configuration",
    "MiniMaxH3Scheduler": "rectified-flow Euler with its own exponential shift and no "
                          "num_train_timesteps: its label convention is not documented here",
    "SCMScheduler": "sCM consistency sampler: intermediate timesteps only for N = 2 and "
                    "TrigFlow labels (arctan(sigma / sigma_data)), not framed here",
    "CMStochasticIterativeScheduler": "consistency-model sampler: Karras c_noise = 250 "
                                      "log(sigma) labels and the consistency function's "
                                      "boundary scalings, not framed here",
    "FlowMapEulerDiscreteScheduler": "flow-map distillation: the network is told two times "
                                     "(from, to), one label cannot name one level",
    "LTXEulerAncestralRFScheduler": "LTX-Video RF ancestral: labels on the model's own "
                                    "(shifted, resolution-dependent) time, not framed here",
    "CogVideoXDDIMScheduler": "CogVideoX: alphas_cumprod rescaled by snr_shift_scale, a table "
                              "the betas alone do not give; not framed here",
    "CogVideoXDPMScheduler": "CogVideoX DPM: step takes the previous model output and a "
                             "second timestep (timestep_back), a pipeline-specific signature",
    "CosineDPMSolverMultistepScheduler": "Stable Audio's cosine EDM variant: draws its SDE "
                                         "noise from a Brownian tree the probe cannot see",
    "IPNDMScheduler": "improved PNDM on its own (VE) sigma schedule, labels in [0, 1]: "
                      "not framed here",
    "UnCLIPScheduler": "deprecated by diffusers (its docstring: 'do not use this scheduler', "
                       "DDPMScheduler replaces it)",
    "KarrasVeScheduler": "deprecated: no config, removed from the pipelines",
    "ScoreSdeVeScheduler": "predictor-corrector VE SDE: step_pred / step_correct, no step()",
    "DDPMWuerstchenScheduler": "Wuerstchen's continuous-time cosine schedule without "
                               "num_train_timesteps: not framed here",
    "FlowMatchLCMScheduler": "LCM on flow sigmas: needs the exact flow consistency model "
                             "(ConsistencyModel frames the VP tables only)",
}


ALL_CHECKS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)


def check_case(
    case: Case, target="ring8", *, n: int = 256, seed: int = 0, checks=ALL_CHECKS
) -> list[CheckResult]:
    """Run ``checks`` (numbers 1..12, see the module doc) on ``case``; returns one
    :class:`CheckResult` per check, in the order 8, 9, 10, 11, 12, 6, 1, 2, 3, 7, 4, 5."""
    checks = set(checks)
    bad_checks = checks - set(ALL_CHECKS)
    if bad_checks:
        raise ValueError(f"checks must be numbers in {ALL_CHECKS}, got {sorted(bad_checks)}")
    quiet()
    skipped = []
    if case.checks is not None:
        off = sorted(checks - set(case.checks))
        if off:
            skipped.append(CheckResult(
                "checks not applicable", None, None,
                f"checks {off} not run: the algorithm driver of checks 1-7 does not frame this "
                f"configuration (catalogued for checks {list(case.checks)} on the pipeline "
                "route)"))  # fmt: skip
        checks &= set(case.checks)
    tgt = get_target(target) if isinstance(target, str) else target
    factory = case.factory()
    probe = factory()
    frame = frame_of(probe)
    ref_sch = training_schedule(probe)
    # v: its conversions divide by neither alpha nor sigma alone (zero terminal SNR works)
    model = ExactModel(tgt, ref_sch, prediction="v")
    out = []

    def guarded(name, fn):
        # each check on its own: an exception is that check's FAIL, the others still run
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 - any failure is a finding
            res = CheckResult(name, False, None, f"the check raised {exc!r}"[:200])
        out.extend(res if isinstance(res, list) else [res])

    if 8 in checks:
        from .checks.shipped import check_shipped

        guarded("as shipped", lambda: check_shipped(case, target=tgt, seed=seed))
    if 9 in checks:
        from .checks.documented import check_documented

        guarded("documented grid", lambda: check_documented(case))
    if 10 in checks:
        from .checks.usage import check_img2img

        guarded("img2img start", lambda: check_img2img(case))
    if 11 in checks:
        from .checks.inpainting import check_inpainting

        guarded("inpainting", lambda: check_inpainting(case))
    if 12 in checks:
        from .checks.usage import check_generator

        guarded("step with a generator", lambda: check_generator(case))
    out = skipped + out
    if case.inverse:
        if checks & {1, 2, 3, 4, 5, 6, 7}:
            out += check_inverse(case, factory, model, tgt, ref_sch, n, seed, checks)
        return out

    if checks & {1, 6}:
        guarded("finite / invariants", lambda: check_invariants(
            case, factory, model, tgt, frame, ref_sch, seed, checks))  # fmt: skip
    if 2 in checks:
        guarded("same grid as the reference",
                lambda: check_same_grid(case, factory, model, tgt, ref_sch, n, seed))
    if 3 in checks:
        if frame in ("vp", "sigma"):
            guarded("prediction_type invariance (eps, x0, v)",
                    lambda: check_invariance(case, model, tgt, n, seed))
        else:
            out.append(CheckResult("prediction_type invariance (eps, x0, v)", None, None, "fixed"))
    if 7 in checks:
        guarded("add_noise / scale_model_input",
                lambda: check_forward(factory, model, frame, seed))
    if 4 in checks:
        guarded("order (tier 1, exact Gaussian)", lambda: check_order(case, target))
    if 5 in checks:
        guarded("narrow modes (two-sample)", lambda: check_narrow_modes(case, seed=seed))
    return out


def _case_row(case, target, checks):
    try:
        return case, check_case(case, target, checks=checks)
    except Exception as exc:  # noqa: BLE001
        return case, [CheckResult("run", False, None, repr(exc)[:160])]


def conformance_report(
    cases=CASES, target="ring8", *, progress: bool = True, checks=ALL_CHECKS, jobs: int = 1
) -> tuple[str, list]:
    """Markdown report: one row per case, one column per check (verdict and measured value);
    ``checks`` selects check numbers (default all nine; 4, 5 and 8 take most of the time);
    ``jobs`` worker processes, one case each at a time (rows keep the catalogue's order)."""
    import diffusers

    cases = list(cases)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases), desc="diffusers conformance", unit="config")
    rows = parallel_rows(_case_row, [(c, target, tuple(checks)) for c in cases], jobs=jobs,
                         bar=bar)  # fmt: skip
    if bar is not None:
        bar.close()
    names = []
    for _, res in rows:
        for c in res:
            key = c.name.split(" (")[0]
            if key not in names:
                names.append(key)
    table = []
    for case, res in rows:
        by = {c.name.split(" (")[0]: c for c in res}
        cells = []
        for nm in names:
            c = by.get(nm)
            if c is None or c.passed is None:
                cells.append("n/a" if c is None else f"n/a ({c.detail})")
            else:
                cells.append(("PASS" if c.passed else "FAIL") + f": {c.detail}")
        verdict = row_verdict(res)
        table.append([f"`{case.label}`", *cells, verdict])
    lines = [f"# diffusers {diffusers.__version__} conformance (target {target}, exact model)", ""]
    lines += markdown_table(["scheduler (config)", *names, "verdict"], table)
    missing = not_catalogued()
    if missing:
        lines += ["", f"Not catalogued ({len(missing)} of the {len(exported_schedulers())} "
                  f"scheduler classes diffusers {diffusers.__version__} exports):", ""]  # fmt: skip
        lines += markdown_table(["scheduler", "why"], [[f"`{n}`", why]
                                                       for n, why in missing.items()])  # fmt: skip
    return "\n".join(lines) + "\n", rows


def exported_schedulers() -> list:
    """The scheduler classes the installed diffusers exports (names ending in "Scheduler" that
    resolve to a class; those needing a missing optional backend are skipped)."""
    import diffusers

    out = []
    for name in dir(diffusers):
        if not name.endswith("Scheduler"):
            continue
        try:
            obj = getattr(diffusers, name)
        except Exception:  # noqa: BLE001 - a class behind a missing backend
            continue
        if isinstance(obj, type):
            out.append(name)
    return sorted(out)


def not_catalogued() -> dict:
    """{class: reason} for every exported scheduler class CASES does not catalogue; a class
    neither catalogued nor listed in NOT_CATALOGUED appears with "not catalogued: no reason
    recorded" (the coverage test fails on it)."""
    have = {c.scheduler for c in CASES}
    return {n: NOT_CATALOGUED.get(n, "not catalogued: no reason recorded")
            for n in exported_schedulers() if n not in have}  # fmt: skip


def _slug(text: str) -> str:
    """A file-name form of a case label: its characters, cut to 60, and a hash of the whole
    label (two long labels sharing their first characters stay two files)."""
    import hashlib
    import re

    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] + "_" + digest


def _failure_panel(ax, c):
    """One failing check on ``ax``: its ``data["plot"]`` series (the first diverging entry
    marked), the as-shipped step counts by kind, the W2 ladder of an order check, or else its
    detail as text."""
    import textwrap

    data = c.data or {}
    plot = data.get("plot")
    if plot:
        for nm, (xs, ys) in plot["series"].items():
            ax.plot(xs, ys, marker="o", ms=2.5, lw=1, label=nm)
        if plot.get("mark") is not None:
            ax.axvline(plot["mark"], color="tab:red", ls="--", lw=0.8,
                       label="first divergence")  # fmt: skip
        if plot.get("log"):
            ax.set_yscale("log")
        ax.set_xlabel(plot.get("xlabel", ""))
        ax.set_ylabel(plot.get("ylabel", ""))
        ax.legend(fontsize=6)
    elif isinstance(data.get("float32"), dict):
        kinds = ("crash", "non_finite", "repeated", "calls")
        for k, kind in enumerate(kinds):
            ns = [v[0] if isinstance(v, (list, tuple)) else v for v in data["float32"][kind]]
            ax.scatter(ns, [k] * len(ns), s=12, color="tab:red")
        ax.set_yticks(range(len(kinds)), ["raises", "non-finite", "repeated t", "calls off"])
        ax.set_xscale("log")
        ax.set_xlabel("inference steps N (float32, as shipped)")
    elif data.get("w2") and data.get("steps"):
        ax.loglog(data["steps"], data["w2"], marker="o")
        ax.set_xlabel("inference steps N")
        ax.set_ylabel("tier-1 W2")
    else:
        ax.axis("off")
        ax.text(0, 1, textwrap.fill(c.detail, 70), va="top", fontsize=7, family="monospace",
                transform=ax.transAxes)  # fmt: skip
    ax.set_title(textwrap.shorten(c.name, 60), fontsize=8)


def plot_failures(rows, folder, library: str = "diffusers") -> list:
    """One figure per failing row of a report (``conformance_report``'s second value), a panel
    per failing check (:func:`_failure_panel`); returns the paths written."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case, res in rows:
        bad = [c for c in res if c.passed is False]
        if not bad:
            continue
        label = case.label if hasattr(case, "label") else str(case)
        fig, axes = plt.subplots(1, len(bad), figsize=(5.2 * len(bad), 3.8), squeeze=False)
        for ax, c in zip(axes[0], bad, strict=True):
            _failure_panel(ax, c)
        fig.suptitle(f"{library}: {label}"[:140], fontsize=9)
        fig.tight_layout()
        path = folder / f"fail_{library}_{_slug(label)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_report(rows, folder, library: str = "diffusers") -> list:
    """Plots of a report's rows (``conformance_report``'s second value) into ``folder``: the
    tier-1 W2 against N of every configuration with check 4 (log-log, declared-order slopes
    dashed), the same-grid deviations of check 2 against their tolerances, and one figure per
    failing row (:func:`plot_failures`). Returns the paths written."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def label(case):
        return case.label if hasattr(case, "label") else str(case)

    orders = [(label(c), r) for c, res in rows for r in res if r.name.startswith("order") and
              r.data.get("w2")]  # fmt: skip
    if orders:
        fig, ax = plt.subplots(figsize=(9, 6))
        for lab, r in orders:
            n, w = np.asarray(r.data["steps"], float), np.asarray(r.data["w2"], float)
            style = "-" if r.passed is not False else ":"
            if r.data.get("exact"):  # a consistency sampler: exact at every N, no slope
                tag = f"exact: max W2 {r.value:.1e}"
            else:
                tag = f"{r.value:.2f}" if r.value is not None else "n/a"
            line = ax.loglog(n, w, style, marker="o", ms=3, label=f"{lab[:48]} ({tag})")
            p = r.data.get("declared")
            if p:
                ax.loglog(n, w[-1] * (n / n[-1]) ** -p, "--", lw=0.6, color=line[0].get_color())
        ax.set_xlabel("inference steps N")
        ax.set_ylabel("tier-1 W2 to the ideal law (exact Gaussian)")
        ax.set_title(f"{library}: measured orders (dashed: declared slope)")
        ax.legend(fontsize=5, ncol=2)
        path = folder / f"conformance_{library}_orders.png"
        fig.tight_layout()
        fig.savefig(path, dpi=130)
        plt.close(fig)
        paths.append(path)
    same = [(label(c), r) for c, res in rows for r in res if r.name.startswith("same grid") and
            r.value is not None]  # fmt: skip
    if same:
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(same) + 1.5))
        y = np.arange(len(same))
        vals = [max(r.value, 1e-17) for _, r in same]
        colors = ["tab:green" if r.passed else "tab:red" for _, r in same]
        ax.barh(y, vals, color=colors)
        tol = [r.data.get("tolerance") for _, r in same]
        ax.scatter([t if t else np.nan for t in tol], y, marker="|", s=120, color="k",
                   label="tolerance")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yticks(y, [lab[:60] for lab, _ in same], fontsize=6)
        ax.set_xlabel("max |scheduler - reference| / sample scale, same grid and noise")
        ax.set_title(f"{library}: same-grid agreement with the reference")
        ax.legend(fontsize=7)
        path = folder / f"conformance_{library}_same_grid.png"
        fig.tight_layout()
        fig.savefig(path, dpi=130)
        plt.close(fig)
        paths.append(path)
    return paths + plot_failures(rows, folder, library)
