"""Time grids for samplers: decreasing times t_0 > t_1 > ... > t_N on a schedule.

A :class:`Grid` carries the schedule and caches alpha, sigma, their logs, log_snr and sigma_EDM at
every node, so a sampler is written once against (alpha, sigma) and works for every path.

``make_grid(schedule, steps, kind)`` spaces ``steps`` intervals between ``t_start`` and ``t_end``
(or, with ``final_zero=True``, the default, ``steps - 1`` intervals down to ``t_end`` followed
by the final jump to t = 0, sigma = 0, as in EDM's Algorithm 1 where t_N = 0):

    uniform   equally spaced in t (DDPM/DDIM practice, Ho et al. 2020; Song et al. 2021a);
    log_snr   equally spaced in log-SNR (DPM-Solver, Lu et al. 2022, Sec. 3.3 "logSNR");
    karras    sigma_EDM_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho
              (Karras et al. 2022, eq. 5), mapped to t with the schedule's inverse.

The log_snr and karras nodes are computed in lambda = log-SNR, clipped to
[lambda(t_start), lambda(t_end)] (rounding would otherwise carry an end node an ulp past the
schedule's range) and inverted with ``schedule.t_from_log_snr``; both need a finite lambda at
t_start (not the case at t = 1 for VPCosine, Flow or a zero-terminal-SNR DiscreteSchedule: pass
``t_start < 1`` there).

Every grid records how it was built: ``Grid.family`` names the construction ("uniform",
"log_snr", "karras(rho=7)", "respaced-trailing", ... or "custom" for times passed directly) and
``Grid.refines`` says whether grids of different step counts N form one *refining family*: the
nodes are a fixed smooth function of i/N between fixed end times, so every step shrinks like 1/N
and the error of an order-p sampler falls like N^-p. Only then can a convergence order be read
from the slope of log error against log N. ``make_grid`` grids refine; ``respaced_grid`` grids do
not (their integer timesteps are rounded, and the rounding does not shrink with N), and neither,
as far as this package can tell, do grids whose times were passed directly.
"""

from __future__ import annotations

import numpy as np

from ._checks import _r, boolean, choice, finite, in_interval, positive_int, positive_scalar
from .schedules import Schedule

__all__ = ["Grid", "make_grid", "respaced_grid", "GRID_KINDS", "DISCRETE_SPACINGS"]

GRID_KINDS = ("uniform", "log_snr", "karras")
DISCRETE_SPACINGS = ("full", "leading", "trailing", "linspace")


