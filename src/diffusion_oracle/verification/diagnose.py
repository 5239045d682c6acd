"""Stage 4b of verify: say where and why a comparison failed.

- :func:`first_divergence`: run the sampler and the reference on the same grid from the same
  starts with the same noise, recording every model call; walk the two traces and name the first
  place they part and the ingredient that differs:

    model calls       one run calls the model fewer/more times (a dropped or extra step);
    model time        the same call asks the model about a different time (sigma);
    noise             the states part after a step, but agree when both runs get zero noise;
    prediction        the sampler's run is reproduced by the reference reading the model's
                      output as another parameterization (x0 taken as eps, ...);
    coefficients      the states part after a step for none of the reasons above;
    final step        every model call agrees, the outputs do not: the last update differs.

- :func:`grid_floor`: when a statistical test fails, is the grid itself to blame? The exact
  sampler on the same grid (exact draws of p at the last level, then the exact jump E[x0 | x])
  is tested the same way; if it fails too, the failure is a property of the grid's lowest level
  (a schedule whose sigma_min is not small against the modes), not of the sampler's steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusion_oracle.reference.exact import _ProbeRNG
from diffusion_oracle.reference.parameterization import PREDICTIONS

from .execute import TracingModel
from .plan import stream

__all__ = ["Divergence", "first_divergence", "GridFloor", "grid_floor"]


@dataclass
class Divergence:
    """Where two runs part: the ingredient, the call and step index, time, sigma, the size of
    the difference and the tolerance, and a sentence."""

    ingredient: str
    call: int | None
    step: int | None
    t: float | None
    sigma: float | None
    size: float
    tol: float
    detail: str

    def __str__(self):
        return self.detail


def _trace(sampler, model, x, grid, rng):
    tm = TracingModel(model, keep=True)
    try:
        out = sampler(tm, x.copy(), grid, rng=rng)
        out = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, float)
        err = None
    except Exception as exc:  # reported as the ingredient "runs"
        out, err = None, f"{type(exc).__name__}: {exc}"
    return tm, out, err


def _node(grid, t):
    """Index of the grid node nearest to time t."""
    return int(np.argmin(np.abs(np.asarray(grid.t) - t)))


class _Relabelled:
    """The model's output, labelled as another parameterization (for the prediction test)."""

    def __init__(self, model, prediction):
        self.model, self.prediction = model, prediction

    def __call__(self, x, t):
        return self.model(x, t)


def first_divergence(sampler, reference, model, grid, x, seed, tol: float, *,
                     dtype=None) -> Divergence | None:  # fmt: skip
    """The first place the sampler's run and the reference's part (module docstring), or None
    when they agree to ``tol`` (an RMS distance over the batch, in the state's units). Model
    times are compared to the rounding of ``dtype`` (a float32 run passes float32 times)."""
    from .tolerances import unit_roundoff

    t_rtol = 8 * unit_roundoff(dtype or "float64")

    def rms(a, b):
        return float(np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(-1).mean()))

    # (the noise test of _state_parts compares its zero-noise runs against the same tol_k)

    ts, out_s, err_s = _trace(sampler, model, x, grid, stream(seed, "diagnosis"))
    tr, out_r, err_r = _trace(reference, model, x, grid, stream(seed, "diagnosis"))
    if err_r:
        return Divergence("reference", None, None, None, None, math.inf, tol,
                          f"the reference itself raised {err_r}")  # fmt: skip
    if err_s:
        return Divergence("runs", None, None, None, None, math.inf, tol,
                          f"the sampler raised {err_s}")  # fmt: skip
    n = min(ts.calls, tr.calls)
    for k in range(n):
        t_s, t_r = ts.times[k], tr.times[k]
        i = _node(grid, t_r)
        if not math.isclose(t_s, t_r, rel_tol=t_rtol, abs_tol=t_rtol):
            s_s, s_r = float(grid.schedule.sigma(t_s)), float(grid.schedule.sigma(t_r))
            return Divergence(
                "model time", k, i, t_r, s_r, abs(t_s - t_r), 0.0,
                f"model time: at model call {k} (step {i} of {grid.steps}) the sampler asks the "
                f"model about t = {t_s:.6g} (sigma {s_s:.4g}), the reference about "
                f"t = {t_r:.6g} (sigma {s_r:.4g})",
            )  # fmt: skip
        dx = rms(ts.inputs[k], tr.inputs[k])
        # the rounding bound grows like sqrt(operations): after k of the run's calls it is
        # sqrt((k + 1) / calls) of the whole run's
        tol_k = tol * math.sqrt((k + 1) / max(tr.calls, 1))
        if dx > tol_k:
            return _state_parts(sampler, reference, model, grid, x, seed, tol_k, k, i, dx, t_r,
                                ts)  # fmt: skip
    if ts.calls != tr.calls:
        k = n
        i = _node(grid, tr.times[k]) if k < tr.calls else grid.steps - 1
        return Divergence(
            "model calls", k, i, None, None, abs(ts.calls - tr.calls), 0.0,
            f"model calls: the sampler calls the model {ts.calls} times, the reference "
            f"{tr.calls}; every call before call {k} agrees"
            + (f" (the reference's call {k} is at t = {tr.times[k]:.6g}, step {i})"
               if k < tr.calls else ""),
        )  # fmt: skip
    d_out = rms(out_s, out_r)
    if d_out > tol:
        return Divergence(
            "final step", None, grid.steps - 1, float(grid.t[-1]), float(grid.sigma[-1]), d_out,
            tol,
            f"final step: all {ts.calls} model calls agree (times, states), but the outputs "
            f"differ by {d_out:.2e} (tolerance {tol:.1e}): the last update (into "
            f"sigma = {grid.sigma[-1]:.3g}) is not the reference's",
        )  # fmt: skip
    return None


