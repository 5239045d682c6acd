"""Forward process, posterior, parameterization conversions and the exact model, in torch.

Independent of the reference (the tests compare the two); the formulas, in the README's notation:

- forward marginal q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) (Kingma et al. 2021, eq. 1);
- posterior q(x_s | x_t, x_0) for s < t (Kingma et al. 2021, eq. 32 ff.; Ho et al. 2020,
  eq. 6-7 on a DDPM grid): with e = -expm1(lambda_t - lambda_s) = 1 - SNR_t/SNR_s,
  mean = alpha_s e x_0 + (alpha_t/alpha_s)(sigma_s^2/sigma_t^2) x_t, var = sigma_s^2 e;
- conversions between eps, x0, v (Salimans & Ho 2022), score (-eps/sigma) and the flow
  velocity alpha' x0 + sigma' eps (Lipman et al. 2023), inverted in closed form;
- :class:`TorchExactModel`: the Bayes-optimal network of a :class:`TorchMixture` under a
  :class:`TorchSchedule`, answering any parameterization from the mixture's closed forms.
"""

from __future__ import annotations

import torch

from ._common import _r, as_tensor, check_finite
from .schedules import TorchSchedule
from .targets import TorchMixture

__all__ = [
    "PREDICTIONS",
    "forward_sample",
    "posterior_coefficients",
    "to_x0_eps",
    "from_x0_eps",
    "TorchExactModel",
]

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")



def declared_prediction(model) -> str:
    """``model.prediction`` (one of :data:`PREDICTIONS`), the torch side's own check: a model
    without the attribute is a TypeError, never an eps-model by default."""
    if not hasattr(model, "prediction"):
        raise TypeError(
            f"model must declare what it predicts: set model.prediction to one of {PREDICTIONS} "
            f"(got a {type(model).__name__} without a 'prediction' attribute)"
        )
    if model.prediction not in PREDICTIONS:
        raise ValueError(
            f"model.prediction must be one of {PREDICTIONS}, got {model.prediction!r}"
        )
    return model.prediction

def _schedule(schedule) -> TorchSchedule:
    if not isinstance(schedule, TorchSchedule):
        raise TypeError(
            f"schedule must be a TorchSchedule, got {type(schedule).__name__} {_r(schedule)}"
        )
    return schedule


def _points(x, name: str, like=None) -> torch.Tensor:
    """A finite real tensor of at least one axis (a tensor keeps its device and dtype, anything
    else becomes float64, on ``like``'s device when given)."""
    if isinstance(x, torch.Tensor):
        x = as_tensor(x, name, device=x.device, dtype=x.dtype if x.is_floating_point()
                      else torch.float64)  # fmt: skip
    else:
        dev = like.device if like is not None else "cpu"
        x = as_tensor(x, name, device=dev, dtype=like.dtype if like is not None else torch.float64)
    check_finite(x, name)
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (..., d), got {tuple(x.shape)}")
    return x


