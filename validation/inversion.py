"""verify's inversion mode (issue 20): an inversion scheduler judged under its own convention.

An inversion runs the sampler backwards, from the data (or a level near it) towards the noise.
With the exact network its ideal output is known in closed form: the probability-flow map
carries the marginal p_s at the start level to the marginal p_t at the end level (it is the
flow of the marginals: Song et al. 2021b, arXiv:2011.13456, Sec. 4.3), so the **exact inverted
law** of a start from p_s is

    p_t = alpha_t x0 + sigma_t eps,  x0 ~ data,  eps ~ N(0, I)

(for the moment-matched Gaussian of the target, N(alpha_t m, alpha_t^2 C + sigma_t^2 I)). Two
conventions are in use for which level the network is told (judged by
:func:`validation.pipeline.judge_labels` from the measured levels):

- **model at the current level** (DPM-Solver inversion, the ODE solved forwards in t:
  DPMSolverMultistepInverseScheduler; Dhariwal & Nichol 2021, App. F for DDIM);
- **model at the destination level** (diffusers' DDIMInverseScheduler: it steps from timestep
  k - T/N to k calling the network at k; it may therefore start at the data itself).

On the levels the scheduler really goes through, the DDIM inversion of each convention
(:func:`reference.samplers.ddim_invert`, model_time "current" / "next") has an exact output law
too (the run is affine in the start on a Gaussian): the report gives the scheduler's distance to
both, and with ``reference="ddim"`` judges that the scheduler *is* the DDIM inversion of the
convention its labels follow, within the rounding model of
:func:`verification.tolerances.rounding_tolerance`. The convergence to the exact inverted law
is judged as tier 1's order (:func:`verification.judge.judge_order`, on the scheduler's own,
rough, timesteps).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["inversion_levels", "verify_inversion"]


def _marginal(gauss, lam: float, schedule):
    """(mean, cov) of the marginal at log-SNR ``lam`` of the Gaussian ``gauss`` in the frame of
    ``schedule`` (the frame the driver returns samples in: VP, flow, VE), x = alpha x0 +
    sigma eps with (alpha, sigma) of the schedule at that log-SNR; the data itself at +inf."""
    from .diffusers import _ref_frame
    from .pipeline import frame_scales

    if lam == math.inf:
        return gauss.mean_vec.copy(), gauss.cov.copy()
    a, s = frame_scales(_ref_frame(schedule), lam)
    return a * gauss.mean_vec, a * a * gauss.cov + s * s * np.eye(gauss.d)


def inversion_levels(trace, start: float, schedule):
    """The reference :class:`Grid` of the levels an inversion run goes through (decreasing t,
    as ``ddim_invert`` walks it from its last node): the start level ``start`` (the data when
    +inf or above the schedule's range: ``final_zero``), each later network input further
    towards the noise beyond :func:`validation.pipeline.probe_tolerance` (a second stage at
    the level the next step starts from is not a node), and the output's level."""
    from diffusion_oracle.reference.grids import Grid

    from .pipeline import probe_tolerance

    lo, hi = schedule.log_snr_range()

    def t_of(lam):
        return float(schedule.t_from_log_snr(min(max(lam, lo), hi)))

    def is_data(lam):  # beyond the schedule's last level with sigma > 0
        return lam >= hi or float(schedule.sigma(t_of(lam))) <= 0.0

    lams = [float(v) for v in trace.lam_in] + [float(trace.lam_end)]
    nodes, last = [], float(start)
    for i, lam in enumerate(lams):
        tol = probe_tolerance(trace, i)
        if lam < last - tol and not is_data(lam):
            nodes.append(lam)
            last = lam
    data = is_data(float(start))
    if not data:
        nodes.insert(0, float(start))
    times = [t_of(v) for v in nodes]
    return Grid(schedule, np.asarray(times[::-1]), final_zero=data,
                family="inversion levels", refines=False)  # fmt: skip


def verify_inversion(sampler, target, schedule, steps, *, reference=None, target_name=None,
                     progress: bool = True):  # fmt: skip
    """Verify the inversion scheduler of ``sampler`` (a
    :class:`validation.diffusers.SchedulerSampler` with ``inverse=True``) on ``target`` (module
    docstring). Per step count N: the level probe, the scheduler's affine map on the target's
    moment-matched Gaussian (exact network), its output law from the exact marginal at its start
    level, W2 to the exact inverted law at its end level (the row's ``w2``) and to the DDIM
    inversions of both conventions on the same levels. Checks: runs, the label/level check
    (which convention), the order of the W2 to the exact inversion (tier 1), and with
    ``reference="ddim"`` the same-levels match with the DDIM inversion of the convention found.
    The exact network is deterministic and so are these schedulers: no seed. Returns a
    :class:`VerifyReport`."""
    from tqdm import tqdm

    from diffusion_oracle.reference.exact import ProbeError, gaussian_w2, probe_affine
    from diffusion_oracle.reference.model import ExactModel
    from diffusion_oracle.reference.samplers import ddim_invert
    from diffusion_oracle.verification.evidence import data_m2, moment_gaussian
    from diffusion_oracle.verification.judge import judge_order
    from diffusion_oracle.verification.report import Check, Verdict
    from diffusion_oracle.verification.tolerances import rounding_tolerance

    from .diffusers import run_pipeline
    from .pipeline import PipelineError, judge_labels, network_convention, prepare, start_level

    if reference not in (None, "ddim"):
        raise ValueError(f"reference must be None or 'ddim' in inversion mode, got {reference!r}")
    if getattr(sampler, "stochastic", False):
        report_s = _empty_report(sampler, target, target_name, schedule, steps)
        from diffusion_oracle.verification.report import Check, Verdict

        report_s.checks.append(Check(
            "inversion", Verdict.INCONCLUSIVE, "the inversion adds noise (stochastic): the "
            "inverted law of a stochastic map is not judged here (its affine probe assumes a "
            "deterministic run)"))  # fmt: skip
        return report_s
    report = _empty_report(sampler, target, target_name, schedule, steps)
    report.notes.append(
        "inversion mode: the data (or the scheduler's first level) towards the noise; judged "
        "against the exact inverted law (the flow map carries p_start to p_end), on the "
        "target's moment-matched Gaussian"
    )
    gauss = moment_gaussian(target)
    model = ExactModel(gauss, schedule)
    pipe, factory = sampler.pipeline, sampler.factory
    m2, d = data_m2(gauss), gauss.d
    traces, per_conv = [], {"current": [], "destination": []}
    tols = []
    bar = tqdm(total=len(steps), desc=f"verify {sampler.name} (inversion)", unit="N",
               disable=not progress, leave=False)  # fmt: skip
    try:
        for row in report.rows:
            N = row.steps
            tr = sampler.trace(schedule, N)
            traces.append(tr)
            sched, labels, begin = prepare(factory, N, pipe, schedule)
            lam0 = start_level(sched, labels, begin, network_convention(sched, schedule))

            def run(model, x, grid, *, rng=None, N=N):
                return run_pipeline(factory, model, x, N, rng=rng, pipeline=pipe).sample

            A = probe_affine(run, model, None, d)
            m, S = A.output_law(*_marginal(gauss, lam0, schedule))
            row.w2 = gaussian_w2(m, S, *_marginal(gauss, float(tr.lam_end), schedule))
            row.nfe, row.dtype = len(tr.labels), pipe.dtype
            try:
                grid = inversion_levels(tr, lam0, schedule)
            except ValueError:  # fewer than two levels towards the noise: the wrong way
                grid = None  # (the label check names it)
            tols.append(0.0 if grid is None else rounding_tolerance(
                pipe.dtype, grid, m2=m2, d=d, calls=len(tr.labels),
                table_dtype=sampler.table_dtype))  # fmt: skip
            for conv, model_time in (("current", "current"), ("destination", "next")):
                if grid is None or (grid.final_zero and model_time == "current"):
                    per_conv[conv].append(None)  # the model cannot be asked at the data
                    continue

                def ddim(model, x, g, *, rng=None, mt=model_time, grid=grid):
                    return ddim_invert(model, x, grid, model_time=mt)

                try:
                    B = probe_affine(ddim, model, None, d)
                except ValueError:  # e.g. eps cannot give x0 at alpha = 0 (pure noise)
                    per_conv[conv].append(None)
                    continue
                start = _marginal(gauss, lam0, schedule)
                per_conv[conv].append(gaussian_w2(m, S, *B.output_law(*start)))
            bar.update(1)
    except (PipelineError, ProbeError) as exc:
        bar.close()
        report.checks.append(Check("runs", Verdict.FAIL, str(exc)))
        return report
    bar.close()
    if not all(math.isfinite(r.w2) for r in report.rows):
        bad = [r.steps for r in report.rows if not math.isfinite(r.w2)]
        report.checks.append(Check("runs", Verdict.FAIL, f"non-finite output law at N = {bad}"))
        return report
    report.checks.append(Check("runs", Verdict.PASS, "finite output at every step count"))
    labels = judge_labels(traces, inverse=True)
    report.checks.append(labels)
    conv = labels.evidence.get("convention")
    w2 = [r.w2 for r in report.rows]
    from diffusion_oracle.harness import fit_order

    floor = {r.steps: t for r, t in zip(report.rows, tols, strict=True)}
    fit = fit_order([r.steps for r in report.rows], w2, sampler.order, floor=floor)
    report.order_tier1 = fit
    order = judge_order("order (tier 1, exact inversion)", 1, fit, w2,
                        [r.steps for r in report.rows], sampler.order, refines=False,
                        family=f"{sampler.name} timesteps", floor=floor, notes=report.notes,
                        rounding_floor=pipe.dtype != "float64")  # fmt: skip
    order.reason = (f"W2 to the exact inverted law {w2[0]:.2e} .. {w2[-1]:.2e}; "
                    + order.reason)  # fmt: skip
    report.checks.append(order)
    dist = {c: per_conv[c] for c in per_conv}
    for c, vals in dist.items():
        txt = ", ".join("n/a" if v is None else f"{v:.1e}" for v in vals)
        report.notes.append(f"W2 to the DDIM inversion with the model at the {c} level on the "
                            f"same levels, N = {list(steps)}: {txt}")  # fmt: skip
    if reference == "ddim":
        report.checks.append(_judge_ddim(conv, dist, tols, list(steps)))
    return report


def _empty_report(sampler, target, target_name, schedule, steps):
    from diffusion_oracle.verification.report import StepResult, VerifyReport

    tname = target_name or type(target).__name__
    report = VerifyReport(sampler.name, sampler.order, tname, repr(schedule), "inversion",
                          _target_obj=target)  # fmt: skip
    report.rows = [StepResult(int(n)) for n in steps]
    report.dtype = sampler.pipeline.dtype
    return report


def _judge_ddim(conv, dist, tols, steps):
    """The same-levels check against the DDIM inversion of the convention the labels follow:
    W2 within the rounding tolerance at every N."""
    from diffusion_oracle.verification.report import Check, Verdict

    name = "same levels as the DDIM inversion"
    if conv is None:
        return Check(name, Verdict.INCONCLUSIVE, "no labelling convention was established (the "
                     "label check did not pass): no DDIM inversion to compare with", 1)  # fmt: skip
    vals = dist[conv]
    if any(v is None for v in vals):
        return Check(name, Verdict.SKIPPED, f"the model at the {conv} level is not defined on "
                     "these levels (a start at the data, an end at pure noise, or levels that "
                     "do not rise)", 1)  # fmt: skip
    bad = [(n, v, t) for n, v, t in zip(steps, vals, tols, strict=True) if v > t]
    ev = {"convention": conv, "w2": vals, "tolerance": tols}
    if bad:
        n, v, t = bad[0]
        return Check(name, Verdict.FAIL, f"N = {n}: W2 {v:.2e} to the DDIM inversion with the "
                     f"model at the {conv} level on the same levels, tolerance {t:.1e} "
                     "(rounding)", 1, evidence=ev)  # fmt: skip
    return Check(name, Verdict.PASS, f"equals the DDIM inversion with the model at the {conv} "
                 f"level on its own levels: W2 <= {max(vals):.1e} (tolerance from "
                 f"{min(tols):.1e}, rounding) at N = {steps}", 1, law=True,
                 evidence=ev)  # fmt: skip
