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
