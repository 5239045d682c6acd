"""Stage 1 of verify: what will be run. The grids (one per step count, a documented
:class:`~diffusion_oracle.reference.grids.Grid` each), which grid family and why, whether that
family refines (so that an order can be read from it), and independent random streams.

Grid choice, in order: ``grid=`` when given; else the sampler's ``default_grid``; else the
reference's ``default_grid`` (a user sampler is judged on the grid family of the method it
implements); else "log_snr" (equal steps in log-SNR: the family on which every consistent
sampler reaches its asymptotic order earliest across schedules; Lu et al. 2022 Sec. 3.3). A
sampler that chooses its own times (``make_grid(schedule, n)``, e.g. a diffusers scheduler) runs
on its own grid.

Random streams: every use of randomness in a verify run draws from its own stream,
``SeedSequence(seed).spawn``-style keys (seed, stream), so runs with consecutive seeds share no
draws (they used to: seed + 1 of one run was seed + 2 of the next)."""

from __future__ import annotations

import math

import numpy as np

from diffusion_oracle.reference.grids import DISCRETE_SPACINGS, GRID_KINDS, make_grid, respaced_grid

__all__ = ["plan_grids", "choose_grid", "family_of", "stream", "STREAMS", "default_t_end"]

JUMP_FRACTION = 0.05  # default t_end: sigma_EDM = 5% of the narrowest component's smallest std

# the named random streams of one verify run
STREAMS = (
    "tier1-start",
    "tier1-noise",
    "tier2-start",
    "tier2-noise",
    "tier3",
    "tier3-ideal",
    "landing",
    "stats-resp",
    "stats-ks",
    "stats-nll",
    "stats-mmd",
    "diagnosis",
)


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator for stream ``name`` of run ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), STREAMS.index(name)]))


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit integer seed for APIs that take an int (torch generators, cached nulls)."""
    ss = np.random.SeedSequence([int(seed), STREAMS.index(name)])
    return int(ss.generate_state(2, np.uint32).astype(np.uint64) @ np.array([1, 2**31], np.uint64))


def default_t_end(schedule, target) -> float:
    """The last time before the final jump: where sigma_EDM is 5% of the smallest standard
    deviation of any component, so the jump E[x0 | x] shrinks every direction by at most
    1 - 1/(1 + 0.05^2) = 0.25% in variance, below what tier 3 resolves; clipped to the
    schedule."""
    s_min = math.sqrt(max(float(target._evals.min()), 1e-300))
    lo, hi = schedule.log_snr_range()
    lam = min(-2.0 * math.log(JUMP_FRACTION * s_min), hi)
    if not math.isfinite(lam):
        return float(schedule.t_min)
    t = float(schedule.t_from_log_snr(min(max(lam, lo), hi)))
    if schedule.sigma(t) <= 0:
        t = float(schedule.t_from_log_snr(min(hi, 30.0)))
    return t


def choose_grid(sampler, reference=None, grid=None) -> tuple[str, str]:
    """(grid kind, why) by the rule of the module docstring."""
    if grid is not None:
        return grid, "given"
    own = getattr(sampler, "default_grid", None)
    if own is not None:
        return own, "the sampler's default_grid"
    ref = getattr(reference, "default_grid", None)
    if ref is not None:
        return ref, f"the reference {getattr(reference, 'name', reference)!r}'s default_grid"
    return "log_snr", "no default_grid declared: equal steps in log-SNR"


def plan_grids(sampler, schedule, steps, kind, *, t_start=None, t_end=None) -> dict:
    """Grids for every N in ``steps``: the sampler's own (``make_grid``), a respaced discrete
    grid, or ``make_grid`` of the continuous family."""

    def grid_for(n):
        if hasattr(sampler, "make_grid"):
            return sampler.make_grid(schedule, n)
        if kind in DISCRETE_SPACINGS:
            return respaced_grid(schedule, n, kind)
        return make_grid(schedule, n, kind, t_start=t_start, t_end=t_end)

    return grid_for, {n: grid_for(n) for n in steps}


def family_of(grids) -> tuple[str, bool]:
    """(family name, refines) of a set of grids: refining only when every grid says so."""
    gs = list(grids.values())
    fam = {getattr(g, "family", "custom") for g in gs}
    refines = all(getattr(g, "refines", False) for g in gs)
    return ", ".join(sorted(fam)), refines


VALID_KINDS = GRID_KINDS + DISCRETE_SPACINGS
