"""What every conformance check shares: the result row (:class:`CheckResult`), the reference
sampler that runs a configuration's algorithm, a start batch at the first call's level, and
quieting diffusers' deprecation chatter.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CheckResult",
    "markdown_table",
    "md_cell",
    "noise_method",
    "parallel_rows",
    "row_verdict",
    "step_counts",
    "quiet",
    "reference_sampler",
    "start_batch",
]


@dataclass
class CheckResult:
    """One check of one case: ``passed`` None when not applicable, ``value`` the measured
    deviation (relative to the sample scale where stated), ``detail`` a short reason."""

    name: str
    passed: bool | None
    value: float | None = None
    detail: str = ""
    data: dict = field(default_factory=dict)  # what the plots draw (steps and W2, tolerance)


def quiet():
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="diffusers")


def start_batch(model, t0, n, seed):
    sch = model.schedule
    a, s = float(sch.alpha(t0)), float(sch.sigma(t0))
    g = np.random.default_rng(seed)
    return a * model.target.sample(n, rng=g) + s * g.standard_normal((n, model.d))


def reference_sampler(name):
    from diffusion_oracle import DDIM, DDPM, DPMSolverPP2M, DPMSolverPP3M, Euler, Heun

    return {
        "ddim": lambda: DDIM(0.0),
        "ddpm": lambda: DDPM("fixed_small"),
        "euler": Euler,
        "heun": Heun,
        "dpmpp2m": DPMSolverPP2M,
        "dpmpp3m-published": lambda: DPMSolverPP3M("published", warmup="diffusers"),
    }[name]()


def md_cell(text) -> str:
    """Markdown table cell text: pipes escaped, line breaks flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers, rows) -> list:
    """The lines of a GitHub markdown table (tabulate's "github" format) with every cell
    escaped by :func:`md_cell` (a ``|`` in a detail would otherwise split the row) and no
    number parsing (details stay as written)."""
    from tabulate import tabulate

    text = tabulate([[md_cell(c) for c in r] for r in rows], [md_cell(h) for h in headers],
                    tablefmt="github", disable_numparse=True)  # fmt: skip
    return text.splitlines()


def row_verdict(results) -> str:
    """A report row's verdict from its checks: FAIL if one failed, PASS if none failed and at
    least one judged (passed), INCONCLUSIVE when nothing was judged."""
    if any(c.passed is False for c in results):
        return "FAIL"
    return "PASS" if any(c.passed is True for c in results) else "INCONCLUSIVE"


def step_counts(steps, name="steps") -> tuple:
    """``steps`` as a non-empty tuple of ints >= 1 (ValueError / TypeError naming ``name``)."""
    from diffusion_oracle.reference._checks import positive_int

    out = tuple(positive_int(v, name) for v in steps)
    if not out:
        raise ValueError(f"{name} must name at least one step count, got {steps!r}")
    return out


def noise_method(sched):
    """How a scheduler noises clean latents: "add_noise" (x = alpha x0 + sigma eps, or
    x0 + sigma eps), "scale_noise" (flow: (1 - sigma) x0 + sigma eps), or None."""
    if hasattr(sched, "add_noise"):
        return "add_noise"
    if hasattr(sched, "scale_noise"):
        return "scale_noise"
    return None


def parallel_rows(fn, args, *, jobs: int = 1, bar=None) -> list:
    """``[fn(*a) for a in args]``, in ``jobs`` forked worker processes when jobs > 1 (the
    order kept), ticking ``bar`` (tqdm) per row; the args must pickle."""
    args = list(args)
    if jobs > 1 and len(args) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(fn, *a) for a in args]
            if bar is not None:
                for f in futures:
                    f.add_done_callback(lambda _f: bar.update(1))
            return [f.result() for f in futures]
    rows = []
    for a in args:
        rows.append(fn(*a))
        if bar is not None:
            bar.update(1)
    return rows