def _state_parts(sampler, reference, model, grid, x, seed, tol, k, i, dx, t_r, ts):
    where = (
        f"at model call {k} (step {i} of {grid.steps}, t = {t_r:.6g}, "
        f"sigma {float(grid.schedule.sigma(t_r)):.4g}) the state handed to the model differs by "
        f"{dx:.2e} (tolerance {tol:.1e})"
    )
    # noise: with zero noise in both runs, do the states still part at this call?
    zs, _, _ = _trace(sampler, model, x, grid, _ProbeRNG())
    zr, _, _ = _trace(reference, model, x, grid, _ProbeRNG())
    if zs.calls > k and zr.calls > k:
        dz = float(np.sqrt(((zs.inputs[k] - zr.inputs[k]) ** 2).sum(-1).mean()))
        if dz <= tol:
            return Divergence(
                "noise", k, i, t_r, float(grid.schedule.sigma(t_r)), dx, tol,
                f"noise: {where}; with zero noise in both runs they agree ({dz:.1e}): the noise "
                "the sampler adds before this call (its scale or its draws) is not the "
                "reference's",
            )  # fmt: skip
    # prediction: does the reference, reading the model's output as another parameterization,
    # reproduce the sampler's run?
    true = model.prediction
    for alt in PREDICTIONS:
        if alt in (true, "velocity", "score"):
            continue
        ra, _, err = _trace(reference, _Relabelled(model, alt), x, grid, stream(seed, "diagnosis"))
        if err is None and ra.calls > k:
            da = float(np.sqrt(((ra.inputs[k] - ts.inputs[k]) ** 2).sum(-1).mean()))
            if da <= tol:
                return Divergence(
                    "prediction", k, i, t_r, float(grid.schedule.sigma(t_r)), dx, tol,
                    f"prediction: {where}; the reference reproduces the sampler's state "
                    f"({da:.1e}) when it reads the model's {true!r} output as {alt!r}: the "
                    f"sampler uses the model's output as {alt!r}",
                )  # fmt: skip
    return Divergence(
        "coefficients", k, i, t_r, float(grid.schedule.sigma(t_r)), dx, tol,
        f"coefficients: {where}; the model calls before it agree, zero noise does not remove "
        "it and no other reading of the prediction explains it: the update of the step before "
        "this call uses other coefficients than the reference's",
    )  # fmt: skip


@dataclass
class GridFloor:
    """The exact sampler on the same grid, tested like the sampler: ``failed`` names the tests
    it fails too; ``shrink`` is the variance factor of the final jump for the narrowest
    direction, 1 / (1 + sigma_EDM^2 / s_min^2)."""

    failed: list
    sigma_edm: float
    s_min: float
    shrink: float
    detail: str

    def explain(self, test: str) -> str:
        """The explanation for one failed test: the grid's, when the exact sampler on the grid
        fails that same test; else the sampler's own."""
        if test in self.failed:
            return self.detail
        return (
            f"the exact sampler on this grid passes this test (last level sigma_EDM = "
            f"{self.sigma_edm:.3g}): the deviation is the sampler's own"
        )


def grid_floor(law, grid, n, alpha_each, seed, failed_names) -> GridFloor:
    """Test exact draws of the grid's ideal output law like the sampler's samples."""
    from .evidence import tier3_tests

    i = grid.steps - 1 if grid.final_zero else grid.steps
    a, s = float(grid.alpha[i]), float(grid.sigma[i])
    rng = stream(seed, "tier3-ideal")
    x = law.diffuse(a, s).sample(n, rng)
    ideal = law.denoise(x, a, s) if grid.final_zero else x
    stats = tier3_tests(law, ideal, alpha_each, seed)
    failed = [t.name for t in stats if not t.passed and t.name in failed_names]
    s_min = math.sqrt(float(law._evals.min()))
    sig = s / a
    shrink = 1.0 / (1.0 + (sig / s_min) ** 2)
    if failed:
        detail = (
            f"the exact sampler on this grid fails {', '.join(failed)} too: the grid's last "
            f"level sigma_EDM = {sig:.3g} against the narrowest mode std {s_min:.3g} shrinks "
            f"that direction's variance by the factor {shrink:.3f} in the final jump E[x0 | x]; "
            "a property of the grid (the schedule's lowest level), not of the sampler's steps"
        )
    else:
        detail = (
            f"the exact sampler on this grid passes these tests (last level sigma_EDM = "
            f"{sig:.3g}, variance factor {shrink:.4f}): the deviation is the sampler's own"
        )
    return GridFloor(failed, sig, s_min, shrink, detail)
