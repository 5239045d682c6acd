"""The report of :func:`diffusion_oracle.verify`: typed rows, a verdict that says what decided
it, and text, JSON and markdown renderings.

- :class:`Verdict`: PASS, FAIL, INCONCLUSIVE for the whole report; a check row may also be
  SKIPPED (not applicable here, with the reason), which never decides anything.
- :class:`Check`: one judged check (name, verdict, reason with the numbers behind it, tier,
  whether it judges the output law, machine-readable evidence).
- :class:`StepResult`: the evidence gathered at one step count.
- :class:`VerifyReport`: all of it; ``report.verdict`` is FAIL when any check fails,
  INCONCLUSIVE when a check could not be judged or when no check judged the output law, PASS
  otherwise. ``report.decided_by`` names the checks behind the verdict.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Verdict", "Check", "StepResult", "OrderFit", "VerifyReport", "overall_verdict"]


class Verdict(str, enum.Enum):
    """PASS: every judged check passed and the output law was judged. FAIL: a check failed.
    INCONCLUSIVE: nothing decided it (no check judged the law, or a check could not be
    judged). SKIPPED (rows only): the check does not apply here; the row says why."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    SKIPPED = "SKIPPED"

    def __str__(self):
        return self.value


@dataclass
class Check:
    """One check's judgement: ``verdict`` with the ``reason`` (the numbers and the tolerance
    behind it). ``law`` marks checks that judge the sampler's output law (tier 3, a converging
    tier-1 law, a same-grid match with a reference); a PASS of the report needs one of them.
    ``evidence`` holds the numbers for machines (``to_json``)."""

    name: str
    verdict: Verdict
    reason: str
    tier: int | None = None
    law: bool = False
    evidence: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """True for PASS, False for FAIL, None when not judged (INCONCLUSIVE, SKIPPED)."""
        if self.verdict is Verdict.PASS:
            return True
        if self.verdict is Verdict.FAIL:
            return False
        return None

    def line(self) -> str:
        return f"[{self.verdict.value}] {self.name}: {self.reason}"


@dataclass
class StepResult:
    """The evidence at one step count N."""

    steps: int
    nfe: int | None = None  # model calls per sample (tier-1 run)
    distinct_times: int | None = None  # distinct model times of that run
    dtype: str | None = None  # the precision the sampler handed the model
    w2: float | None = None  # tier 1: to the ideal output law on this grid
    w2_data: float | None = None  # tier 1: to the data law (includes the final-jump floor)
    w2_reference: float | None = None  # tier 1: to the reference's output law, same grid
    w2_prior: float | None = None  # tier 1: output shift when started from the usual prior
    path_error: float | None = None  # tier 2: RMS endpoint error against the exact flow map
    landing: float | None = None  # RMS distance to the point mass (landing check)
    error: str | None = None


@dataclass
class OrderFit:
    """Measured convergence order: least-squares slope of log error vs log steps over the
    asymptotic window (the last three step counts above the round-off floor), the local slopes,
    and the step counts judged pre-asymptotic (local slope outside the window)."""

    slope: float
    local: list
    window: list
    pre_asymptotic: list
    reached: float | None = None  # pathwise fits: the share of starts whose slope is in window

    def __str__(self):
        return f"{self.slope:.2f}"


def overall_verdict(checks) -> tuple[Verdict, list, str]:
    """(verdict, names of the deciding checks, one-line reason) from the check rows: FAIL when
    any fails (decided by the failures); INCONCLUSIVE when a check is inconclusive (decided by
    those) or when no passing check judged the output law; PASS otherwise (decided by every
    passing check)."""
    failed = [c.name for c in checks if c.verdict is Verdict.FAIL]
    if failed:
        return Verdict.FAIL, failed, f"{len(failed)} check(s) failed: {', '.join(failed)}"
    unsure = [c.name for c in checks if c.verdict is Verdict.INCONCLUSIVE]
    if unsure:
        return (
            Verdict.INCONCLUSIVE,
            unsure,
            f"not judged: {', '.join(unsure)}",
        )
    law = [c.name for c in checks if c.verdict is Verdict.PASS and c.law]
    if not law:
        return (
            Verdict.INCONCLUSIVE,
            [],
            "no check judged the output law (tier 3 off, and no converging tier-1 law or "
            "same-grid reference)",
        )
    passed = [c.name for c in checks if c.verdict is Verdict.PASS]
    return Verdict.PASS, passed, f"{len(passed)} check(s) passed, the law judged by: " + (
        ", ".join(law)
    )


