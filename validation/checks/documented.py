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

Tolerance, relative per entry: 4 u32 for the scheduler's float32 arithmetic and storage (the
formula evaluated on float32 inputs, then stored: a few roundings of u32 each) plus, for the VP
tables, what the float32 training table diffusers builds knows of its ends: alphas_cumprod is a
float32 cumulative product (relative LAMBDA sqrt(k + 2) u32) and sigma = sqrt((1 - ab) / ab)
divides that by 2 (1 - ab) (at the first training step 1 - ab = beta_0 = 1e-4: relative 3e-3 at
LAMBDA = 8), carried into each Karras entry with the weight the formula gives it. A failure
names the first entry that differs and, where they differ, the last sigma. Other
configurations are reported as not documented here, with the reason: never judged on a guess.

Timestep spacings, zero terminal SNR and beta sigmas (issue 21, "documented grids"):

- **Timestep spacing** (``timestep_spacing``, ``steps_offset``): every diffusers docstring
  refers to Lin et al. 2024, arXiv:2305.08891, Table 2, which writes the S timesteps
  1-indexed (t = 1..T) for T = 1000, S = 10: linspace round(linspace(1, T, S)) = 1, 112, ..,
  1000; leading arange(1, T + 1, floor(T / S)) = 1, 101, .., 901; trailing
  round(flip(arange(T, 0, -T / S))) = 100, 200, .., 1000. diffusers' labels are 0-indexed
  (alphas_cumprod[t], t = 0..T-1), so each entry is the table's minus one:
  linspace t_k = round((T - 1) k / (S - 1)), leading t_k = k floor(T / S) + steps_offset,
  trailing t_j = round(T (S - j) / S) - 1, k, j = 0..S-1, run noisiest first
  (:func:`table2_timesteps`; the paper's own S = 10 row is in tests/). ``steps_offset`` is
  added to leading only (Stable Diffusion's offset 1 gives the paper's 1, 101, .., 901); with
  linspace / trailing and an offset the configuration is not documented here. The exact
  values are rationals: where one is a tie (fraction exactly 1/2: linspace when (T - 1) k /
  (S - 1) is half-integral, trailing at T = 1000, S = 16, 32, 48) the table's "round" does not
  say which way, and either neighbour is accepted; everywhere else equality is exact.
- **The solvers' own variant** (DPMSolverMultistep, DPMSolverSinglestep, UniPC, DEIS,
  SA-Solver and the DPM-Solver inverse): a solver of M steps takes M + 1 time points whose
  last is its end time t = eps (Lu et al. 2022, arXiv:2206.00927, "time uniform": t_i = T +
  i (eps - T) / M, i = 0..M, end point included), the model called at the first M. These
  classes apply Table 2 with S = N + 1 and make its lowest point (t = 0 + offset) the end of
  the run (``final_sigmas_type``: 0 or that level's sigma); trailing keeps S = N (its points
  never include t = 0). The inverse solver runs the same points upward and ends at the noisy
  end. A ``lambda_min_clipped`` that clips the table shortens the range: not documented here.
- **Sigmas at the timesteps** (schedulers with a sigma table): the float64 training table
  sigma_t = sqrt(1 / alpha_bar_t - 1) at the label, linearly interpolated in sigma at
  fractional labels, with the tolerance above at the label's step. The sigma-space
  schedulers (Euler, Euler ancestral, LMS, Heun, KDPM2, DPM-SDE) do not round linspace: their
  labels are (T - 1) k / (S - 1) in float32 (tolerance 2 u32 max(|t|, 1): the float32 linspace
  and the label's storage). EulerDiscreteScheduler
  documents this (``interpolation_type="linear"``: "intermediate sigmas") and is judged
  against the unrounded variant; the others document no interpolation and are reported, not
  judged. Two-call methods (Heun, KDPM2, DPM-SDE) are compared on their grid labels (every
  other call), PLMS without its warm-up repeat. The final sigma is compared where
  ``final_sigmas_type`` documents it (0, or the training sigma at t = 0).
- **Zero terminal SNR** (``rescale_betas_zero_snr``): Lin et al. 2024, Algorithm 1, in
  float64 from the configured betas: sqrt(alpha_bar) shifted by its last value and scaled to
  keep its first, sqrt(ab)'_t = (sqrt(ab_t) - sqrt(ab_T)) sqrt(ab_1) / (sqrt(ab_1) -
  sqrt(ab_T)); compared with the scheduler's float32 ``alphas_cumprod`` entry by entry, with
  the tolerance of two float32 cumulative products and the shift's cancellation
  (:func:`zero_snr_alphas_cumprod`). The last entry must be 0; the sigma-space classes store
  2^-24 there (a code comment: sigma would be infinite), reported, not judged.
