"""The verification harness: ``verify(sampler, ...) -> VerifyReport``, the main job.

verify is a small pipeline; each stage is a module of :mod:`diffusion_oracle.verification`:

1. plan (``plan.py``): the grids, one per step count, of the family the sampler (or its
   reference) declares; whether that family refines; independent random streams.
2. run (``execute.py``): the sampler, with the model wrapped to count and record its calls and
   to read the dtype the sampler computes in.
3. evidence (``evidence.py``), in tiers kept apart:
   tier 1, exact: on the Gaussian with the target's mean and covariance the exact model is
   affine, so the sampler's output law is computed exactly by probing it as an affine map (no
   Monte Carlo): W2 to the ideal law on the grid (the discretisation error, whose slope is the
   order), to a reference's law on the same grid, and the prior mismatch.
   tier 2, pathwise: a deterministic sampler on the mixture, from the same starts as the exact
   probability-flow map: RMS endpoint error and its order.
   tier 3, statistical: samples at one step count against the exact mixture (responsibilities,
   projected KS, two-sided NLL, MMD) at a declared family false-alarm rate.
   landing: the sampler on a point mass must return the point (its final step reaches sigma=0).
4. judge (``judge.py``, ``diagnose.py``): each check a row with its verdict and the numbers
   behind it; tolerances from error models (``tolerances.py``), never from the run under test;
   a failed same-grid comparison names its first divergence, a failed statistical test says
   whether the grid's lowest level explains it.
5. report (``report.py``): PASS / FAIL / INCONCLUSIVE with the checks that decided it; text,
   JSON, markdown, plots.

Each check runs on its own: an exception inside one becomes that check's FAIL row and the
others still run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import traceback

import numpy as np

from diffusion_oracle.reference import ExactModel, GaussianMixture, get_target
from diffusion_oracle.reference.parameterization import PREDICTIONS
from diffusion_oracle.reference.schedules import DiscreteSchedule, Schedule, VPLinear
from diffusion_oracle.reference.stats import responsibility_sample_size
from diffusion_oracle.verification.diagnose import first_divergence, grid_floor
from diffusion_oracle.verification.evidence import (
    data_m2,
    landing,
    mmd_null_cached,
    moment_gaussian,
    prior_shift,
    tier1,
    tier2,
    tier3,
)
from diffusion_oracle.verification.judge import (
    ERROR_FLOOR,
    ORDER_WINDOW,
    PATH_FLOOR,
    floor_at,
    judge_calls,
    judge_landing,
    judge_order,
    judge_prior,
    judge_reference,
    judge_runs,
    judge_tier3,
)
from diffusion_oracle.verification.plan import (
    VALID_KINDS,
    choose_grid,
    default_t_end,
    family_of,
    plan_grids,
)
from diffusion_oracle.verification.report import (
    Check,
    OrderFit,
    StepResult,
    Verdict,
    VerifyReport,
)
from diffusion_oracle.verification.tolerances import (
    dtype_name,
    prior_tolerance,
    rounding_tolerance,
)

__all__ = [
    "verify",
    "VerifyReport",
    "Report",
    "Verdict",
    "Check",
    "StepResult",
    "OrderFit",
    "fit_order",
    "fit_order_pathwise",
    "DEFAULT_STEPS",
]

Report = VerifyReport  # the name of earlier releases
DEFAULT_STEPS = (8, 16, 32, 64, 128, 256, 512)
TIER3_ALPHA = 0.01  # family false-alarm rate of tier 3, split equally over its four tests
TIER3_POWER = 0.8  # power at which n resolves the smallest effect (ground-truth.md Sec. 4)
__all__ += ["ORDER_WINDOW", "ERROR_FLOOR", "PATH_FLOOR", "default_t_end"]


def fit_order(steps, errors, declared=None, *, floor=ERROR_FLOOR) -> OrderFit | None:
    """Fit the order from errors at geometric step counts (see :class:`OrderFit`); errors at or
    below ``floor`` (a number, or a dict N -> floor) are round-off, not slope."""
    pts = [
        (n, e)
        for n, e in zip(steps, errors)
        if e is not None and np.isfinite(e) and e > floor_at(floor, n)
    ]
    if len(pts) < 2:
        return None
    ns = np.array([p[0] for p in pts], dtype=float)
    es = np.array([p[1] for p in pts], dtype=float)
    local = [
        float(-np.log(es[i + 1] / es[i]) / np.log(ns[i + 1] / ns[i])) for i in range(len(ns) - 1)
    ]
    w = slice(max(0, len(ns) - 3), len(ns))
    slope = float(-np.polyfit(np.log(ns[w]), np.log(es[w]), 1)[0])
    pre = []
    if declared:
        lo, hi = declared + ORDER_WINDOW[0], declared + ORDER_WINDOW[1]
        pre = [int(ns[i]) for i, s in enumerate(local) if not lo <= s <= hi]
    return OrderFit(slope, local, [int(n) for n in ns[w]], pre)


def fit_order_pathwise(steps, per_start, declared=None, *, floor=PATH_FLOOR) -> OrderFit | None:
    """The pathwise order: the median over starts of each start's own fitted slope.

    The order of a method is the same at every start in the asymptotic regime, but the error
    constant is not: a few starts near a boundary between modes, where the flow map is most
    sensitive, carry most of the RMS error and reach the asymptotic regime last. The RMS error's
    slope then depends on which starts were drawn (measured: Heun on ring8 at N = 64..256 gives
    1.73 or 2.05 for two seeds); the median per-start slope does not (2.08 and 2.08). ``local``
    are the medians of the per-start local slopes; ``window`` the last three step counts."""
    ns = [n for n in steps if n in per_start]
    if len(ns) < 2:
        return None
    E = np.array([per_start[n] for n in ns])  # (len(ns), starts)
    logn = np.log(np.array(ns, dtype=float))
    w = slice(max(0, len(ns) - 3), len(ns))
    slopes, locals_ = [], []
    fl = np.array([floor_at(floor, n) for n in ns])
    for j in range(E.shape[1]):
        ok = E[w, j] > fl[w]
        if ok.sum() >= 2:
            slopes.append(-np.polyfit(logn[w][ok], np.log(E[w, j][ok]), 1)[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            loc = -np.diff(np.log(E[:, j])) / np.diff(logn)
        locals_.append(np.where((E[1:, j] > fl[1:]) & (E[:-1, j] > fl[:-1]), loc, np.nan))
    if len(slopes) < max(3, E.shape[1] // 2):  # most starts at the floor: no order to read
        return None
    slope = float(np.median(slopes))
    lo = (declared if declared is not None else 1.0) + ORDER_WINDOW[0]
    reached = float(np.mean(np.array(slopes) >= lo))  # the share of starts at the order
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            local = [float(v) for v in np.nanmedian(np.array(locals_), axis=0)]
    pre = []
    if declared:
        lo, hi = declared + ORDER_WINDOW[0], declared + ORDER_WINDOW[1]
        pre = [int(ns[i]) for i, v in enumerate(local) if np.isfinite(v) and not lo <= v <= hi]
    return OrderFit(slope, local, [int(n) for n in ns[w]], pre, reached)


class _Accelerated:
    """The torch side of verify(device=...): the torch sampler, model, mixture and statistics."""

    @classmethod
    def make(cls, device, sampler, target, schedule, prediction):
        if device is None and _no_gpu_driver():
            return None  # the default on a machine without a GPU: no torch import to ask
        try:
            import torch
        except ImportError as err:
            if device is None:
                return None
            raise ValueError(
                f"device={device!r} needs torch: pip install 'diffusion-oracle[torch]'"
            ) from err
        if device is None:
            if not torch.cuda.is_available():
                return None
            device = "cuda"
        return cls(device, sampler, target, schedule, prediction)

    def __init__(self, device, sampler, target, schedule, prediction):
        import torch

        from diffusion_oracle.accelerated import TorchMixture, torch_schedule
        from diffusion_oracle.accelerated.model import TorchExactModel
        from diffusion_oracle.accelerated.samplers import torch_sampler

        self.torch = torch
        self.mixture = TorchMixture.from_reference(target, device=device)
        self.device = self.mixture.device
        self.schedule = torch_schedule(schedule)
        self.prediction = prediction
        self.model = TorchExactModel(self.mixture, self.schedule, prediction=prediction)
        self.sampler = torch_sampler(sampler)
        where = f"torch on {self.device}"
        self.note = (
            f"device: {where} (sampler, model and tier-3 statistics)"
            if self.sampler is not None
            else f"device: {where} requested, but {getattr(sampler, 'name', sampler)!r} has no "
            "torch counterpart: it ran on the NumPy reference"
        )

    def gaussian_model(self, gauss):
        from diffusion_oracle.accelerated import TorchMixture
        from diffusion_oracle.accelerated.model import TorchExactModel

        tm = TorchMixture([1.0], gauss.mean_vec[None], gauss.cov[None], device=self.device)
        return TorchExactModel(tm, self.schedule, prediction=self.prediction)

    def generator(self, seed):
        gen = self.torch.Generator(device=self.device)
        gen.manual_seed(int(seed))
        return gen

    def statistics(self, out, a_each, seed):
        from diffusion_oracle.accelerated import stats as ts

        x = self.torch.as_tensor(out, device=self.device)
        n_mmd = min(x.shape[0], 500)
        key = ("torch", str(self.device), _fingerprint_t(self.mixture), n_mmd, seed)
        if key not in _MMD_CACHE_T:
            _MMD_CACHE_T[key] = ts.mmd_null(
                self.mixture, n_mmd, replicates=int(2 / a_each) - 1, rng=seed + 3
            )
        return [
            ts.responsibility_test(self.mixture, x, alpha=a_each, rng=seed + 4),
            ts.projected_ks_test(self.mixture, x, alpha=a_each, rng=seed + 5),
            ts.nll_test(self.mixture, x, alpha=a_each, rng=seed + 6),
            ts.mmd_test(self.mixture, x[:n_mmd], alpha=a_each, null=_MMD_CACHE_T[key]),
        ]


def _no_gpu_driver() -> bool:
    """True when this Linux machine certainly has no CUDA or ROCm device (no NVIDIA, AMD or WSL2
    GPU driver), so that verify's default device is the CPU without importing torch to ask
    (1.4 s of a 20 s command on 2 cores). Elsewhere False: torch decides."""
    if not sys.platform.startswith("linux"):
        return False
    # NVIDIA's driver, AMD's (ROCm), and WSL2's GPU paravirtualisation (no /proc/driver there)
    return not any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl",
                                                "/dev/kfd", "/dev/dxg"))  # fmt: skip


def _fingerprint_t(tm) -> str:
    import hashlib

    h = hashlib.sha1()
    for t in (tm._logw64, tm._mu64, tm._lam64) + ((tm._Q64,) if tm._Q64 is not None else ()):
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


_MMD_CACHE_T: dict = {}
_moment_gaussian = moment_gaussian  # the name other modules import


def _guarded(report, name, fn, tier=None):
    """Run one check; an exception becomes that check's FAIL row (the others still run)."""
    try:
        out = fn()
    except Exception as exc:
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        report.checks.append(
            Check(name, Verdict.FAIL, f"the check raised {tb} (a fault of the sampler or of "
                  "its set-up: the other checks ran)", tier)  # fmt: skip
        )
        return None
    if out is None:
        return None
    for c in out if isinstance(out, list) else [out]:
        report.checks.append(c)
    return out


