"""Guidance and inpainting with exact ingredients.

- :class:`CFG`: classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598, eq. 6, in the
  diffusers convention) eps~ = eps_neg + w (eps_c - eps_neg), eps_neg the unconditional
  prediction or a negative condition's; w = 1 gives the conditional model exactly.
- :class:`ClassifierGuidance`: score~ = score + s grad log p_t(c | x) (Dhariwal & Nichol 2021,
  arXiv:2105.05233, Sec. 4; Song et al. 2021, eq. 14) with the exact classifier of a labelled
  mixture, grad log p_t(c | x) = score_c(x) - score(x); s = 1 gives the conditional model.
- :class:`Replacement`: inpainting by replacing the observed coordinates with a forward-noised
  observation after every ancestral step (Song et al. 2021, App. I.2; RePaint without
  resampling, Lugmayr et al. 2022). Its ground truth is the exact conditional
  ``GaussianMixture.condition`` (noise-free observation of selected coordinates); the method is
  known to be biased, and the harness measures by how much.

The guided samplers wrap any base sampler and need the harness's exact model (an
:class:`ExactModel`, whose target and schedule define the conditional models). Each exposes
``exact_counterpart``: the same guidance around :class:`ExactODE`, the exact flow map of the
guided probability-flow ODE, for tier 2.
"""

from __future__ import annotations

import numpy as np

from ._checks import finite, finite_scalar
from .model import ExactModel
from .samplers import DDPM, ExactODE, Sampler

__all__ = ["CFG", "ClassifierGuidance", "Replacement", "GuidedModel"]


def _label(value, name: str) -> int:
    """A class label: an integer (not a bool, not a float, not a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer class label, got {type(value).__name__} "
                        f"{value!r}")  # fmt: skip
    return int(value)


class GuidedModel:
    """A model answering eps from a combination of exact models at the same (x, t):
    eps~ = eps_base + w (eps_cond - eps_base). Used by :class:`CFG` and
    :class:`ClassifierGuidance` (for the latter, eps = -sigma score, so the combination is
    score + w (score_c - score))."""

    prediction = "eps"

    def __init__(self, base: ExactModel, cond: ExactModel, w: float, sign: float = 1.0):
        self.base, self.cond, self.w, self.sign = base, cond, w, sign
        self.schedule = base.schedule
        self.target = base.target

    def __call__(self, x, t):
        e_b = self.base.predict(x, t, "eps")
        e_c = self.cond.predict(x, t, "eps")
        return e_b + self.sign * self.w * (e_c - e_b)


class _Guided(Sampler):
    tier1_applicable = False  # the guided law is not the target's

    def __init__(self, sampler: Sampler, label: int, w: float, negative=None, *, sign=1.0,
                 w_name="w"):  # fmt: skip
        if not callable(sampler):
            raise TypeError(f"sampler must be callable, got {type(sampler).__name__}")
        label = _label(label, "label")
        negative = None if negative is None else _label(negative, "negative")
        self.sampler, self.label, self.negative, self.sign = sampler, label, negative, sign
        self.w = finite_scalar(w, w_name)
        self.order = getattr(sampler, "order", None)
        self.stochastic = getattr(sampler, "stochastic", False)
        self.default_grid = getattr(sampler, "default_grid", "uniform")

    def _models(self, model):
        if not isinstance(model, ExactModel):
            raise TypeError(
                f"{type(self).__name__} needs the harness's ExactModel, got {type(model).__name__}"
            )
        tg = model.target
        if getattr(tg, "labels", None) is None:
            raise ValueError(f"{type(self).__name__} needs a target with class labels")
        cond = ExactModel(tg.select(self.label), model.schedule)
        base = ExactModel(tg if self.negative is None else tg.select(self.negative), model.schedule)
        return base, cond

    def __call__(self, model, x_init, grid, *, rng=None):
        base, cond = self._models(model)
        return self.sampler(GuidedModel(base, cond, self.w, self.sign), x_init, grid, rng=rng)


class CFG(_Guided):
    """Classifier-free guidance around ``sampler`` (module docstring): condition ``label``,
    scale ``w`` (diffusers' guidance_scale; 1 = conditional), optional ``negative`` label whose
    prediction replaces the unconditional one."""

    def __init__(self, sampler, label: int, w: float, negative: int | None = None):
        super().__init__(sampler, label, w, negative)
        neg = "" if negative is None else f", negative={negative}"
        self.name = f"cfg({getattr(sampler, 'name', sampler)}, c={label}, w={self.w:g}{neg})"
        self.exact_counterpart = (
            None if isinstance(sampler, ExactODE) else CFG(ExactODE(), label, w, negative)
        )


class ClassifierGuidance(_Guided):
    """Classifier guidance with the exact classifier (module docstring): score~ = score +
    ``scale`` grad log p_t(label | x)."""

    def __init__(self, sampler, label: int, scale: float):
        super().__init__(sampler, label, scale, w_name="scale")
        self.name = (
            f"classifier-guidance({getattr(sampler, 'name', sampler)}, c={label}, s={self.w:g})"
        )
        self.exact_counterpart = (
            None if isinstance(sampler, ExactODE) else ClassifierGuidance(ExactODE(), label, scale)
        )


class Replacement(DDPM):
    """Inpainting by replacement (module docstring): after each ancestral DDPM step the
    coordinates in ``mask`` are set to alpha_s y + sigma_s z, z ~ N(0, I), and to y at the end.
    ``mask``: boolean (d,) of observed coordinates; ``y``: their values. Order 1 as a sampler;
    not exact for the conditional law."""

    def __init__(self, mask, y, variance: str = "fixed_small"):
        super().__init__(variance)
        m = np.asarray(mask)
        if m.dtype != bool or m.ndim != 1:
            raise TypeError(f"mask must be a 1-D boolean array (d,), got dtype {m.dtype}, shape "
                            f"{m.shape}")  # fmt: skip
        self.mask = m
        self.y = finite(y, "y")
        if self.y.shape != (int(self.mask.sum()),):
            raise ValueError(
                f"y must have one value per observed coordinate "
                f"({int(self.mask.sum())}), got shape {self.y.shape}"
            )
        self.name = f"replacement-inpainting({variance})"
        self.tier1_applicable = False

    def ground_truth(self, target):
        """The exact conditional law of the free coordinates, p_0(x[~mask] | x[mask] = y)
        (``GaussianMixture.condition`` with a noise-free coordinate observation, then the
        marginal of the unobserved coordinates, which has positive definite covariances)."""
        A = np.eye(target.d)[self.mask]
        return target.condition(A, self.y, 0.0).marginal(~self.mask)

    @property
    def truth_coordinates(self):
        """The coordinates whose law :meth:`ground_truth` gives (the unobserved ones)."""
        return np.flatnonzero(~self.mask)

    def _run(self, model, x, grid, rng):
        m = self.mask
        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                x = self._jump(model, x, grid, i)
                x[:, m] = self.y
                return x
            x = self._step(model, x, grid, i, rng)  # the ancestral DDPM step
            z = rng.standard_normal((x.shape[0], int(m.sum())))
            x[:, m] = grid.alpha[i + 1] * self.y + grid.sigma[i + 1] * z
        return x