def _clean(v):
    """JSON-safe: NaN/inf as strings, numpy scalars and arrays as Python values."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, enum.Enum):
        return v.value
    return v


@dataclass
class VerifyReport:
    """What :func:`diffusion_oracle.verify` found. ``print(report)`` shows the table and one
    line per check; ``report.verdict`` (a :class:`Verdict`) and ``report.passed`` (PASS only)
    the outcome; ``report.to_json()`` / ``to_markdown()`` for tools; ``report.plot(folder)``
    saves the convergence plot and a samples picture."""

    sampler: str
    declared_order: float | None
    target: str
    schedule: str
    grid: str
    dtype: str | None = None
    rows: list = field(default_factory=list)
    order_tier1: OrderFit | None = None
    order_tier2: OrderFit | None = None
    stats: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    samples: np.ndarray | None = None
    notes: list = field(default_factory=list)
    plot_paths: list = field(default_factory=list)
    _target_obj: object = None

    # ------------------------------------------------------------------ outcome
    @property
    def verdict(self) -> Verdict:
        """PASS, FAIL or INCONCLUSIVE (:func:`overall_verdict`)."""
        return overall_verdict(self.checks)[0]

    @property
    def decided_by(self) -> list:
        """Names of the checks that decided :attr:`verdict`."""
        return overall_verdict(self.checks)[1]

    @property
    def passed(self) -> bool:
        """True only for a PASS (an INCONCLUSIVE report has not passed)."""
        return self.verdict is Verdict.PASS

    @property
    def verdicts(self) -> list:
        """The check rows (the name of earlier releases)."""
        return self.checks

    def check(self, name: str) -> Check:
        """The row called ``name`` (KeyError naming the rows when absent)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; the report has {[c.name for c in self.checks]}")

    # ------------------------------------------------------------------ renderings
    def __str__(self):
        def f(v, fmt=".3e"):
            return "-" if v is None else format(v, fmt)

        lines = [
            f"sampler {self.sampler}  (declared order {self.declared_order})",
            f"target {self.target}, schedule {self.schedule}, grid {self.grid}, "
            f"dtype {self.dtype or '-'}",
            "",
            f"{'steps':>6} {'NFE':>5} {'W2 tier1':>11} {'W2 to data':>11} {'vs ref':>10} "
            f"{'path err':>11} {'landing':>10}  note",
        ]
        for r in self.rows:
            lines.append(
                f"{r.steps:>6} {f(r.nfe, 'd'):>5} {f(r.w2):>11} {f(r.w2_data):>11} "
                f"{f(r.w2_reference, '.2e'):>10} {f(r.path_error):>11} {f(r.landing, '.2e'):>10}"
                f"  {r.error or ''}"
            )
        lines.append("")
        for name, fit in (
            ("tier 1 (exact W2)", self.order_tier1),
            ("tier 2 (pathwise)", self.order_tier2),
        ):
            if fit is not None:
                loc = " ".join(f"{s:.2f}" for s in fit.local)
                pre = f"; pre-asymptotic at {fit.pre_asymptotic}" if fit.pre_asymptotic else ""
                lines.append(
                    f"order {name}: {fit.slope:.2f} over steps {fit.window} "
                    f"(local slopes {loc}){pre}"
                )
        for note in self.notes:
            lines.append(f"note: {note}")
        lines.append("")
        for c in self.checks:
            lines.append(c.line())
        verdict, _, why = overall_verdict(self.checks)
        lines.append(f"verdict: {verdict.value} ({why})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain data: the header, per-step rows, order fits, checks and the verdict."""
        verdict, decided, why = overall_verdict(self.checks)
        return _clean(
            {
                "sampler": self.sampler,
                "declared_order": self.declared_order,
                "target": self.target,
                "schedule": self.schedule,
                "grid": self.grid,
                "dtype": self.dtype,
                "verdict": verdict,
                "decided_by": decided,
                "reason": why,
                "checks": [
                    {
                        "name": c.name,
                        "verdict": c.verdict,
                        "reason": c.reason,
                        "tier": c.tier,
                        "law": c.law,
                        "evidence": c.evidence,
                    }
                    for c in self.checks
                ],
                "rows": [asdict(r) for r in self.rows],
                "order_tier1": asdict(self.order_tier1) if self.order_tier1 else None,
                "order_tier2": asdict(self.order_tier2) if self.order_tier2 else None,
                "notes": list(self.notes),
            }
        )

    def to_json(self, **kw) -> str:
        """:meth:`to_dict` as JSON (``json.dumps`` keywords pass through)."""
        kw.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kw)

    def to_markdown(self) -> str:
        """A markdown section: the verdict, the checks as a table, the per-step rows."""
        verdict, _, why = overall_verdict(self.checks)

        def esc(s):
            return str(s).replace("|", "\\|")

        out = [
            f"### {esc(self.sampler)}: {verdict.value}",
            "",
            f"{esc(why)}. Target {esc(self.target)}, schedule {esc(self.schedule)}, grid "
            f"{esc(self.grid)}, dtype {self.dtype or '-'}.",
            "",
            "| check | verdict | reason |",
            "|---|---|---|",
        ]
        out += [f"| {esc(c.name)} | {c.verdict.value} | {esc(c.reason)} |" for c in self.checks]
        out += ["", "| N | NFE | W2 tier 1 | W2 vs reference | path error | landing |"]
        out += ["|---|---|---|---|---|---|"]

        def g(v):
            return "-" if v is None else f"{v:.2e}"

        for r in self.rows:
            out.append(
                f"| {r.steps} | {r.nfe if r.nfe is not None else '-'} | {g(r.w2)} | "
                f"{g(r.w2_reference)} | {g(r.path_error)} | {g(r.landing)} |"
            )
        return "\n".join(out) + "\n"

    def plot(self, folder) -> list:
        """Save ``convergence_<sampler>.png`` (log-log errors with the fitted slope) and, for
        2-D and 1-D targets, ``samples_<sampler>.png`` (samples over the exact density)."""
        from .plots import plot_report

        return plot_report(self, folder)