def _int_list(values, name: str, what: str) -> list:
    """A collection of integers (not bools, not floats, not a string) as a list."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a collection of {what}, got {type(values).__name__} "
                        f"{values!r}")  # fmt: skip
    values = list(values)
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be {what}, got {type(v).__name__} {v!r} in {values!r}")
    return [int(v) for v in values]


def _check_args(target, schedule, steps, tiers, grid, dtype, n_samples, tier3_steps, seed,
                prediction, sampler=None, flags=()):  # fmt: skip
    if not callable(sampler):
        raise TypeError(f"sampler must be callable as sampler(model, x_init, grid, *, rng), got "
                        f"{type(sampler).__name__} {sampler!r}")  # fmt: skip
    for name, v in flags:
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")
    tname = target if isinstance(target, str) else type(target).__name__
    if isinstance(target, str):
        from diffusion_oracle.reference.targets import DEFAULT_TARGETS

        if target not in DEFAULT_TARGETS:
            raise ValueError(f"target must be a GaussianMixture or one of "
                             f"{sorted(DEFAULT_TARGETS)}, got {target!r}")  # fmt: skip
        target = get_target(target)
    if not isinstance(target, GaussianMixture):
        raise TypeError(
            f"target must be a GaussianMixture or a built-in name, got {type(target).__name__}"
        )
    schedule = VPLinear() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    given = steps
    steps = sorted(set(_int_list(steps, "steps", "integers >= 2")))
    if not steps or steps[0] < 2:
        raise ValueError(f"steps must be integers >= 2, got {given!r}")
    tiers = tuple(sorted(set(_int_list(tiers, "tiers", "tier numbers 1, 2, 3"))))
    if any(t not in (1, 2, 3) for t in tiers):
        raise ValueError(f"tiers must be drawn from (1, 2, 3), got {tiers}")
    if grid is not None and grid not in VALID_KINDS:
        raise ValueError(f"grid must be one of {VALID_KINDS}, got {grid!r}")
    if dtype is not None:
        dtype = dtype_name(dtype)
    for name, v, lo in (("n_samples", n_samples, 2), ("tier3_steps", tier3_steps, 2),
                        ("seed", seed, 0)):  # fmt: skip
        if v is None and name != "seed":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer >= {lo}, got {type(v).__name__} {v!r}")
        if v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return tname, target, schedule, steps, tiers, dtype


def tier3_size(law, n_samples=None):
    """(n, w_min): tier 3's sample size for ``law`` and the smallest weight it resolves.

    n resolves a 20% error in the smallest weight w_min at power TIER3_POWER and the per-test
    level TIER3_ALPHA / 4 (components below 1% weight are not what a practical n can resolve to
    20%); at least 2000, which resolves a ~4% error in a standard deviation (n ~ 3.9 / eps^2 at
    power 0.8, ground-truth.md Sec. 4). ``n_samples`` overrides it."""
    w_min = float(law.weights[law.weights >= 0.01].min(initial=1.0))
    if n_samples:
        return int(n_samples), w_min
    n = max(
        2000,
        responsibility_sample_size(w_min, 0.2 * w_min, alpha=TIER3_ALPHA / 4, K=law.K,
                                   power=TIER3_POWER) if w_min < 1.0 else 0,
    )  # fmt: skip
    return n, w_min


def warm_caches(target="ring8", n_samples=None, tiers=(1, 2, 3)):
    """Compute what every verify of ``target`` shares (tier 3's MMD null) once, before worker
    processes fork (the ``verify`` command of the built-in samplers)."""
    if 3 not in tiers:
        return
    if isinstance(target, str):
        from diffusion_oracle.reference.targets import get_target

        target = get_target(target)
    n, _ = tier3_size(target, n_samples)
    mmd_null_cached(target, min(n, 500), TIER3_ALPHA / 4)


def verify(
    sampler,
    target="ring8",
    schedule: Schedule | None = None,
    steps=DEFAULT_STEPS,
    *,
    grid: str | None = None,
    prediction: str = "eps",
    reference=None,
    n_samples: int | None = None,
    tiers=(1, 2, 3),
    tier3_steps: int | None = None,
    truth: GaussianMixture | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    seed: int = 0,
    dtype=None,
    accept_prior_mismatch: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> VerifyReport:
    """Verify ``sampler`` (a callable ``sampler(model, x_init, grid, *, rng)``) against exact
    ground truth; see the module docstring for the pipeline and the tiers.

    Parameters: ``target`` a GaussianMixture or a built-in name; ``schedule`` (default the
    sampler's ``schedule`` where an adapter carries its network's training schedule, else
    VPLinear()); ``steps`` geometric step counts; ``grid`` spacing ("uniform", "log_snr",
    "karras", or a discrete respacing; default: the sampler's ``default_grid``, else the
    reference's, else "log_snr"; see :mod:`diffusion_oracle.verification.plan`); ``prediction``
    the exact model's output type; ``reference`` a reference sampler whose exact output law on
    the same grid the sampler must reproduce to rounding (a failure names the first divergence);
    ``n_samples`` tier-3 sample size (default: resolves a 20% error in the smallest weight at
    power 0.8); ``tiers`` which tiers run (tier 3 judges the output law: without it a PASS needs
    a converging tier-1 law or a same-grid reference); ``tier3_steps`` the step count of tier 3
    (default 256 for declared order >= 2, else 1024); ``truth`` the law tier 3 tests against
    (default the target; e.g. ``target.select(c)`` for guidance at w = 1); ``dtype`` the
    precision the sampler computes in (default: detected from what it hands the model and
    returns), which sets every rounding tolerance; ``accept_prior_mismatch`` accept knowingly a
    schedule whose last marginal is not N(0, I) (the prior row then says so); ``device`` runs the
    torch implementation ("cuda", "cpu", ...; default CUDA when torch sees a GPU).

    An inversion scheduler (``from_diffusers(..., inverse=True)``) is verified in inversion
    mode (:func:`diffusion_oracle.validation.inversion.verify_inversion`): from the data towards
    the noise, against the exact inverted law, under the labelling convention it follows
    (``reference="ddim"`` also judges it against the DDIM inversion of that convention).

    Samplers may carry ``order`` (declared convergence order), ``stochastic``, ``default_grid``,
    ``make_grid(schedule, n)`` (a sampler that chooses its own times), ``tier1_applicable =
    False`` (their law is not the target's: guidance, inpainting) and ``exact_counterpart`` (the
    exact flow map of their own ODE for tier 2).

    Returns a :class:`VerifyReport`; ``report.verdict`` is PASS, FAIL or INCONCLUSIVE and every
    check row says what decided it. Example::

        report = verify(DDIM(), "ring8", steps=[8, 16, 32, 64])
        print(report); report.plot("plots"); report.to_json()
    """
    from tqdm import tqdm

    if schedule is None and getattr(sampler, "schedule", None) is not None:
        schedule = sampler.schedule  # an adapter bound to its network's training schedule
    tname, target, schedule, steps, tiers, dtype = _check_args(
        target, schedule, steps, tiers, grid, dtype, n_samples, tier3_steps, seed, prediction,
        sampler, (("accept_prior_mismatch", accept_prior_mismatch), ("progress", progress)),
    )
    if callable(getattr(sampler, "check_schedule", None)):
        sampler.check_schedule(schedule)  # a sampler bound to one training table says so
    if getattr(sampler, "inverse", False):
        # an inversion (data -> noise): judged against the exact inverted law, under the
        # labelling convention the scheduler follows
        from diffusion_oracle.validation.inversion import verify_inversion

        return verify_inversion(sampler, target, schedule, steps, reference=reference,
                                target_name=tname, progress=progress)  # fmt: skip
    # an adapter that knows its library keeps the noise-level table in a coarser dtype than it
    # computes in says so (diffusers' sigma schedulers: float32); the run's own precision (what
    # it hands the model and returns) is detected in tier 1, or passed as dtype=
    table_dtype = getattr(sampler, "table_dtype", None)
    table_dtype = None if table_dtype is None else dtype_name(table_dtype)
    kind, why = choose_grid(sampler, reference, grid)
    if kind not in VALID_KINDS:
        raise ValueError(f"the sampler's default_grid must be one of {VALID_KINDS}, got {kind!r}")
    declared = getattr(sampler, "order", None)
    name = getattr(sampler, "name", getattr(sampler, "__name__", repr(sampler)))
    if t_end is None:
        t_end = default_t_end(schedule, target)
    acc = _Accelerated.make(device, sampler, target, schedule, prediction)
    try:
        grid_for, grids = plan_grids(sampler, schedule, steps, kind, t_start=t_start,
                                     t_end=t_end)  # fmt: skip
    except Exception as exc:
        if not hasattr(sampler, "make_grid"):
            raise  # our own grids: a bad t_start/t_end/grid is the caller's ValueError
        # the sampler chooses its own times and could not: a FAIL naming who raised (a
        # pipeline driver's error says whether it was the scheduler, its configuration or
        # diffusion-oracle), never an exception out of verify
        report = VerifyReport(name, declared, tname, repr(schedule), kind, _target_obj=target)
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        tb = str(exc) if getattr(exc, "who", None) else (
            f"the sampler's make_grid(schedule, n) raised {tb}")  # fmt: skip
        report.rows = [StepResult(n) for n in steps]
        report.checks.append(Check("runs", Verdict.FAIL, tb))
        return report
    family, refines = family_of(grids)
    report = VerifyReport(name, declared, tname, repr(schedule), kind, _target_obj=target)
    report.notes.append(f"grid: {kind} ({why}); family {family}, "
                        + ("refines" if refines else "does not refine"))  # fmt: skip
    if acc is not None:
        report.notes.append(acc.note)
    report.rows = [StepResult(n) for n in steps]
    rows = report.rows
    bar = tqdm(
        total=len(steps) * len(tiers), desc=f"verify {name}", unit="check",
        disable=not progress, file=sys.stderr, leave=False,
    )  # fmt: skip
    applicable = getattr(sampler, "tier1_applicable", True)
    broken = None
    t1 = None
    per_start = {}

    # ------------------------------------------------------------ tier 1 and the checks on it
    if 1 in tiers and not applicable:
        report.notes.append(
            "tier 1, the landing and the prior checks skipped: the sampler's law is not the "
            "target's (guidance or inpainting); tiers 2 and 3 test it against its own truth"
        )
        bar.update(len(steps))
    elif 1 in tiers:
        try:
            t1 = tier1(sampler, target, schedule, prediction, grids, rows, seed,
                       reference=reference, dtype=dtype, table_dtype=table_dtype, acc=acc,
                       progress=bar)  # fmt: skip
            broken = t1.broken
            report.dtype = t1.dtype
        except Exception as exc:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            report.checks.append(Check("tier 1", Verdict.FAIL, f"tier 1 raised {tb}", 1))
    report.dtype = report.dtype or dtype

    # ------------------------------------------------------------ tier 2
    deterministic = not getattr(sampler, "stochastic", False)
    if 2 in tiers and deterministic and broken is None:
        try:
            broken, per_start = tier2(sampler, target, schedule, prediction, grids, rows, seed,
                                      acc=acc, progress=bar)  # fmt: skip
        except Exception as exc:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            report.checks.append(Check("tier 2", Verdict.FAIL, f"tier 2 raised {tb}", 2))
    elif 2 in tiers:
        bar.update(len(steps))
        if broken is None:
            report.notes.append("tier 2 skipped: the sampler is stochastic")

    # ------------------------------------------------------------ tier 3
    t3 = None
    if 3 in tiers and broken is None:
        law = target if truth is None else truth
        a_each = TIER3_ALPHA / 4
        n, w_min = tier3_size(law, n_samples)
        n3 = tier3_steps or (256 if (declared or 0) >= 2 else 1024)
        if isinstance(schedule, DiscreteSchedule):
            n3 = min(n3, schedule.T)  # a discrete schedule has at most T steps
        report.notes.append(
            f"tier 3: n = {n} samples at {n3} steps; n resolves a 20% error in the smallest "
            f"weight ({w_min:.3g}) with power {TIER3_POWER}; family false-alarm rate "
            f"{TIER3_ALPHA} ({a_each:g} per test)"
        )
        try:
            g3 = grids[n3] if n3 in grids else grid_for(n3)
            t3 = tier3(sampler, target, schedule, prediction, g3, n, seed, a_each, law=law,
                       acc=acc)  # fmt: skip
            broken = broken or t3.error
            report.samples = t3.samples
            report.stats = t3.stats
            report._target_obj = t3.law
        except Exception as exc:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            report.checks.append(Check("tier 3", Verdict.FAIL, f"tier 3 raised {tb}", 3))
        bar.update(len(steps))
    bar.close()

    # ------------------------------------------------------------ judge
    _judge(report, sampler, target, schedule, prediction, grids, steps, tiers, seed, declared,
           refines, family, reference, broken, t1, t3, applicable, accept_prior_mismatch,
           n_samples, per_start, table_dtype)  # fmt: skip
    return report


def _floors(base, grids, dtype, m2, d, table_dtype, rows):
    """Per-N error floors of an order fit: the larger of the fixed floor (what the exact
    reference resolves) and the rounding bound of the sampler's dtype on that grid; and whether
    any floor is a rounding bound above float64's (errors there are not 'exact', they are
    unresolved)."""
    out, rounding = {}, False
    for r in rows:
        tol = rounding_tolerance(r.dtype or dtype or "float64", grids[r.steps], m2=m2, d=d,
                                 calls=r.nfe, table_dtype=table_dtype)  # fmt: skip
        out[r.steps] = max(base, tol)
        rounding = rounding or (tol > base and (r.dtype or dtype) not in (None, "float64"))
    return out, rounding


def _judge(report, sampler, target, schedule, prediction, grids, steps, tiers, seed, declared,
           refines, family, reference, broken, t1, t3, applicable, accept_prior, n_samples,
           per_start, table_dtype):  # fmt: skip
    rows = report.rows
    _guarded(report, "runs", lambda: judge_runs(rows, broken))
    if broken is not None:
        return
    m2, d = data_m2(target), target.d
    dtype = report.dtype
    lands = []
    own = getattr(sampler, "checks", None)
    if callable(own):
        # checks the sampler's adapter knows how to judge (a pipeline driver's label/level
        # check): each guarded like ours
        _guarded(report, "sampler's own checks", lambda: own(schedule, list(steps)))
    if applicable:
        # the final step and the step count, judged on every route (whatever tiers run)
        def land():
            ns = sorted({steps[0], steps[-1]})
            # keyed by the step count asked for: a sampler's own grid (measured levels) may
            # hold a different number of nodes
            lands.extend(dataclasses.replace(
                landing(sampler, target, schedule, prediction, grids[n], seed, dtype=dtype,
                        table_dtype=table_dtype), steps=n) for n in ns)  # fmt: skip
            for x in lands:  # the table's landing column
                next(r for r in rows if r.steps == x.steps).landing = x.rms
            return judge_landing(lands)

        _guarded(report, "final step (landing)", land)

        def calls():
            levels = getattr(sampler, "distinct_levels", None)
            if callable(levels):
                # a pipeline sampler: the distinct levels the network's input was measured at
                # (integer labels may repeat between two levels: the label check judges them)
                for r in rows:
                    r.distinct_times = levels(schedule, r.steps)
            if t1 is not None and any(r.distinct_times is not None for r in rows):
                return judge_calls(rows, grids)
            from diffusion_oracle.verification.report import StepResult as _SR

            pseudo = [_SR(x.steps, nfe=x.calls, distinct_times=x.distinct_times) for x in lands
                      if not x.error]  # fmt: skip
            return judge_calls(pseudo, grids)

        _guarded(report, "model calls", calls)

        def prior():
            n = int(n_samples) if n_samples else (t3.n if t3 is not None else 2000)
            g = grids[steps[-1]]
            w = prior_shift(target, g)
            return judge_prior(w, steps[-1], prior_tolerance(target.covariance(), n), n,
                               accept_prior, float(g.alpha[0]), float(g.sigma[0]))

        _guarded(report, "prior (terminal SNR)", prior, 1)
    if t1 is not None:
        gauss = moment_gaussian(target)
        base1 = ERROR_FLOOR * math.sqrt(np.trace(gauss.cov))
        floors1, rounding1 = _floors(base1, grids, dtype, m2, d, table_dtype, rows)
        report.order_tier1 = fit_order(steps, [r.w2 for r in rows], declared, floor=floors1)
        missing = "; ".join(sorted(set(t1.unavailable.values())))[:300] or None
        _guarded(report, "order (tier 1, exact)", lambda: judge_order(
            "order (tier 1, exact)", 1, report.order_tier1, [r.w2 for r in rows], steps,
            declared, refines=refines, family=family, floor=floors1, notes=report.notes,
            rounding_floor=rounding1, missing=missing), 1)
        if reference is not None:
            def ref_check():
                if t1.reference_error:
                    raise RuntimeError(f"the reference raised {t1.reference_error}")
                div = None
                bad = [r for r in rows if r.w2_reference is not None
                       and r.w2_reference > t1.tol[r.steps]]  # fmt: skip
                if bad:  # diagnose where the comparison fails most clearly
                    worst = max(bad, key=lambda r: r.w2_reference / t1.tol[r.steps])
                    g = grids[worst.steps]
                    model = ExactModel(target, schedule, prediction=prediction)
                    x = target.diffuse(g.alpha[0], g.sigma[0]).sample(
                        8, np.random.default_rng([seed, 99]))
                    div = first_divergence(sampler, reference, model, g, x, seed,
                                           t1.tol[worst.steps], dtype=dtype)  # fmt: skip
                rname = getattr(reference, "name", repr(reference))
                return judge_reference(rows, t1.tol, rname, dtype or "float64", div,
                                       math.sqrt(m2))  # fmt: skip
            _guarded(report, "same-grid reference", ref_check, 1)
    elif 1 in tiers and applicable:
        report.checks.append(Check("tier 1", Verdict.INCONCLUSIVE, "tier 1 did not run", 1))
    if 2 in tiers and any(r.path_error is not None for r in rows):
        base2 = PATH_FLOOR * math.sqrt(np.trace(target.covariance()))
        floors2, rounding2 = _floors(base2, grids, dtype, m2, d, table_dtype, rows)
        errs = [r.path_error for r in rows]
        report.order_tier2 = fit_order_pathwise(steps, per_start, declared, floor=floors2)
        rms_fit = fit_order(steps, errs, declared, floor=floors2)
        _guarded(report, "order (tier 2, pathwise)", lambda: judge_order(
            "order (tier 2, pathwise)", 2, report.order_tier2, errs, steps, declared,
            refines=refines, family=family, floor=floors2, notes=report.notes,
            rounding_floor=rounding2, rms_fit=rms_fit), 2)
    if t3 is not None and t3.stats:
        def stats():
            failed = [t.name for t in t3.stats if not t.passed]
            floor = None
            if failed and t3.law.d == target.d:
                floor = grid_floor(t3.law, t3.grid, t3.n, t3.alpha_each, seed, failed)
            return judge_tier3(t3, floor)
        _guarded(report, "tier 3", stats, 3)