- **Beta sigmas** (``use_beta_sigmas``): diffusers maps the Beta(0.6, 0.6) quantiles of
  1 - linspace(0, 1, N) linearly between sigma_min and sigma_max (Forge's formula, diffusers
  PR 9509); the paper it cites (Lee et al. 2024, arXiv:2407.12173, Sec. 4) places the
  quantiles on the time steps t in [0, T - 1] and reads sigma from the schedule there (the
  reading ComfyUI and AUTOMATIC1111 PR 16926 implement). Both are computed
  (:func:`beta_sigmas`) and reported; which one the docstring promises is not settled here,
  so the configuration is not judged.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from diffusion_oracle.validation.checks.common import step_counts

__all__ = [
    "DOCUMENTED_STEPS",
    "SPACING_STEPS",
    "beta_sigmas",
    "check_documented",
    "documented_sigmas",
    "documented_timesteps",
    "table2_timesteps",
    "zero_snr_alphas_cumprod",
]

DOCUMENTED_STEPS = (4, 10, 25, 50)
# integer grids cost no model call: every N to 100 (trailing's float arange gains an entry at
# N = 61, 103, 121, ..) and three large ones
SPACING_STEPS = tuple(range(1, 101)) + (250, 500, 1000)
RHO = 7.0
BETA_SHAPE = (0.6, 0.6)  # diffusers' _convert_to_beta defaults (Forge's)
U32 = 2.0**-24

# the classes whose set_timesteps this module has read against Table 2 (diffusers 0.42.1)
TABLE2_CLASSES = frozenset({
    "DDIMScheduler", "DDPMScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler",
    "PNDMScheduler", "DDIMInverseScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
})  # fmt: skip
# Table 2 over N + 1 points, the lowest the end of the run (Lu et al. 2022, time uniform)
SOLVER_GRID_CLASSES = frozenset({
    "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler",
    "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
    "SASolverScheduler",
})  # fmt: skip
INVERSE_CLASSES = frozenset({"DDIMInverseScheduler", "DPMSolverMultistepInverseScheduler"})
# linspace labels left unrounded (sigma-space schedulers); Euler documents the interpolation
UNROUNDED_CLASSES = frozenset({
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler",
    "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSDEScheduler",
})  # fmt: skip
INTERPOLATION_DOCUMENTED = frozenset({"EulerDiscreteScheduler"})


def _flow_family(sched) -> bool:
    from diffusion_oracle.validation.pipeline import _is_flow

    return _is_flow(sched)


def documented_sigmas(sched, N: int, *, mu=None, ends: str = "table"):
    """(sigmas without the final entry, relative tolerances, what the formula is, why not)
    for the configuration of ``sched`` (module docstring); sigmas None with the reason where
    this module documents no formula for it. ``ends`` for Karras and exponential sigmas: "table"
    the ends of the training table (the model's range, as Karras et al. 2022 define sigma_min
    and sigma_max), or "spaced" the table's sigmas at the first and last timestep of the
    configured spacing (what diffusers' Euler family interpolates before converting)."""
    from diffusion_oracle.reference._checks import positive_int
    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import diffusers_name
    from diffusion_oracle.verification.tolerances import LAMBDA

    N = positive_int(N, "N")
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
    if ends == "spaced":
        labels = documented_timesteps(sched, N)[0]
        if labels is None or not len(labels):
            return None, None, "", "no documented spacing to read the ends from"
        (lo, hi), end_err = _table_sigma(lab, np.array([labels[-1], labels[0]], np.float64))
    elif ends != "table":
        raise ValueError(f"ends must be 'table' or 'spaced', got {ends!r}")
    if options[0] == "use_karras_sigmas":
        w = np.linspace(0.0, 1.0, N) if N > 1 else np.zeros(1)
        base = hi ** (1 / RHO) + w * (lo ** (1 / RHO) - hi ** (1 / RHO))
        sig = base**RHO
        # d log sigma_i / d log sigma_end = w_i (end / sigma_i)^(1/rho) for each end
        carry = (w * (lo / sig) ** (1 / RHO) * end_err[0]
                 + (1 - w) * (hi / sig) ** (1 / RHO) * end_err[1])  # fmt: skip
        what = f"Karras sigmas, rho = 7, sigma {lo:.4g} .. {hi:.4g} (Karras et al. 2022, eq. 5)"
        what += " between the spaced timesteps' sigmas" if ends == "spaced" else ""
    else:
        w = np.linspace(0.0, 1.0, N) if N > 1 else np.zeros(1)
        sig = np.exp((1 - w) * math.log(hi) + w * math.log(lo))
        carry = w * end_err[0] + (1 - w) * end_err[1]
        what = f"exponential sigmas, sigma {lo:.4g} .. {hi:.4g}"
        what += " between the spaced timesteps' sigmas" if ends == "spaced" else ""
    return sig, 4 * u32 + carry, what, ""