class Grid:
    """Decreasing times on a schedule, with the path coefficients at each node.

    ``t`` are the model-evaluation times (strictly decreasing, sigma > 0 at each). With
    ``final_zero`` one more node is appended: the data itself, alpha = 1, sigma = 0 (log-SNR
    +inf, sigma_EDM = 0), reached by the final denoising jump; its ``t`` is 0 by convention (for VE
    and EDM schedules sigma(0) = sigma_min > 0, so that node lies off the schedule). The model is
    never evaluated at it.

    Attributes (arrays of length N + 1): ``t``, ``alpha``, ``sigma``, ``log_alpha``, ``log_sigma``,
    ``log_snr`` (lambda), ``half_log_snr`` (lambda/2 = log(alpha/sigma), DPM-Solver's lambda),
    ``sigma_edm`` (sigma/alpha), ``d_alpha``, ``d_sigma``. ``steps`` = N.

    ``family`` (str): how the grid was built. :func:`make_grid` sets its ``kind`` ("uniform",
    "log_snr", or "karras(rho=7)" with the rho used), :func:`respaced_grid` sets
    "respaced-<spacing>" (e.g. "respaced-trailing"); a Grid constructed directly defaults to
    "custom".

    ``refines`` (bool): True when grids of this family with different N refine one another: the
    nodes are a fixed smooth function of i/N between fixed t_start and t_end (every
    :func:`make_grid` grid), so the steps shrink like 1/N and a convergence order can be fitted
    from errors over several N. False for :func:`respaced_grid` (timesteps are rounded to
    integers, an error that does not shrink with N) and by default for a directly constructed
    grid, whose times may follow no rule in N; pass ``refines=True`` only when they do. The
    nodes refining does not make the path smooth: a DiscreteSchedule's coefficients are
    piecewise in t, which can cap the order a sampler shows.
    """

    def __init__(
        self,
        schedule: Schedule,
        t,
        *,
        final_zero: bool = False,
        family: str = "custom",
        refines: bool = False,
    ):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        if not isinstance(family, str):
            raise TypeError(f"family must be a str, got {type(family).__name__}")
        if not family:
            raise ValueError(f"family must be a non-empty str, got {family!r}")
        refines = boolean(refines, "refines")
        final_zero = boolean(final_zero, "final_zero")
        t = finite(t, "t")
        if t.ndim != 1 or t.size < (1 if final_zero else 2):
            raise ValueError(f"t must be a 1-D grid with at least 2 nodes, got shape {t.shape}")
        if not (np.diff(t) < 0).all():
            i = int(np.flatnonzero(np.diff(t) >= 0)[0])
            raise ValueError(
                f"t must be strictly decreasing, got t[{i}] = {_r(t[i])}, "
                f"t[{i + 1}] = {_r(t[i + 1])}"
            )
        in_interval(t, "t", schedule.t_min, schedule.t_max)
        self.schedule = schedule
        with np.errstate(divide="ignore", invalid="ignore"):
            cols = {
                "alpha": schedule.alpha(t),
                "sigma": schedule.sigma(t),
                "log_alpha": schedule.log_alpha(t),
                "log_sigma": schedule.log_sigma(t),
                "log_snr": schedule.log_snr(t),
                "sigma_edm": schedule.sigma_edm(t),
                "d_alpha": schedule.d_alpha(t),
                "d_sigma": schedule.d_sigma(t),
            }
        if (np.asarray(cols["sigma"]) == 0).any():
            raise ValueError(
                "grid times must have sigma > 0; the jump to sigma = 0 is final_zero=True"
            )
        final = {
            "alpha": 1.0,
            "sigma": 0.0,
            "log_alpha": 0.0,
            "log_sigma": -np.inf,
            "log_snr": np.inf,
            "sigma_edm": 0.0,
            "d_alpha": 0.0,
            "d_sigma": 0.0,
        }
        for name, col in cols.items():
            col = np.asarray(col, dtype=np.float64)
            if final_zero:
                col = np.append(col, final[name])
            setattr(self, name, col)
        self.t = np.append(t, 0.0) if final_zero else t.copy()
        self.half_log_snr = 0.5 * self.log_snr
        self.final_zero = bool(final_zero)
        self.steps = self.t.size - 1
        self.family = family
        self.refines = bool(refines)

    def __len__(self):
        return self.t.size

    def __repr__(self):
        return (
            f"Grid({self.schedule!r}, steps={self.steps}, t={self.t[0]:.4g}..{self.t[-1]:.4g}"
            + f", family={self.family!r}"
            + (", final jump to sigma=0" if self.final_zero else "")
            + ")"
        )


def _unit_scalar(value, name: str) -> float:
    v = in_interval(value, name, 0.0, 1.0)
    if v.ndim:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    return float(v)