def _coef(c, name, x, *, nonneg=False, like="x_t"):
    """A scalar (kept a Python float) or a tensor over the leading axes of x, finite (>= 0)."""
    if isinstance(c, (bool, str, bytes)) or c is None:
        raise TypeError(f"{name} must be a real number or tensor, got {type(c).__name__} {c!r}")
    if isinstance(c, (int, float)):
        v = float(c)
        if not torch.isfinite(torch.tensor(v)):
            raise ValueError(f"{name} must be finite, got {v!r}")
        if nonneg and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")
        return v
    c = as_tensor(c, name, device=x.device, dtype=x.dtype)
    check_finite(c, name)
    if c.ndim and tuple(c.shape) != tuple(x.shape[: c.ndim]):
        raise ValueError(f"{name} must be a scalar or match the leading shape of {like} "
                         f"{tuple(x.shape)}, got {tuple(c.shape)}")  # fmt: skip
    if nonneg and bool((c < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {c[c < 0].reshape(-1)[0].item()!r}")
    return c if c.ndim else float(c)


def _col(c, x):
    """c as a column broadcasting over the trailing axis of x (scalar c passes through)."""
    if isinstance(c, torch.Tensor) and c.ndim:
        return c.reshape(*c.shape, *([1] * (x.ndim - c.ndim)))
    return c


def forward_sample(schedule: TorchSchedule, x0, t, noise):
    """x_t = alpha_t x_0 + sigma_t eps: a sample of q(x_t | x_0) from the noise ``eps``
    (Ho et al. 2020, eq. 4; Kingma et al. 2021, eq. 1). t scalar or batch-shaped."""
    tt = _schedule(schedule)._t(t)
    x0 = _points(x0, "x0")
    noise = _points(noise, "noise", like=x0)
    if noise.shape != x0.shape:
        raise ValueError(
            f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
        )
    if tt.ndim and tuple(tt.shape) != tuple(x0.shape[: tt.ndim]):
        raise ValueError(f"t must be scalar or match the leading shape of x0 {tuple(x0.shape)}, "
                         f"got {tuple(tt.shape)}")  # fmt: skip
    tt = tt.to(x0.device)
    return _col(schedule._alpha(tt), x0) * x0 + _col(schedule._sigma(tt), x0) * noise


def posterior_coefficients(schedule: TorchSchedule, s, t):
    """(coef_x0, coef_xt, var) of q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, var I) for
    s < t (Kingma et al. 2021, App. A; Ho et al. 2020, eq. 7 on a DDPM grid), formed in log space:
    e = -expm1(lambda_t - lambda_s), coef_x0 = alpha_s e,
    coef_xt = exp(lambda_t - lambda_s + log alpha_s - log alpha_t), var = sigma_s^2 e,
    with lambda_t - lambda_s from :meth:`TorchSchedule.log_snr_diff`'s difference identities.
    Where alpha_s = 0 (zero terminal SNR) the result is N(0, sigma_s^2): coef_x0 = coef_xt = 0."""
    ss, tt = _schedule(schedule)._check_t(s, "s"), schedule._t(t)
    try:
        ss, tt = torch.broadcast_tensors(ss, tt.to(ss.device))
    except RuntimeError as err:
        raise ValueError(f"s and t must broadcast together, got shapes {tuple(ss.shape)} and "
                         f"{tuple(tt.shape)}") from err  # fmt: skip
    if bool((ss >= tt).any()):
        i = int(torch.nonzero((ss >= tt).reshape(-1))[0])
        raise ValueError(
            f"s must be < t for the posterior q(x_s | x_t, x_0), got s = "
            f"{ss.reshape(-1)[i].item()!r}, t = {tt.reshape(-1)[i].item()!r}"
        )
    la_s, la_t = schedule._log_alpha(ss), schedule._log_alpha(tt)
    ls_s = schedule._log_sigma(ss)
    # alpha_s = 0 (zero terminal SNR): x_s is independent of x_t and x_0, N(0, sigma_s^2)
    dead = torch.isneginf(la_s)
    live_s = torch.where(dead, torch.zeros_like(ss), ss)
    live_t = torch.where(dead, torch.ones_like(tt), tt)
    d_lam = schedule.log_snr_diff(live_s, live_t)  # lambda_t - lambda_s from t - s
    e = torch.where(dead, torch.ones_like(d_lam), -torch.expm1(d_lam))
    coef_x0 = torch.exp(la_s) * e
    # alpha_{t|s} sigma_s^2 / sigma_t^2 = exp(lambda_t - lambda_s) alpha_s / alpha_t (no log
    # sigma: no -inf + inf where t rounds to the data end); 0 where alpha_s or alpha_t is 0
    none = dead | torch.isneginf(la_t)
    coef_xt = torch.where(
        none, torch.zeros_like(e), torch.exp(torch.where(none, 0.0, d_lam + la_s - la_t))
    )
    var = torch.exp(2.0 * ls_s) * e
    return coef_x0, coef_xt, var


def _name(value, arg):
    if not isinstance(value, str) or value not in PREDICTIONS:
        raise ValueError(f"{arg} must be one of {PREDICTIONS}, got {value!r}")


def to_x0_eps(value, *, source, x_t, alpha, sigma, d_alpha=None, d_sigma=None):
    """(x0, eps) from a prediction of type ``source`` at x_t (closed-form inverses):
    eps: x0 = (x - sigma eps)/alpha; x0: eps = (x - alpha x0)/sigma; v: x0 = (alpha x -
    sigma v)/N, eps = (sigma x + alpha v)/N, N = alpha^2 + sigma^2 (Salimans & Ho 2022, eq. 9 ff.);
    score: eps = -sigma score; velocity: x0 = (sigma' x - sigma u)/D, eps = (alpha u -
    alpha' x)/D, D = alpha sigma' - sigma alpha'. alpha, sigma scalars or batch-shaped."""
    _name(source, "source")
    x = _points(x_t, "x_t")
    v = _points(value, "value", like=x)
    if v.shape != x.shape:
        raise ValueError(f"value must have the shape of x_t {tuple(x.shape)}, got {tuple(v.shape)}")
    alpha, sigma = _coef(alpha, "alpha", x, nonneg=True), _coef(sigma, "sigma", x, nonneg=True)
    d_alpha, d_sigma = (None if c is None else _coef(c, n, x)
                        for n, c in (("d_alpha", d_alpha), ("d_sigma", d_sigma)))  # fmt: skip
    if bool((torch.as_tensor(alpha) == 0).logical_and(torch.as_tensor(sigma) == 0).any()):
        raise ValueError("alpha and sigma must not both be 0 (no point of a diffusion path)")
    out = _x0_eps(v, source, x, alpha, sigma, d_alpha, d_sigma)
    for name, res in zip(("x0", "eps"), out):
        if not bool(torch.isfinite(res).all()):
            divisor = {"x0": "sigma", "eps": "alpha", "score": "alpha", "v": "alpha^2 + sigma^2",
                       "velocity": "alpha d_sigma - sigma d_alpha"}[source]  # fmt: skip
            raise ValueError(
                f"{divisor} is too small for x_t and value (largest |x_t| "
                f"{x.abs().max().item()!r}): the recovered {name} overflows (from "
                f"source={source!r}, it divides by {divisor}); alpha = "
                f"{torch.as_tensor(alpha).min().item()!r}, sigma = "
                f"{torch.as_tensor(sigma).min().item()!r} at their smallest"
            )
    return out


def _x0_eps(v, source, x, alpha, sigma, d_alpha=None, d_sigma=None):
    """:func:`to_x0_eps` without its argument checks: the samplers' inner loop (its arguments
    come from the grid and the model call, checked there)."""
    a, s = _col(alpha, x), _col(sigma, x)

    def zero(c):
        return bool((torch.as_tensor(c) == 0).any())

    if source == "x0":
        if zero(s):
            raise ValueError("cannot recover eps from x0 at sigma = 0")
        return v, (x - a * v) / s
    if source in ("eps", "score"):
        if source == "score" and zero(s):
            raise ValueError("the score is undefined at sigma = 0")
        eps = v if source == "eps" else -s * v
        if zero(a):
            raise ValueError(
                f"cannot recover x0 from {source} at alpha = 0 (zero terminal SNR); use an x0, v "
                "or velocity prediction there"
            )
        return (x - s * eps) / a, eps
    if source == "v":
        n = a * a + s * s
        return (a * x - s * v) / n, (s * x + a * v) / n
    if d_alpha is None or d_sigma is None:
        raise TypeError("source='velocity' needs d_alpha and d_sigma (the path's t-derivatives), "
                        f"got d_alpha={d_alpha!r}, d_sigma={d_sigma!r}")  # fmt: skip
    da, ds = _col(d_alpha, x), _col(d_sigma, x)
    D = a * ds - s * da
    if zero(D):
        raise ValueError("alpha d_sigma - sigma d_alpha must be nonzero to invert the velocity")
    return (ds * x - s * v) / D, (a * v - da * x) / D


def from_x0_eps(x0, eps, *, target, alpha, sigma, d_alpha=None, d_sigma=None):
    """The prediction of type ``target`` from (x0, eps): eps, x0, v = alpha eps - sigma x0,
    score = -eps/sigma, velocity = alpha' x0 + sigma' eps."""
    _name(target, "target")
    x0 = _points(x0, "x0")
    eps = _points(eps, "eps", like=x0)
    if eps.shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
    alpha = _coef(alpha, "alpha", x0, nonneg=True, like="x0")
    sigma = _coef(sigma, "sigma", x0, nonneg=True, like="x0")
    d_alpha, d_sigma = (None if c is None else _coef(c, n, x0, like="x0")
                        for n, c in (("d_alpha", d_alpha), ("d_sigma", d_sigma)))  # fmt: skip
    a, s = _col(alpha, x0), _col(sigma, x0)
    if target == "x0":
        return x0
    if target == "eps":
        return eps
    if target == "v":
        return a * eps - s * x0
    if target == "score":
        if bool((torch.as_tensor(sigma) == 0).any()):
            raise ValueError("the score is undefined at sigma = 0")
        return -eps / s
    if d_alpha is None or d_sigma is None:
        raise TypeError("target='velocity' needs d_alpha and d_sigma (the path's t-derivatives), "
                        f"got d_alpha={d_alpha!r}, d_sigma={d_sigma!r}")  # fmt: skip
    return _col(d_alpha, x0) * x0 + _col(d_sigma, x0) * eps


class TorchExactModel:
    """The Bayes-optimal model of a :class:`TorchMixture` under a :class:`TorchSchedule`:
    ``model(x, t)`` returns E[eps | x_t] ("eps"), Tweedie's E[x_0 | x_t] ("x0"),
    v = alpha eps - sigma x0, the score grad log p_t, or the velocity alpha' x0 + sigma' eps
    ("velocity"), each from the mixture's closed forms (Efron 2011; Karras et al. 2022,
    App. B.3). t is a scalar or has the batch shape of x. ``predict_x0_eps(x, t)`` gives both
    in one pass, for samplers. ``n_calls`` counts evaluations.

    Example::

        model = TorchExactModel(TorchMixture.from_reference(ring8()), torch_schedule(VPLinear()))
        eps_hat = model(x, 0.5)
    """

    def __init__(self, target: TorchMixture, schedule: TorchSchedule, *, prediction="eps"):
        if not isinstance(target, TorchMixture):
            raise TypeError(f"target must be a TorchMixture, got {type(target).__name__}")
        if not isinstance(schedule, TorchSchedule):
            raise TypeError(f"schedule must be a TorchSchedule, got {type(schedule).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.target, self.schedule, self.prediction = target, schedule, prediction
        self.d, self.device, self.dtype = target.d, target.device, target.dtype
        self.n_calls = 0

    def __repr__(self):
        return f"TorchExactModel(K={self.target.K}, d={self.d}, prediction={self.prediction!r})"

    def _coefs(self, x, t):
        tt = self.schedule._t(t)
        tt = tt.to(torch.float64) if tt.dtype != torch.float64 else tt
        if tt.ndim and tuple(tt.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"t must be a scalar or have the batch shape of x {tuple(x.shape[:-1])}, "
                f"got {tuple(tt.shape)}"
            )
        sch = self.schedule
        a, s = sch._alpha(tt), sch._sigma(tt)
        if tt.ndim == 0:  # scalars stay Python floats (the fused kernel's path)
            return tt, float(a), float(s)
        return tt, a.to(x.device, self.dtype), s.to(x.device, self.dtype)

    def _x(self, x):
        x = check_finite(as_tensor(x, "x", device=self.device, dtype=self.dtype), "x")
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"x must have shape (..., d) with d = {self.d}, got {tuple(x.shape)}")
        return x

    def predict_x0_eps(self, x, t):
        """(E[x_0 | x_t], E[eps | x_t]) at (x, t), from one evaluation of the mixture."""
        x = self._x(x)
        _, a, s = self._coefs(x, t)
        self.n_calls += 1
        out, batch = self.target._eval(x, a, s, ("x0", "eps"))
        return out["x0"].reshape(x.shape), out["eps"].reshape(x.shape)

    def __call__(self, x, t):
        return self.predict(x, t)

    def predict(self, x, t, prediction=None):
        """The prediction of type ``prediction`` (default the model's) at x (..., d), time t."""
        pred = self.prediction if prediction is None else prediction
        if not isinstance(pred, str) or pred not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {pred!r}")
        x = self._x(x)
        tt, a, s = self._coefs(x, t)
        self.n_calls += 1
        tg = self.target
        if pred in ("eps", "score", "x0"):
            key = {"eps": "eps", "score": "score", "x0": "x0"}[pred]
            out, _ = tg._eval(x, a, s, (key,))
            return out[key].reshape(x.shape)
        out, _ = tg._eval(x, a, s, ("x0", "eps"))
        x0, eps = out["x0"].reshape(x.shape), out["eps"].reshape(x.shape)
        if pred == "v":
            return _col(a, x) * eps - _col(s, x) * x0
        da = self.schedule._d_alpha(tt)
        ds = self.schedule._d_sigma(tt)
        if tt.ndim == 0:
            da, ds = float(da), float(ds)
        else:
            da, ds = da.to(x.device, self.dtype), ds.to(x.device, self.dtype)
        return _col(da, x) * x0 + _col(ds, x) * eps