def _scheduler_sigmas(sched):
    """The distinct consecutive sigmas of the run, without the final entry (Heun-type
    schedulers repeat each level for their second stage)."""
    s = np.asarray(sched.sigmas.detach().cpu().double().numpy(), dtype=np.float64)
    keep = [s[0]] + [v for a, v in zip(s[:-1], s[1:], strict=True) if v != a]
    return np.asarray(keep[:-1]) if keep and keep[-1] == 0.0 else np.asarray(keep)


def table2_timesteps(spacing: str, T: int, S: int, offset: int = 0):
    """(timesteps, ties): the S timesteps of Lin et al. 2024 (arXiv:2305.08891), Table 2, in
    diffusers' 0-indexed labels, noisiest first, as exact integers; ``ties`` marks the entries
    whose exact value (a rational) is half-integral, where the table's round may go either way.

    Table 2, 1-indexed: linspace round(linspace(1, T, S)), leading arange(1, T + 1,
    floor(T / S)), trailing round(flip(arange(T, 0, -T / S))). Minus one for 0-indexed labels:
    linspace t_k = round((T - 1) k / (S - 1)), leading t_k = k floor(T / S) (+ steps_offset),
    trailing t_j = round(T (S - j) / S) - 1, for k, j = 0..S-1 (S = 1 linspace: t = 0)."""
    from diffusion_oracle.reference._checks import positive_int

    T, S = positive_int(T, "T"), positive_int(S, "S")
    offset = positive_int(offset, "offset", minimum=0)
    if S > T:
        raise ValueError(f"S must be <= T (Table 2 spaces S of the T training steps), got "
                         f"S = {S}, T = {T}")  # fmt: skip
    if spacing == "leading":
        vals = [Fraction(k * (T // S) + offset) for k in range(S)]
    elif spacing == "linspace":
        vals = [Fraction((T - 1) * k, S - 1) if S > 1 else Fraction(0) for k in range(S)]
    elif spacing == "trailing":
        vals = [Fraction(T * (S - j), S) for j in range(S)]  # 1-indexed: round, then - 1
    else:
        raise ValueError(f"spacing must be linspace, leading or trailing, got {spacing!r}")
    vals = sorted(vals, reverse=True)
    ties = np.array([v.denominator == 2 for v in vals])
    shift = 1 if spacing == "trailing" else 0
    return np.array([round(v) - shift for v in vals], dtype=np.int64), ties


def documented_timesteps(sched, N: int):
    """(want, ties, exact_integers, what, why) for ``sched``'s ``set_timesteps(N)``: the
    Table 2 grid (:func:`table2_timesteps`) or the variant the class documents (module
    docstring: the solvers' N + 1 points, the unrounded labels of the sigma-space
    schedulers), in call order; want None with the reason where nothing is documented.
    ``exact_integers`` False: float labels (float32 tolerance)."""
    from diffusion_oracle.validation.pipeline import diffusers_name

    cfg = sched.config
    name = diffusers_name(sched)
    T = int(cfg.get("num_train_timesteps", 1000))
    solver = name in SOLVER_GRID_CLASSES
    if name not in TABLE2_CLASSES and not solver:
        return None, None, True, "", f"{name}'s timesteps are not a Table 2 spacing read here"
    if N > T:
        return None, None, True, "", (f"skip: N = {N} exceeds the T = {T} training steps "
                                      "(Table 2 spaces N of them)")  # fmt: skip
    spacing = cfg.get("timestep_spacing", "linspace" if solver else None)
    if name == "DPMSolverSinglestepScheduler":
        spacing = "linspace"  # no timestep_spacing: always DPM-Solver's time-uniform grid
    offset = int(cfg.get("steps_offset", 0) or 0)
    if spacing not in ("linspace", "leading", "trailing"):
        return None, None, True, "", f"timestep_spacing {spacing!r}"
    if offset and spacing != "leading":
        return None, None, True, "", (f"steps_offset = {offset} with {spacing} (Table 2 has no "
                                      "offset; diffusers adds it to leading only)")  # fmt: skip
    if cfg.get("timestep_type", "discrete") != "discrete":
        return None, None, True, "", f"timestep_type {cfg.get('timestep_type')!r}"
    if cfg.get("interpolation_type", "linear") != "linear":
        return None, None, True, "", f"interpolation_type {cfg.get('interpolation_type')!r}"
    if solver and _clipped_steps(sched):
        lmc = cfg.get("lambda_min_clipped")
        return None, None, True, "", (f"lambda_min_clipped = {lmc} clips the table (the "
                                      "clipped range is not Table 2)")  # fmt: skip
    inverse = name in INVERSE_CLASSES
    if solver and spacing != "trailing" and N + 1 > T:
        return None, None, True, "", (f"skip: N + 1 = {N + 1} points exceed the T = {T} "
                                      "training steps (Table 2 repeats integers)")  # fmt: skip
    if solver and spacing != "trailing":
        pts, ties = table2_timesteps(spacing, T, N + 1, offset)
        pts, ties = pts[:-1], ties[:-1]  # the lowest point is the end of the run
        what = (f"Table 2 {spacing} over N + 1 points, the lowest the end point (Lu et al. "
                "2022, time uniform)")  # fmt: skip
        if inverse:  # the same points upward; the noisy end is the inversion's end
            pts, ties = table2_timesteps(spacing, T, N + 1, offset)
            pts, ties = pts[::-1][:-1], ties[::-1][:-1]
            what = f"Table 2 {spacing} over N + 1 points upward, the noisiest the end point"
        return pts.astype(np.float64), ties, True, what, ""
    if spacing == "linspace" and name in UNROUNDED_CLASSES:
        want = np.array([(T - 1) * k / (N - 1) if N > 1 else 0.0 for k in range(N)])[::-1]
        return (want.copy(), np.zeros(N, dtype=bool), False,
                "Table 2 linspace, unrounded (labels (T - 1) k / (N - 1))", "")  # fmt: skip
    pts, ties = table2_timesteps(spacing, T, N, offset)
    if inverse:
        pts, ties = pts[::-1], ties[::-1]
    return pts.astype(np.float64), ties, True, f"Table 2 {spacing}", ""


def _clipped_steps(sched) -> int:
    """How many training steps lambda_min_clipped removes (float64 table)."""
    lmc = sched.config.get("lambda_min_clipped", -math.inf)
    if lmc is None or not math.isfinite(lmc):
        return 0
    lab = _log_alpha_bar(sched)
    lam = 0.5 * (lab - np.log(-np.expm1(lab)))
    return int(np.sum(lam < lmc))


def _log_alpha_bar(sched):
    from diffusion_oracle.validation.diffusers import training_schedule

    return np.asarray(training_schedule(sched).log_alpha_bar[1:], dtype=np.float64)


def _grid_labels(sched, N: int, labels):
    """The grid's labels of the scheduler's calls: every other call of the two-call methods
    (Heun, KDPM2, DPM-SDE: 2N - 1 calls), PLMS without its warm-up repeat; None where the
    number of calls is not the method's (the caller reports it)."""
    from diffusion_oracle.validation.checks.shipped import expected_calls
    from diffusion_oracle.validation.pipeline import diffusers_name

    name = diffusers_name(sched)
    exp = expected_calls(name, sched.config, N)
    if exp is None:
        return None
    calls, _ = exp
    if len(labels) != calls:
        return None
    if calls == 2 * N - 1 and N > 1:
        return labels[0::2]
    if name == "PNDMScheduler" and calls == N + 1:
        return np.concatenate([labels[:2], labels[3:]])  # the warm-up repeats call 1
    return labels


def _table_sigma(lab, t):
    """sigma = sqrt(1 / alpha_bar - 1) of the float64 table at labels ``t``, linear in sigma
    between steps (np.interp, as the schedulers document), and its float32 tolerance (module
    docstring) at the label's upper step."""
    from diffusion_oracle.verification.tolerances import LAMBDA

    with np.errstate(divide="ignore", invalid="ignore"):
        sig = np.sqrt(np.expm1(-lab))
    want = np.interp(t, np.arange(len(lab)), sig)
    k = np.clip(np.ceil(t).astype(int), 0, len(lab) - 1)
    ab = np.exp(lab[k])
    tol = 4 * U32 + LAMBDA * np.sqrt(k + 2.0) * U32 / (2.0 * np.maximum(1.0 - ab, 1e-300))
    return want, tol


def zero_snr_alphas_cumprod(sched):
    """(alpha_bar, relative tolerance) of Lin et al. 2024 (arXiv:2305.08891), Algorithm 1, in
    float64 from the configured betas: a_t = sqrt(alpha_bar_t), a'_t = (a_t - a_T) a_1 /
    (a_1 - a_T), alpha_bar'_t = a'_t^2 (a'_1 = a_1, a'_T = 0). Tolerance per entry, relative:
    the float32 cumulative product twice (before and after the rescale, LAMBDA sqrt(t + 2) u32
    each), and the shift's cancellation, 2 (e_t a_t + e_T a_T) / (a_t - a_T) with e_t =
    LAMBDA sqrt(t + 2) u32 / 2 the relative error of the float32 a_t."""
    from diffusion_oracle.validation.diffusers import scheduler_class, training_schedule
    from diffusion_oracle.validation.pipeline import diffusers_name
    from diffusion_oracle.verification.tolerances import LAMBDA

    cfg = dict(sched.config)
    cfg["rescale_betas_zero_snr"] = False
    # the configured betas through the diffusers class itself (a subclass's fault stays out)
    base = scheduler_class(diffusers_name(sched)).from_config(cfg)
    lab = np.asarray(training_schedule(base).log_alpha_bar[1:], dtype=np.float64)
    a = np.exp(0.5 * lab)
    a1, aT = a[0], a[-1]
    scaled = (a - aT) * (a1 / (a1 - aT))
    scaled[0], scaled[-1] = a1, 0.0
    k = np.arange(len(a), dtype=np.float64)
    e = LAMBDA * np.sqrt(k + 2.0) * U32 / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = 2.0 * (e * a + e[-1] * aT) / (a - aT)
    tol = 4 * U32 + 2.0 * LAMBDA * np.sqrt(k + 2.0) * U32 + shift
    tol[-1] = 0.0
    return scaled * scaled, tol


def beta_sigmas(sched, N: int, reading: str = "sigma"):
    """The N beta sigmas (without the final 0) of ``sched``'s training table, alpha = beta =
    0.6 (module docstring), computed with scipy in float64. q_i = F^-1(1 - i / (N - 1)) of
    Beta(0.6, 0.6) (Lee et al. 2024, arXiv:2407.12173, Sec. 4, probability integral
    transform), i = 0..N-1. ``reading="sigma"``: sigma_i = sigma_min + q_i (sigma_max -
    sigma_min) (diffusers' _convert_to_beta, Forge's formula); ``"timestep"``: t_i = rint(q_i
    (T - 1)), sigma_i the table's sigma at t_i (the paper's t_i in [0, T - 1], as ComfyUI)."""
    from scipy import stats

    lab = _log_alpha_bar(sched)
    sig = np.sqrt(np.expm1(-lab))
    u = 1.0 - np.linspace(0.0, 1.0, N) if N > 1 else np.ones(1)
    q = stats.beta.ppf(u, *BETA_SHAPE)
    if reading == "sigma":
        lo, hi = float(sig[0]), float(sig[-1])
        return lo + q * (hi - lo)
    if reading == "timestep":
        return sig[np.rint(q * (len(lab) - 1)).astype(int)]
    raise ValueError(f"reading must be 'sigma' or 'timestep', got {reading!r}")


def _fmt(x) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.6g}"


def _check_spacing(case, steps):
    """The timesteps (and sigmas) of the configuration's spacing at every N of ``steps``
    against :func:`documented_timesteps`: (passed, value, detail, data)."""
    factory = case.factory()
    what, judged, first, worst, n_ok, skipped = "", True, None, 0.0, 0, []
    plot = None  # what the failure plot draws: the first failing N's grids
    for N in steps:
        sched = factory()
        want, ties, exact, w, why = documented_timesteps(sched, N)
        if want is None and why.startswith("skip: "):
            skipped.append((N, why[6:]))
            continue
        if want is None:
            return None, None, f"not documented here: {why}", {}
        what = w
        from diffusion_oracle.validation.pipeline import diffusers_name

        name = diffusers_name(sched)
        judged = not (not exact and name not in INTERPOLATION_DOCUMENTED)
        try:
            sched.set_timesteps(N, **case.set_timesteps)
        except Exception as exc:  # noqa: BLE001 - reported by check 8
            if first is None:
                first = ("raised", N, f"{type(exc).__name__}")
            continue
        labels = np.asarray(sched.timesteps.detach().cpu().double().numpy(), dtype=np.float64)
        got = _grid_labels(sched, N, labels)
        if got is None or len(got) != len(want):
            if first is None:
                n = len(labels) if got is None else len(got)
                extra = ""
                if len(labels) == len(want) + 1:  # name the label the grid does not have
                    out = [i for i, x in enumerate(labels) if x not in set(want.tolist())]
                    j = out[0] if out else len(want)
                    extra = f" (the extra entry {j}: label {_fmt(labels[j])})"
                first = ("length", N, f"N = {N}: {n} timesteps where {what} gives "
                         f"{len(want)}{extra}")  # fmt: skip
                plot = _plot_payload("timestep", labels, want, None, N)
            continue
        if exact:
            ok = (got == want) | (ties & (np.abs(got - want) == 1.0))
            tol_t = np.zeros(N)
        else:
            tol_t = 2 * U32 * np.maximum(np.abs(want), 1.0)
            ok = np.abs(got - want) <= tol_t
        if not ok.all():
            if first is None:
                i = int(np.nonzero(~ok)[0][0])
                d = got[i] - want[i]
                rule = ("exact equality after rounding" if exact
                        else f"tolerance {tol_t[i]:.1g} (float32 labels)")  # fmt: skip
                tie = " (a tie: either neighbour accepted)" if ties[i] else ""
                first = ("timestep", N, f"N = {N}, entry {i}: timestep {_fmt(got[i])}, {what} "
                         f"gives {_fmt(want[i])}{tie} (difference {d:+.6g}; {rule})", i,
                         float(got[i]), float(want[i]))  # fmt: skip
                plot = _plot_payload("timestep", got, want, i, N)
            continue
        if hasattr(sched, "sigmas") and not sched.config.get("rescale_betas_zero_snr", False):
            s = np.asarray(sched.sigmas.detach().cpu().double().numpy(), dtype=np.float64)
            grid = s[0::2][:N] if (N > 1 and len(s) >= 2 * N) else s[:N]
            lab = _log_alpha_bar(sched)
            ws, tol = _table_sigma(lab, got)  # at the labels as set (a tie either way)
            rel = np.abs(grid / ws - 1.0)
            fin = sched.config.get("final_sigmas_type")
            if fin in ("zero", "sigma_min") and len(s) > N:
                w_last = 0.0 if fin == "zero" else float(np.sqrt(np.expm1(-lab[0])))
                ws = np.append(ws, w_last)
                tol = np.append(tol, _table_sigma(lab, np.zeros(1))[1] if w_last else 0.0)
                grid = np.append(grid, s[-1])
                rel = np.append(rel, abs(s[-1] / w_last - 1.0) if w_last else abs(s[-1]))
            worst = max(worst, float(np.max(rel / np.maximum(tol, 1e-300), initial=0.0)))
            bad = np.nonzero(rel > tol)[0]
            if len(bad):
                if first is None:
                    i = int(bad[0])
                    at = (f"the table at timestep {_fmt(got[i])}" if i < N
                          else f"final_sigmas_type={fin!r}")  # fmt: skip
                    first = ("sigma", N, f"N = {N}, entry {i}: sigma {grid[i]:.6g}, {at} gives "
                             f"{ws[i]:.6g} (relative {rel[i]:.2g}, tolerance {tol[i]:.1g})", i,
                             float(grid[i]), float(ws[i]))  # fmt: skip
                    plot = _plot_payload("sigma", grid, ws, i, N)
                continue
        n_ok += 1
    steps = [n for n in steps if n not in {m for m, _ in skipped}]
    skip = (f"; N = {', '.join(str(m) for m, _ in skipped)} not judged: {skipped[0][1]}"
            if skipped else "")  # fmt: skip
    if first is None:
        tail = f" (sigmas worst {worst:.2g} of the tolerance)" if worst else ""
        msg = f"{what}: timesteps (and sigmas) equal at every N of {_ns(steps)}{tail}{skip}"
        if not judged:
            return None, None, (f"not judged: {msg}; Table 2 rounds linspace and the class "
                                "documents no interpolation"), {}  # fmt: skip
        return True, worst, msg, {}
    if first[0] == "raised":
        return None, None, (f"set_timesteps({first[1]}) raised {first[2]}: reported by the "
                            "as-shipped check"), {}  # fmt: skip
    detail = f"{first[2]}; {n_ok} of {len(steps)} N agree{skip}"
    if not judged:
        return None, None, (f"not judged ({what}; the class documents no interpolation): "
                            f"{detail}"), {}  # fmt: skip
    data = {"steps": first[1], "plot": plot}
    if len(first) > 3:
        data.update(entry=first[3], got=first[4], want=first[5])
    return False, None, detail, data


def _plot_payload(what, got, want, entry, N):
    """The failure plot of a grid (:func:`validation.conformance.plot_failures`): the
    scheduler's entries and the documented ones against their index, the first differing entry
    marked."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return {"series": {"scheduler": [list(range(len(got))), got.tolist()],
                       "documented": [list(range(len(want))), want.tolist()]},
            "mark": entry, "xlabel": f"entry (N = {N})", "ylabel": what,
            "log": what == "sigma"}  # fmt: skip


def _ns(steps) -> str:
    steps = list(steps)
    if steps == list(range(steps[0], steps[0] + len(steps))):
        return f"{steps[0]}..{steps[-1]}"
    head = [n for n in steps if n <= 100]
    if head == list(range(1, len(head) + 1)) and len(head) > 3:
        return f"1..{len(head)}, " + ", ".join(str(n) for n in steps[len(head):])
    return ", ".join(str(n) for n in steps)


def _check_zero_snr(case):
    """The scheduler's alphas_cumprod against :func:`zero_snr_alphas_cumprod`."""
    sched = case.factory()()
    want, tol = zero_snr_alphas_cumprod(sched)
    got = np.asarray(sched.alphas_cumprod.detach().cpu().double().numpy(), dtype=np.float64)
    if len(got) != len(want):
        return False, None, f"{len(got)} alphas_cumprod where the betas give {len(want)}", {}
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(got[:-1] / want[:-1] - 1.0)
    worst = float(np.max(rel / tol[:-1]))
    bad = np.nonzero(rel > tol[:-1])[0]
    what = "zero terminal SNR (Lin et al. 2024, Algorithm 1)"
    if len(bad):
        i = int(bad[0])
        return False, float(rel[i]), (f"{what}: alphas_cumprod[{i}] {got[i]:.8g}, Algorithm 1 "
                                      f"gives {want[i]:.8g} (relative {rel[i]:.2g}, tolerance "
                                      f"{tol[i]:.1g})"), {"entry": i}  # fmt: skip
    last = got[-1]
    if last == 0.0:
        return True, worst, f"{what}: alphas_cumprod within tolerance, the last exactly 0", {}
    if last == 2.0**-24 and hasattr(sched, "sigmas"):
        return None, worst, (f"{what}: alphas_cumprod[0..T-2] within tolerance (worst "
                             f"{worst:.2g} of it); the last is 2^-24 where Algorithm 1 gives 0 "
                             "(sigma would be infinite; a code comment, not the docstring): "
                             "not judged"), {}  # fmt: skip
    return False, float(last), (f"{what}: the last alphas_cumprod is {last:.3g} where "
                                "Algorithm 1 gives 0"), {"entry": len(got) - 1}  # fmt: skip


def _check_beta(case, steps):
    sched = case.factory()()
    if sched.config.get("sigma_min") is not None or sched.config.get("sigma_max") is not None:
        return None, None, "not documented here: sigma_min / sigma_max set in the configuration", {}
    parts = []
    for N in steps:
        s = case.factory()()
        s.set_timesteps(N, **case.set_timesteps)
        got = _scheduler_sigmas(s)
        a, b = beta_sigmas(s, N, "sigma"), beta_sigmas(s, N, "timestep")
        if len(got) != N:
            parts.append(f"N = {N}: {len(got)} sigmas")
            continue
        ra, rb = np.abs(got / a - 1.0), np.abs(got / b - 1.0)
        ib = int(np.argmax(rb))
        parts.append(f"N = {N}: the sigma-linear reading within {ra.max():.2g} relative; the "
                     f"timestep reading differs most at entry {ib}, sigma {got[ib]:.6g} where "
                     f"it gives {b[ib]:.6g}")  # fmt: skip
    return None, None, ("not judged (two readings of Lee et al. 2024, module docstring): "
                        + "; ".join(parts[:2])), {}  # fmt: skip


def _combine(name, parts):
    from diffusion_oracle.validation.conformance import CheckResult

    fails = [p for p in parts if p[0] is False]
    if fails:
        v = fails[0][1]
        detail = "; ".join(p[2] for p in fails + [p for p in parts if p[0] is not False])
        return CheckResult(name, False, v, detail, fails[0][3])
    passes = [p for p in parts if p[0] is True]
    detail = "; ".join(p[2] for p in parts)
    if passes:
        return CheckResult(name, True, max((p[1] or 0.0) for p in passes), detail)
    return CheckResult(name, None, None, detail)


def check_documented(case, *, steps=DOCUMENTED_STEPS, spacing_steps=SPACING_STEPS):
    """Check 9 of ``case`` (module docstring): the scheduler's sigmas after
    ``set_timesteps(N, **case.set_timesteps)`` against the documented formula at each N of
    ``steps`` (flow shift, Karras, exponential); its timesteps and their sigmas against the
    documented spacing (Lin et al. 2024, Table 2, or the class's own variant) at each N of
    ``spacing_steps``; zero terminal SNR (Algorithm 1) against alphas_cumprod; the first
    entry that differs and by how much."""
    name = "documented grid (sigmas vs the published formula)"
    steps, spacing_steps = step_counts(steps, "steps"), step_counts(spacing_steps,
                                                                        "spacing_steps")
    sched = case.factory()()
    cfg = sched.config
    parts = []
    if cfg.get("rescale_betas_zero_snr", False) and hasattr(sched, "alphas_cumprod"):
        parts.append(_check_zero_snr(case))
    options = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                           "use_lu_lambdas") if cfg.get(k, False)]  # fmt: skip
    if options == ["use_beta_sigmas"] and not _flow_family(sched):
        parts.append(_check_beta(case, steps))
    elif options or _flow_family(sched) or not (
            "timestep_spacing" in cfg or type(sched).__name__ in SOLVER_GRID_CLASSES
            or _base_name(sched) in SOLVER_GRID_CLASSES):  # fmt: skip
        res = _check_sigmas(case, steps)
        parts.append((res.passed, res.value, res.detail, res.data))
    else:
        parts.append(_check_spacing(case, spacing_steps))
    return _combine(name, parts)


