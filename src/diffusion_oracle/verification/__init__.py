"""The stages of :func:`diffusion_oracle.verify`, one module each (see harness.py):

- :mod:`.plan`: grids, their family and whether it refines, random streams;
- :mod:`.execute`: running a sampler, recording its model calls and dtype;
- :mod:`.evidence`: tier 1 (exact Gaussian law), tier 2 (pathwise), tier 3 (statistical),
  the point-mass landing;
- :mod:`.judge`: one function per check, each row saying what decided it;
- :mod:`.diagnose`: the first divergence of two runs, and whether the grid explains a failure;
- :mod:`.tolerances`: the rounding and sampling error models behind every tolerance;
- :mod:`.report`: :class:`VerifyReport`, :class:`Check`, :class:`Verdict`, renderings.
"""

from .report import Check, OrderFit, StepResult, Verdict, VerifyReport, overall_verdict

__all__ = ["Check", "OrderFit", "StepResult", "Verdict", "VerifyReport", "overall_verdict"]