def make_grid(
    schedule: Schedule,
    steps: int,
    kind: str = "uniform",
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    final_zero: bool = True,
    rho: float = 7.0,
) -> Grid:
    """A grid of ``steps`` sampler steps from ``t_start`` (default: the schedule's t_max) to
    ``t_end`` (default 1e-3, or the schedule's t_min when its sigma there is already > 0), then,
    with ``final_zero``, the jump to t = 0. See the module docstring for the spacings.

    The grid's ``family`` is ``kind`` ("karras(rho=<rho>)" for karras) and ``refines`` is True:
    for fixed ``t_start``, ``t_end`` the nodes are a smooth function of i/N (module docstring).

    Example: ``make_grid(VPLinear(), 10, "log_snr").t``.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    final_zero = boolean(final_zero, "final_zero")
    steps = positive_int(steps, "steps", minimum=2 if final_zero else 1)
    choice(kind, "kind", set(GRID_KINDS))
    rho = positive_scalar(rho, "rho")
    t0 = float(schedule.t_max if t_start is None else _unit_scalar(t_start, "t_start"))
    if t_end is None:
        t_end = schedule.t_min if schedule.sigma(schedule.t_min) > 0 else 1e-3
        if t0 <= t_end:
            raise ValueError(f"t_start must be > t_end={_r(t_end)}, got {_r(t0)}")
    t1 = _unit_scalar(t_end, "t_end")
    if not t1 < t0:
        raise ValueError(f"t_end must be < t_start={_r(t0)}, got {_r(t1)}")
    if schedule.sigma(t1) <= 0 or not np.isfinite(schedule.log_snr(t1)):
        raise ValueError(
            f"t_end must have sigma > 0 (the final jump to 0 is separate), got {_r(t1)}"
        )
    n = steps - 1 if final_zero else steps  # intervals between t_start and t_end
    u = np.linspace(0.0, 1.0, n + 1)
    if kind == "uniform":
        t = t0 + u * (t1 - t0)
    else:
        l0, l1 = float(schedule.log_snr(t0)), float(schedule.log_snr(t1))
        if not np.isfinite(l0):
            what = "log-SNR" if kind == "log_snr" else "sigma_EDM"
            val = l0 if kind == "log_snr" else float(schedule.sigma_edm(t0))
            raise ValueError(
                f"a {kind} grid needs a finite {what} at t_start; {schedule!r} has {_r(val)} at "
                f"t={_r(t0)}: pass t_start < {_r(t0)}"
            )
        with np.errstate(divide="ignore"):
            if kind == "log_snr":
                lam = l0 + u * (l1 - l0)
            else:
                # sigma_i^(1/rho) = s0^(1/rho) (1 + u (s1^(1/rho)/s0^(1/rho) - 1)) in logs, with
                # lambda = -2 log sigma_EDM: no overflow for a huge sigma_EDM(t_start)
                lam = l0 - 2.0 * rho * np.log1p(u * np.expm1((l0 - l1) / (2.0 * rho)))
        # rounding can carry a node an ulp or two past lambda(t_start) or lambda(t_end), and then
        # past the schedule's log-SNR range, which t_from_log_snr rejects (for instance the end
        # node of a karras grid on VEGeometric, ((s^(1/rho))^rho != s), or l0 + 1 (l1 - l0) !=
        # l1 on EDM): pin the nodes to [lambda(t_start), lambda(t_end)] within that range
        lo, hi = schedule.log_snr_range()
        lam = np.clip(lam, max(l0, lo), min(l1, hi))
        t = np.array(schedule.t_from_log_snr(lam), dtype=np.float64)
    t[0], t[-1] = t0, t1
    if not (np.diff(t) < 0).all():
        i = int(np.flatnonzero(np.diff(t) >= 0)[0])
        raise ValueError(
            f"steps={steps} is too many for a {kind} grid from t_start={_r(t0)} to "
            f"t_end={_r(t1)} on {schedule!r}: nodes {i} and {i + 1} coincide in float64 "
            f"(t = {_r(t[i])}, {_r(t[i + 1])})"
        )
    family = f"karras(rho={rho:g})" if kind == "karras" else kind
    return Grid(schedule, t, final_zero=final_zero, family=family, refines=True)


def respaced_grid(
    schedule, steps: int, spacing: str = "trailing", *, steps_offset: int = 0
) -> Grid:
    """The grid a discrete DDPM sampler runs on a :class:`DiscreteSchedule` of T steps when it
    takes ``steps`` of them (respacing, Nichol & Dhariwal 2021 Sec. 4; spacings as in Lin et al.
    2024, arXiv:2305.08891, Table 2, and diffusers' ``timestep_spacing``), 0-based timesteps k:

        full      k = T-1, ..., 0                                 (steps must equal T)
        leading   k = (N-1, ..., 0) * (T // N) + steps_offset     (never reaches T-1)
        trailing  k = round(T - i T/N) - 1, i = 0..N-1            (starts at T-1)
        linspace  k = round(linspace(0, T-1, N)) reversed         (starts at T-1)

    mapped to t = (k + 1)/T (n = k + 1, the package's index convention) and followed by the
    final jump to t = 0 (x_0). Each step of a sampler on this grid goes from one chosen timestep
    to the next, with the posterior of that pair (the respaced betas).

    The grid's ``family`` is "respaced-<spacing>" and ``refines`` is False: the rounding to
    integer timesteps does not shrink with N, so no convergence order is read from these grids.
    """
    from .schedules import DiscreteSchedule

    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    choice(spacing, "spacing", set(DISCRETE_SPACINGS))
    T = schedule.T
    N = positive_int(steps, "steps")
    if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)):
        raise TypeError(f"steps_offset must be an integer, got {type(steps_offset).__name__} "
                        f"{steps_offset!r}")  # fmt: skip
    if N > T:
        raise ValueError(f"steps must be <= T = {T}, got {N}")
    if spacing == "full":
        if N != T:
            raise ValueError(f"spacing 'full' takes every step: steps must be T = {T}, got {N}")
        k = np.arange(T - 1, -1, -1)
    elif spacing == "leading":
        k = (np.arange(N) * (T // N))[::-1] + int(steps_offset)
    elif spacing == "trailing":
        # i = 0..N-1 exactly: np.arange(T, 0, -T/N) returns N + 1 values for some N (T = 100:
        # N = 29, 31, 58, 62, 97), the last rounding to timestep -1
        k = np.round(T - np.arange(N) * (T / N)).astype(int) - 1
    else:
        k = np.round(np.linspace(0, T - 1, N)).astype(int)[::-1]
    k = np.unique(k)[::-1]  # strictly decreasing (rounding can repeat for N close to T)
    if k.min() < 0 or k.max() > T - 1:
        raise ValueError(f"steps_offset={steps_offset} moves timesteps outside [0, {T - 1}]")
    return Grid(schedule, (k + 1) / T, final_zero=True, family=f"respaced-{spacing}")