def _base_name(sched) -> str:
    from diffusion_oracle.validation.pipeline import diffusers_name

    return diffusers_name(sched)


def _check_sigmas(case, steps=DOCUMENTED_STEPS):
    """The scheduler's sigmas after ``set_timesteps(N, **case.set_timesteps)`` against the
    documented sigma formula at each N (flow shift, Karras, exponential)."""
    from diffusion_oracle.validation.conformance import CheckResult

    name = "documented grid (sigmas vs the published formula)"
    factory = case.factory()
    mu = case.set_timesteps.get("mu")

    def compare(ends):
        worst, first, what, plot = 0.0, None, "", None
        for N in steps:
            sched = factory()
            if not hasattr(sched, "sigmas"):
                return CheckResult(name, None, None, "not documented here: no sigma table "
                                   "(a timestep spacing)")  # fmt: skip
            want, tol, what, why = documented_sigmas(sched, N, mu=mu, ends=ends)
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
                plot = _plot_payload("sigma", got, want, i, N)
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
                {"steps": N, "entry": i, "got": g, "want": w, "last": [g_last, w_last],
                 "plot": plot},
            )  # fmt: skip
        return CheckResult(name, True, worst, f"{what}: every entry within its float32 "
                           f"tolerance at N = {list(steps)} (worst {worst:.2g} of it)")  # fmt: skip

    res = compare("table")
    cfg = factory().config
    ranged = cfg.get("use_karras_sigmas", False) or cfg.get("use_exponential_sigmas", False)
    if res.passed is False and ranged:
        # the Euler family converts the sigmas at the spaced timesteps, so with leading or
        # trailing spacing its range is not the model's; no docstring names either range
        alt = compare("spaced")
        if alt.passed is True:
            return CheckResult(name, None, alt.value, (
                f"not judged: {alt.detail}, not between the training table's ends as Karras "
                f"et al. define sigma_min / sigma_max (that reading: {res.detail}); the class "
                "documents neither range"), res.data)  # fmt: skip
    return res
