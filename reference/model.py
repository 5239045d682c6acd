"""The perfect network: answers any parameterization exactly from a target's closed forms."""

from __future__ import annotations

import numpy as np

from ._checks import _r, choice, finite, finite_scalar, nonneg_scalar
from .forward import _rng
from .parameterization import PREDICTIONS
from .schedules import Schedule

__all__ = ["ExactModel"]


class ExactModel:
    """The Bayes-optimal model of ``target`` under ``schedule``: at (x_t, t) it returns

        eps   E[eps | x_t],           x0 E[x_0 | x_t] (Tweedie),   v = alpha eps - sigma x0,
        score grad log p_t(x_t),       velocity alpha'(t) x0 + sigma'(t) eps,

    all from the target's exact formulas (no conversion through a division by alpha or sigma).

    Controlled perturbations for sensitivity studies (applied to the returned prediction, in
    its own parameterization): ``out = scale * exact + bias + noise_std * z``, z ~ N(0, I) drawn
    from ``rng``. With the defaults the model is exact.

    Parameters
    ----------
    target : GaussianMixture, EmpiricalMixture or Gaussian.
    schedule : Schedule giving alpha(t), sigma(t) and their derivatives.
    prediction : what ``model(x, t)`` returns: one of "eps", "x0", "v", "score", "velocity".
    bias : scalar or (d,) vector added to the output.
    scale : scalar multiplying the output.
    noise_std : standard deviation of additive Gaussian noise on the output.
    rng : numpy Generator or seed for that noise.

    ``n_calls`` counts evaluations (one per ``__call__``/``predict``), so samplers' NFE can be
    checked. Example::

        model = ExactModel(ring8(), VPLinear(), prediction="eps")
        eps_hat = model(x, 0.5)
    """

    def __init__(
        self, target, schedule, *, prediction="eps", bias=0.0, scale=1.0, noise_std=0.0, rng=None
    ):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        for meth in ("denoise", "eps", "score"):
            if not hasattr(target, meth):
                raise TypeError(
                    f"target must provide {meth}(x, alpha, sigma), got {type(target).__name__}"
                )
        self.target = target
        self.schedule = schedule
        self.prediction = choice(prediction, "prediction", set(PREDICTIONS))
        self.d = target.d
        b = finite(bias, "bias")
        if b.ndim not in (0, 1) or (b.ndim == 1 and b.shape != (self.d,)):
            raise ValueError(f"bias must be a scalar or shape ({self.d},), got {b.shape}")
        self.bias = b
        self.scale = finite_scalar(scale, "scale")
        self.noise_std = nonneg_scalar(noise_std, "noise_std")
        self._rng = _rng(rng)
        self.n_calls = 0
        self._levels = {}

    @property
    def exact(self) -> bool:
        """True when no perturbation is configured."""
        return self.scale == 1.0 and not self.bias.any() and self.noise_std == 0.0

    def __repr__(self):
        return (
            f"ExactModel({_r(self.target)}, {_r(self.schedule)}, prediction={_r(self.prediction)}"
            + ("" if self.exact else ", perturbed")
            + ")"
        )

    def __call__(self, x, t):
        return self.predict(x, t, self.prediction)

    def _coefs(self, x, t):
        t = self.schedule._t(t)
        if t.ndim and t.shape != x.shape[:-1]:
            raise ValueError(
                f"t must be a scalar or have the batch shape of x {x.shape[:-1]}, got {t.shape}"
            )
        return t

    # a sampler asks the model about a few hundred distinct times, each many times (every run of
    # a verify on the same grid): a scalar time's validated value and level are kept, keyed by
    # its value (bounded; the schedule is fixed at construction)
    _LEVELS_MAX = 4096

    def _level(self, x, t):
        """(t, alpha(t), sigma(t)): t validated (scalar or batch-shaped), alpha and sigma as
        arrays of t's shape."""
        key = None
        if type(t) is float or type(t) is np.float64:
            key = float(t)
        elif type(t) is np.ndarray and t.ndim == 0 and t.dtype == np.float64:
            key = float(t)
        if key is not None:
            hit = self._levels.get(key)
            if hit is not None:
                return hit
        t = self._coefs(x, t)
        sch = self.schedule
        out = t, np.asarray(sch.alpha(t)), np.asarray(sch.sigma(t))
        if key is not None:
            if len(self._levels) >= self._LEVELS_MAX:
                self._levels.clear()
            self._levels[key] = out
        return out

    def predict(self, x, t, prediction=None):
        """The (possibly perturbed) prediction of type ``prediction`` (default: the model's) at
        x of shape (..., d) and time t (scalar or batch-shaped)."""
        prediction = (
            self.prediction
            if prediction is None
            else choice(prediction, "prediction", set(PREDICTIONS))
        )
        x = finite(x, "x")
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"x must have shape (..., d) with d = {self.d}, got {x.shape}")
        t, a, s = self._level(x, t)
        sch, tg = self.schedule, self.target
        if a.ndim and not hasattr(tg, "_eval"):  # Gaussian takes scalar (alpha, sigma)
            raise ValueError("a per-sample t needs a mixture target; Gaussian takes a scalar t")
        a_c, s_c = (float(a), float(s)) if a.ndim == 0 else (a, s)

        def col(c):
            c = np.asarray(c, dtype=np.float64)
            return c[..., None] if c.ndim else c

        self.n_calls += 1
        if prediction == "x0":
            out = tg.denoise(x, a_c, s_c)
        elif prediction == "eps":
            out = tg.eps(x, a_c, s_c)
        elif prediction == "score":
            out = tg.score(x, a_c, s_c)
        else:
            x0 = tg.denoise(x, a_c, s_c)
            eps = tg.eps(x, a_c, s_c)
            if prediction == "v":
                out = col(a) * eps - col(s) * x0
            else:
                out = col(sch.d_alpha(t)) * x0 + col(sch.d_sigma(t)) * eps
        if not self.exact:
            out = self.scale * out + self.bias
            if self.noise_std:
                out = out + self.noise_std * self._rng.standard_normal(out.shape)
        return out
