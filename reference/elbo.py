"""The variational bound of a diffusion model as named terms with units.

Discrete DDPM (Ho et al. 2020, arXiv:2006.11239, eq. 5):

    -ELBO(x_0) = L_T + sum_{n=2}^{T} L_{n-1} + L_0                                  (nats)
    L_T     = KL(q(x_T | x_0) || N(0, I))                                 (prior)
    L_{n-1} = E_q KL(q(x_{n-1} | x_n, x_0) || p(x_{n-1} | x_n))           (diffusion terms)
    L_0     = -E_q log p(x_0 | x_1)                                       (decoder)

with p(x_{n-1} | x_n) = N(mu_theta(x_n, n), var_n I), mu_theta the posterior mean with x_0
replaced by the model's x0_hat (Ho et al. eq. 11). Continuous time (Kingma et al. 2021, VDM,
arXiv:2107.00630, eq. 17): the diffusion terms become

    L_inf = -(1/2) int_{t_min}^{1} SNR'(t) E |x_0 - x0_hat(x_t, t)|^2 dt.

Every function returns nats per example (summed over the d coordinates); :func:`bits_per_dim`
is the one conversion to bits per dimension. Monte Carlo estimates draw one x_n per example and
term (improved-diffusion's ``calc_bpd_loop`` does the same), so a term's mean over examples is
unbiased and its standard error is the spread over examples (:meth:`ELBOTerms.stderr`).
Closed forms for a Gaussian target with the exact model: :func:`gaussian_ddpm_elbo`,
:func:`gaussian_vdm_elbo`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from ._checks import (
    _r,
    boolean,
    choice,
    finite,
    finite_scalar,
    in_interval,
    positive_int,
    positive_scalar,
)
from .forward import _rng
from .parameterization import model_prediction, to_x0_eps
from .posterior import ddpm_posterior
from .schedules import DiscreteSchedule, Schedule

__all__ = [
    "ELBOTerms",
    "bits_per_dim",
    "ddpm_elbo",
    "discretized_gaussian_log_likelihood",
    "gaussian_ddpm_elbo",
    "gaussian_kl",
    "gaussian_vdm_elbo",
    "l_simple",
    "loss_weights",
    "vdm_elbo",
]

LOG_2PI = math.log(2.0 * math.pi)
VARIANCES = ("fixed_small", "fixed_large", "learned_range")


# ====================================================================== primitives


def bits_per_dim(nats, d: int, *, levels: int | None = None, data_range=(-1.0, 1.0)):
    """The one conversion point from nats per example to bits per dimension:

        bpd = nats / (d ln 2)                                  (a discrete likelihood), or
        bpd = nats / (d ln 2) + log2(levels / (hi - lo))       (a density on data_range that
                                                                models ``levels``-level data)

    The second form is the change of variables from data scaled to [lo, hi] back to integer
    levels of unit width, as in score_sde's ``likelihood.py`` (offset 7 bits for 256 levels on
    [-1, 1]; Song et al. 2021, arXiv:2011.13456, Sec. 4.3). Leave ``levels`` None for the
    discretized decoder of :func:`ddpm_elbo` (already a probability of the integer levels).

    Example: ``bits_per_dim(terms.total, 3 * 32 * 32)``."""
    d = positive_int(d, "d")
    out = finite(nats, "nats") / (d * math.log(2.0))
    if levels is not None:
        levels = positive_int(levels, "levels", minimum=2)
    # checked also where levels is None (then unused): never a silently ignored bad value
    if isinstance(data_range, (str, bytes)) or np.shape(data_range) != (2,):
        raise ValueError(f"data_range must be a pair (lo, hi), got {_r(data_range)}")
    lo, hi = (finite_scalar(v, "data_range") for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must satisfy lo < hi, got ({_r(lo)}, {_r(hi)})")
    if levels is None:
        return out
    return out + math.log2(levels / (hi - lo))


def gaussian_kl(mean1, log_var1, mean2, log_var2):
    """KL(N(mean1, e^{log_var1}) || N(mean2, e^{log_var2})) per coordinate (nats):

        (1/2) [expm1(u) - u + (mean1 - mean2)^2 e^{-log_var2}],   u = log_var1 - log_var2,

    the closed form of theory.gaussian_kl written with expm1 so that equal variances give an
    exact 0 rather than the rounding of r - 1 - log r. Broadcasts; no reduction."""
    m1, m2 = finite(mean1, "mean1"), finite(mean2, "mean2")
    lv1, lv2 = finite(log_var1, "log_var1"), finite(log_var2, "log_var2")
    try:
        np.broadcast_shapes(m1.shape, lv1.shape, m2.shape, lv2.shape)
    except ValueError as err:
        raise ValueError(
            f"mean1, log_var1, mean2 and log_var2 must broadcast together, got shapes "
            f"{m1.shape}, {lv1.shape}, {m2.shape}, {lv2.shape}"
        ) from err
    with np.errstate(over="ignore", invalid="ignore"):
        u = lv1 - lv2
        # the mean term as (|m1 - m2| e^{-log_var2/2})^2: no 0 * inf where the means agree and
        # e^{-log_var2} overflows, no inf * 0 where (m1 - m2)^2 alone overflows
        dm = m1 - m2
        scaled = np.where(dm == 0.0, 0.0, np.abs(dm) * np.exp(-0.5 * lv2))
        out = 0.5 * (np.expm1(u) - u + scaled * scaled)
    if not np.isfinite(out).all():
        # finite inputs, a finite KL: only its float64 value overflows; never a silent inf
        i = np.unravel_index(np.flatnonzero(~np.isfinite(out).ravel())[0], out.shape)
        uu, dd, l2 = (np.broadcast_to(v, out.shape)[i] for v in (u, dm, lv2))
        if not np.isfinite(np.expm1(uu)) or not np.isfinite(uu):
            raise ValueError(
                f"log_var1 - log_var2 must be at most about 709 for a KL within float64 (it "
                f"grows as e^(log_var1 - log_var2) / 2), got log_var1 - log_var2 = {_r(uu)}"
            )
        raise ValueError(
            f"mean1 - mean2 must be small enough against e^(log_var2/2) for a KL within float64 "
            f"((mean1 - mean2)^2 e^(-log_var2) / 2 overflows), got mean1 - mean2 = {_r(dd)} "
            f"with log_var2 = {_r(l2)}"
        )
    return out


def _log_diff_ndtr(a, b):
    """log(Phi(b) - Phi(a)) for a < b, from log-CDFs on the side where they do not round to 1."""
    # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): use the tail on the far side of 0.
    flip = (a + b) > 0
    hi = np.where(flip, -a, b)
    lo = np.where(flip, -b, a)
    lhi, llo = log_ndtr(hi), log_ndtr(lo)
    with np.errstate(divide="ignore"):
        return lhi + np.log(-np.expm1(llo - lhi))


def discretized_gaussian_log_likelihood(x, mean, log_var, *, levels: int = 256):
    """log P(x) of ``levels``-level data on [-1, 1] under N(mean, e^{log_var}) integrated over
    each bin (Ho et al. 2020, eq. 13): bins of width 2/(levels - 1) centred on the levels, the
    two edge bins extended to -inf and +inf:

        log P(x) = log(Phi((x + delta - mean)/std) - Phi((x - delta - mean)/std)),

    delta = 1/(levels - 1), computed from exact log-CDFs (scipy.special.log_ndtr) on the side of
    0 where they do not round, not from improved-diffusion's tanh approximation of Phi. ``x``
    must lie on the grid of levels (checked to 1e-6 of a bin). Per coordinate, nats."""
    levels = positive_int(levels, "levels", minimum=2)
    x = finite(x, "x")
    m, lv = finite(mean, "mean"), finite(log_var, "log_var")
    half = 1.0 / (levels - 1)
    k = (x + 1.0) / (2.0 * half)
    if (np.abs(k - np.round(k)) > 1e-6).any() or (x < -1.0 - 1e-12).any() or (x > 1 + 1e-12).any():
        bad = x.ravel()[
            np.flatnonzero((np.abs(k - np.round(k)) > 1e-6).ravel() | (np.abs(x) > 1).ravel())[0]
        ]
        raise ValueError(
            f"x must lie on the {levels} levels of [-1, 1] (k * 2/{levels - 1} - 1), got {_r(bad)}"
        )
    inv_std = np.exp(-0.5 * lv)
    upper = np.where(x > 1.0 - half, np.inf, (x + half - m) * inv_std)
    lower = np.where(x < -1.0 + half, -np.inf, (x - half - m) * inv_std)
    return _log_diff_ndtr(lower, upper)


# ====================================================================== the discrete bound


@dataclass(frozen=True)
class ELBOTerms:
    """-ELBO = prior + sum(diffusion) + decoder, in nats per example (Ho et al. 2020, eq. 5).

    ``prior`` L_T, shape (n,); ``diffusion`` L_{n-1} for n = 2..T, shape (n, T - 1) (column
    j is L_{j+1}); ``decoder`` L_0, shape (n,); ``d`` the data dimension. A Monte Carlo estimate
    has one draw per example and term; a closed form has n = 1."""

    prior: np.ndarray
    diffusion: np.ndarray
    decoder: np.ndarray
    d: int

    def __post_init__(self):
        positive_int(self.d, "d")
        n = np.shape(self.prior)[:1] if np.ndim(self.prior) == 1 else None
        shapes = (np.shape(self.prior), np.shape(self.diffusion), np.shape(self.decoder))
        if n is None or np.ndim(self.diffusion) != 2 or shapes[1][:1] != n or shapes[2] != n:
            raise ValueError(
                f"prior, diffusion and decoder must have shapes (n,), (n, k) and (n,), got "
                f"{shapes[0]}, {shapes[1]} and {shapes[2]}"
            )

    @property
    def total(self) -> np.ndarray:
        """-ELBO per example (nats), shape (n,)."""
        return self.prior + self.diffusion.sum(-1) + self.decoder

    def _examples(self, what: str) -> np.ndarray:
        total = self.total
        if total.shape[0] == 0:
            raise ValueError(f"{what} needs at least one example (n >= 1), got n = 0 examples")
        return total

    def mean(self) -> float:
        """The mean of -ELBO over the examples (nats); ValueError for n = 0."""
        return float(self._examples("ELBOTerms.mean").mean())

    def stderr(self) -> float:
        """Standard error of :meth:`mean` (0 for a closed form); ValueError for n = 0."""
        total = self._examples("ELBOTerms.stderr")
        n = total.shape[0]
        return float(total.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    def bits_per_dim(self, *, levels: int | None = None, data_range=(-1.0, 1.0)) -> float:
        """:meth:`mean` in bits per dimension through :func:`bits_per_dim`."""
        return float(bits_per_dim(self.mean(), self.d, levels=levels, data_range=data_range))


def _log_variances(schedule: DiscreteSchedule, variance, v):
    """log var_n for n = 1..T of the reverse kernels, shape (T,) or a callable of (x, n)."""
    n = np.arange(1, schedule.T + 1)
    if not callable(v):  # checked also where unused (variance not "learned_range")
        vv = in_interval(v, "v", 0.0, 1.0)
        if vv.ndim:
            raise ValueError(f"v must be a scalar or a callable, got shape {vv.shape}")
    if callable(variance):
        name = "variance(x_n, n)"
        return lambda x, m: _per_example(finite(variance(x, m), name), x, name)
    if isinstance(variance, str):
        choice(variance, "variance", set(VARIANCES))
        small = ddpm_posterior(schedule, n, variance="fixed_small").log_var_clipped
        large = ddpm_posterior(schedule, n, variance="fixed_large").log_var
        if variance == "fixed_small":
            return np.asarray(small, dtype=np.float64)
        if variance == "fixed_large":
            return np.asarray(large, dtype=np.float64)
        if callable(v):

            def interpolated(x, m):
                vv = _per_example(in_interval(v(x, m), "v(x_n, n)", 0.0, 1.0), x, "v(x_n, n)")
                return vv * large[m - 1] + (1.0 - vv) * small[m - 1]

            return interpolated
        return vv * large + (1.0 - vv) * small  # Nichol & Dhariwal 2021, eq. 15
    lv = finite(variance, "variance")
    if lv.shape != (schedule.T,) or (lv <= 0).any():
        got = f"shape {lv.shape}" if lv.shape != (schedule.T,) else _r(lv[lv <= 0][0])
        raise ValueError(
            f"variance must be 'fixed_small', 'fixed_large', 'learned_range', a callable or "
            f"{schedule.T} positive variances, got {got}"
        )
    return np.log(lv)


def _per_example(lv: np.ndarray, x: np.ndarray, name: str) -> np.ndarray:
    """A callable's value at x_n of shape (N, d): a scalar, one per example ((N,), read as
    (N, 1)) or one per coordinate; anything else a ValueError naming the callable."""
    if lv.ndim == 0:
        return lv
    shape = lv.shape
    if lv.ndim < x.ndim:
        lv = lv.reshape(lv.shape + (1,) * (x.ndim - lv.ndim))
    if lv.ndim > x.ndim or any(a not in (1, b) for a, b in zip(lv.shape, x.shape, strict=True)):
        raise ValueError(
            f"{name} must return a scalar or an array of shape (N,), (N, 1) or (N, d) = "
            f"{x.shape}, got shape {shape}"
        )
    return lv


def _log_var_at(log_vars, x, m):
    if callable(log_vars):
        return log_vars(x, m)
    return log_vars[m - 1]


def _x0_hat(model, x, t, alpha, sigma, schedule):
    pred = model_prediction(model)
    out = finite(model(x, t), "model output")
    if out.shape != x.shape:
        raise ValueError(f"model output must have the shape of x {x.shape}, got {out.shape}")
    kw = {}
    if pred == "velocity":
        kw = {"d_alpha": schedule.d_alpha(t), "d_sigma": schedule.d_sigma(t)}
    x0, _ = to_x0_eps(out, source=pred, x_t=x, alpha=alpha, sigma=sigma, **kw)
    return x0


def _prior_kl(schedule, x0, prior_var: float):
    """KL(N(alpha_T x0, sigma_T^2 I) || N(0, prior_var I)) summed over coordinates."""
    la, ls = float(schedule.log_alpha(1.0)), float(schedule.log_sigma(1.0))
    u = 2.0 * ls - math.log(prior_var)
    mean_part = np.exp(2.0 * la) * (x0 * x0).sum(-1) / prior_var if np.isfinite(la) else 0.0
    return 0.5 * (x0.shape[-1] * (math.expm1(u) - u) + mean_part)


def ddpm_elbo(
    model,
    schedule: DiscreteSchedule,
    x0,
    *,
    variance="fixed_small",
    v=0.5,
    decoder: str = "gaussian",
    decoder_var=None,
    levels: int = 256,
    prior_var: float = 1.0,
    rng=None,
    progress: bool = False,
) -> ELBOTerms:
    """Monte Carlo estimate of the DDPM bound's terms for data ``x0`` (n, d) and any ``model``
    (a callable ``model(x, t)`` with a ``prediction`` attribute, t = n/T):

        L_T     = (1/2) [d (expm1(u) - u) + alpha_T^2 |x_0|^2 / prior_var],
                  u = log(sigma_T^2 / prior_var),
        L_{n-1} = KL(N(mu_tilde, beta_tilde_n I) || N(mu_theta, var_n I))     (gaussian_kl), n >= 2,
        L_0     = -log N(x_0; x0_hat(x_1), var_dec I)      (decoder "gaussian"), or
                = -log P(x_0) of the bins of :func:`discretized_gaussian_log_likelihood`
                                                                            (decoder "discretized"),

    x_n ~ q(x_n | x_0) drawn once per example and term (Ho et al. 2020, eq. 5, 12-13).

    ``variance`` sets var_n: "fixed_small" (beta_tilde_n), "fixed_large" (beta_n), "learned_range"
    (exp(v log beta_n + (1 - v) log beta_tilde_n), Nichol & Dhariwal 2021 eq. 15, with ``v`` a
    scalar or a callable ``v(x_n, n)``), an array of T variances, or a callable ``(x_n, n) ->
    log var`` (a model's learned variance). The decoder's variance is ``decoder_var`` or var_1
    (for fixed_small the clipped beta_tilde_2 of improved-diffusion, as beta_tilde_1 = 0).
    The prior is N(0, prior_var I). Returns :class:`ELBOTerms` in nats per example.

    Example::

        terms = ddpm_elbo(ExactModel(target, sch), sch, target.sample(1000, rng=0), rng=1)
        terms.mean(), terms.stderr(), terms.bits_per_dim()
    """
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    x0 = finite(x0, "x0")
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (n, d), got {x0.shape}")
    choice(decoder, "decoder", {"gaussian", "discretized"})
    prior_var = positive_scalar(prior_var, "prior_var")
    if decoder_var is not None:
        decoder_var = positive_scalar(decoder_var, "decoder_var")
    levels = positive_int(levels, "levels", minimum=2)
    progress = boolean(progress, "progress")
    gen = _rng(rng)
    T, (N, d) = schedule.T, x0.shape
    log_vars = _log_variances(schedule, variance, v)
    diffusion = np.zeros((N, T - 1))
    steps = range(T, 0, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="ELBO terms", total=T)
    decoder_term = None
    for m in steps:
        t = m / T
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        x_t = a * x0 + s * gen.standard_normal(x0.shape)
        x0_hat = _x0_hat(model, x_t, t, a, s, schedule)
        post = ddpm_posterior(schedule, m)
        lv = _log_var_at(log_vars, x_t, m)
        if m >= 2:
            mean_true = post.coef_x0 * x0 + post.coef_xt * x_t
            mean_model = post.coef_x0 * x0_hat + post.coef_xt * x_t
            kl = gaussian_kl(mean_true, post.log_var, mean_model, np.broadcast_to(lv, x0.shape))
            diffusion[:, m - 2] = kl.sum(-1)
        else:
            if decoder_var is not None:
                lv = math.log(positive_scalar(decoder_var, "decoder_var"))
            lv = np.broadcast_to(lv, x0.shape)
            if decoder == "gaussian":
                ll = -0.5 * (LOG_2PI + lv + (x0 - x0_hat) ** 2 * np.exp(-lv))
            else:
                ll = discretized_gaussian_log_likelihood(x0, x0_hat, lv, levels=levels)
            decoder_term = -ll.sum(-1)
    prior = np.broadcast_to(_prior_kl(schedule, x0, prior_var), (N,)).astype(np.float64)
    return ELBOTerms(prior, diffusion, decoder_term, d)


def gaussian_ddpm_elbo(
    target,
    schedule: DiscreteSchedule,
    *,
    variance="fixed_small",
    decoder_var=None,
    prior_var: float = 1.0,
) -> ELBOTerms:
    """The expected terms E_{x_0 ~ target}[...] of :func:`ddpm_elbo` in closed form for a
    Gaussian target N(mu, Sigma) and the exact model. In the eigenbasis of Sigma (eigenvalues
    lambda_j), with v_n,j = alpha_n^2 lambda_j + sigma_n^2 and c0_n the posterior's x_0
    coefficient (ground-truth.md Sec. 5):

        L_T     = (1/2) [d (expm1(u) - u) + alpha_T^2 (tr Sigma + |mu|^2) / prior_var],
        L_{n-1} = (1/2) sum_j [expm1(w) - w + c0_n^2 lambda_j sigma_n^2 / (v_n,j var_n)],
                  w = log(beta_tilde_n / var_n),
        L_0     = (1/2) sum_j [log(2 pi var_dec) + lambda_j sigma_1^2 / (v_1,j var_dec)],

    the mean part being c0^2 E|x_0 - E[x_0|x_n]|^2 = c0^2 tr Cov[x_0 | x_n]. ``variance`` as in
    :func:`ddpm_elbo` (a string or T variances) or "optimal": the best scalar variance
    var_n = beta_tilde_n + c0_n^2 tr Cov[x_0|x_n] / d (Bao et al. 2022, Analytic-DPM, Thm. 1),
    with which the bound is tight (= the entropy of the target) when Sigma is isotropic.
    Returns :class:`ELBOTerms` with n = 1 (exact, stderr 0)."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    for attr in ("mean_vec", "cov"):
        if not hasattr(target, attr):
            raise TypeError(f"target must be a Gaussian, got {type(target).__name__}")
    lam = np.linalg.eigvalsh(target.cov)
    d, T = target.d, schedule.T
    n = np.arange(1, T + 1)
    t = n / T
    a2 = np.exp(2.0 * schedule.log_alpha(t))
    s2 = np.exp(2.0 * schedule.log_sigma(t))
    post_var = s2[:, None] * lam / (a2[:, None] * lam + s2[:, None])  # Var[x_0|x_n] per direction
    post = ddpm_posterior(schedule, n)
    c0sq = np.asarray(post.coef_x0, dtype=np.float64) ** 2
    mse = c0sq * post_var.sum(1)  # E |mu_tilde - mu_theta|^2
    if isinstance(variance, str) and variance == "optimal":
        with np.errstate(divide="ignore"):
            log_var = np.log(np.asarray(post.var, dtype=np.float64) + mse / d)
    else:
        log_var = _log_variances(schedule, variance, 0.5)
        if callable(log_var):
            raise ValueError(
                f"variance must be a string or T variances for the closed form, got a callable "
                f"{_r(variance)}"
            )
    w = np.asarray(post.log_var, dtype=np.float64)[1:] - log_var[1:]
    diffusion = 0.5 * (d * (np.expm1(w) - w) + mse[1:] * np.exp(-log_var[1:]))
    if decoder_var is None:
        lv_dec = float(log_var[0])
    else:
        lv_dec = math.log(positive_scalar(decoder_var, "decoder_var"))
    decoder_term = 0.5 * (d * (LOG_2PI + lv_dec) + post_var[0].sum() * math.exp(-lv_dec))
    la, ls = float(schedule.log_alpha(1.0)), float(schedule.log_sigma(1.0))
    prior_var = positive_scalar(prior_var, "prior_var")
    u = 2.0 * ls - math.log(prior_var)
    second = float(np.trace(target.cov) + target.mean_vec @ target.mean_vec)
    prior = 0.5 * (d * (math.expm1(u) - u) + math.exp(2.0 * la) * second / prior_var)
    return ELBOTerms(np.array([prior]), diffusion[None, :], np.array([decoder_term]), d)


def loss_weights(schedule: DiscreteSchedule, *, prediction: str = "eps", variance="fixed_small"):
    """w_n, n = 1..T, such that the mean part of L_{n-1} is w_n E|pred - pred_hat|^2 for the
    parameterization ``prediction`` (the weights that turn L_simple's terms into the bound's):

        x0:   w = c0_n^2 / (2 var_n),       eps: w = c0_n^2 sigma_n^2 / (2 var_n alpha_n^2)
                                                 = beta_n^2 / (2 var_n alpha_n (1 - alpha_bar_n))
        v:    w = c0_n^2 sigma_n^2 / (2 var_n (alpha_n^2 + sigma_n^2)^2),
        score: w = c0_n^2 sigma_n^4 / (2 var_n alpha_n^2),

    (Ho et al. 2020, eq. 12; with var_n = beta_tilde_n the x0 weight is (SNR_{n-1} - SNR_n)/2 and
    the eps weight (SNR_{n-1}/SNR_n - 1)/2, Kingma et al. 2021, eq. 13). ``variance`` as in
    :func:`ddpm_elbo` ("fixed_small" uses beta_tilde_1 = 0 unclipped: w_1 = inf). Shape (T,)."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    choice(prediction, "prediction", {"x0", "eps", "v", "score"})
    n = np.arange(1, schedule.T + 1)
    post = ddpm_posterior(schedule, n)
    if isinstance(variance, str) and variance == "fixed_small":
        log_var = np.asarray(post.log_var, dtype=np.float64)
    else:
        log_var = _log_variances(schedule, variance, 0.5)
        if callable(log_var):
            raise ValueError(
                f"variance must be a string or T variances for loss_weights, got a callable "
                f"{_r(variance)}"
            )
    t = n / schedule.T
    la, ls = schedule.log_alpha(t), schedule.log_sigma(t)
    with np.errstate(divide="ignore", over="ignore"):
        w = 0.5 * np.asarray(post.coef_x0, dtype=np.float64) ** 2 * np.exp(-log_var)
    if prediction == "eps":
        return w * np.exp(2.0 * (ls - la))
    if prediction == "score":
        return w * np.exp(4.0 * ls - 2.0 * la)
    if prediction == "v":
        return w * np.exp(2.0 * ls) / (np.exp(2.0 * la) + np.exp(2.0 * ls)) ** 2
    return w


def l_simple(model, schedule: DiscreteSchedule, x0, *, rng=None, n_timesteps=None):
    """L_simple = E_{n ~ U{1..T}, eps} |eps - eps_hat(x_n, n)|^2 (Ho et al. 2020, eq. 14),
    summed over coordinates. Each example draws its own n (uniform; or ``n_timesteps``, one
    integer in 1..T per example) and eps; returns (value, standard error) in squared units of
    eps. Its floor with the exact model is the mean over n of
    :func:`~diffusion_oracle.reference.likelihood.irreducible_loss`."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    x0 = finite(x0, "x0")
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (n, d), got {x0.shape}")
    gen = _rng(rng)
    T = schedule.T
    if n_timesteps is None:
        ns = gen.integers(1, T + 1, size=x0.shape[0])
    else:
        ns = np.asarray(n_timesteps)
        if ns.shape != (x0.shape[0],) or not np.issubdtype(ns.dtype, np.integer):
            raise ValueError(
                f"n_timesteps must be {x0.shape[0]} integers (one per example), got shape "
                f"{ns.shape} of {ns.dtype}"
            )
        if (ns < 1).any() or (ns > T).any():
            raise ValueError(
                f"n_timesteps must lie in 1..{T}, got {_r(ns[(ns < 1) | (ns > T)][0])}"
            )
    eps = gen.standard_normal(x0.shape)
    losses = np.empty(x0.shape[0])
    for m in np.unique(ns):
        idx = np.flatnonzero(ns == m)
        t = m / T
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        x_t = a * x0[idx] + s * eps[idx]
        out = finite(model(x_t, t), "model output")
        pred = model_prediction(model)
        kw = {}
        if pred == "velocity":
            kw = {"d_alpha": schedule.d_alpha(t), "d_sigma": schedule.d_sigma(t)}
        _, eps_hat = to_x0_eps(out, source=pred, x_t=x_t, alpha=a, sigma=s, **kw)
        losses[idx] = ((eps[idx] - eps_hat) ** 2).sum(-1)
    return float(losses.mean()), float(losses.std(ddof=1) / math.sqrt(len(losses)))


# ====================================================================== continuous time (VDM)


def _t_min(t_min) -> float:
    arr = in_interval(t_min, "t_min", 0.0, 1.0, closed="neither")
    if arr.ndim:
        raise ValueError(f"t_min must be a scalar, got shape {arr.shape}")
    return float(arr)


def vdm_elbo(
    model,
    schedule: Schedule,
    x0,
    *,
    t_min: float,
    decoder_var=None,
    prior_var: float = 1.0,
    rng=None,
) -> ELBOTerms:
    """Monte Carlo estimate of the continuous-time bound (Kingma et al. 2021, VDM, eq. 17, 23)
    for any schedule, from t_min to 1:

        prior     KL(q(x_1 | x_0) || N(0, prior_var I)),
        diffusion (1/2) int_{lambda_1}^{lambda_min} e^lambda E|x_0 - x0_hat(x_t)|^2 dlambda
                  (= -(1/2) int SNR'(t) mse dt), estimated with lambda ~ U[lambda(1), lambda(t_min)]
                  stratified over the examples (one draw each),
        decoder   -log N(x_0; x0_hat(x_{t_min}), var_dec I), var_dec = sigma^2/alpha^2 at t_min
                  by default (VDM's p(x | z_0) for continuous data),

    in log-SNR lambda, where the integrand is smooth (Kingma et al. 2021, eq. 18: the loss depends
    on the schedule only through its end points). Returns :class:`ELBOTerms` whose diffusion
    column is the single continuous term."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    x0 = finite(x0, "x0")
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (n, d), got {x0.shape}")
    t_min = _t_min(t_min)
    lam_hi, lam_lo = float(schedule.log_snr(t_min)), float(schedule.log_snr(1.0))
    if not np.isfinite(lam_lo):
        raise ValueError("the schedule's log-SNR at t = 1 must be finite (not zero terminal SNR)")
    gen = _rng(rng)
    N = x0.shape[0]
    u = (np.arange(N) + gen.uniform(size=N)) / N
    gen.shuffle(u)
    lam = lam_lo + (lam_hi - lam_lo) * u
    t = np.asarray(schedule.t_from_log_snr(lam), dtype=np.float64)
    a, s = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    x_t = a * x0 + s * gen.standard_normal(x0.shape)
    x0_hat = np.empty_like(x0)
    for i in range(N):  # the model sees one time per call
        x0_hat[i] = _x0_hat(model, x_t[i : i + 1], float(t[i]), a[i, 0], s[i, 0], schedule)[0]
    diffusion = 0.5 * (lam_hi - lam_lo) * np.exp(lam) * ((x0 - x0_hat) ** 2).sum(-1)
    a1, s1 = float(schedule.alpha(t_min)), float(schedule.sigma(t_min))
    x1 = a1 * x0 + s1 * gen.standard_normal(x0.shape)
    x0_hat1 = _x0_hat(model, x1, t_min, a1, s1, schedule)
    lv = -lam_hi if decoder_var is None else math.log(positive_scalar(decoder_var, "decoder_var"))
    decoder_term = 0.5 * (
        x0.shape[1] * (LOG_2PI + lv) + ((x0 - x0_hat1) ** 2).sum(-1) * math.exp(-lv)
    )
    prior_var = positive_scalar(prior_var, "prior_var")
    prior = np.broadcast_to(_prior_kl(schedule, x0, prior_var), (N,)).astype(np.float64)
    return ELBOTerms(prior, diffusion[:, None], decoder_term, x0.shape[1])


def gaussian_vdm_elbo(
    target, schedule: Schedule, *, t_min: float, decoder_var=None, prior_var: float = 1.0
) -> ELBOTerms:
    """The terms of :func:`vdm_elbo` in closed form for a Gaussian target with the exact model:
    with mse(gamma) = sum_j lambda_j / (1 + gamma lambda_j) at SNR gamma,

        diffusion = (1/2) int_{SNR(1)}^{SNR(t_min)} mse(gamma) dgamma
                  = (1/2) sum_j log((1 + lambda_j SNR(t_min)) / (1 + lambda_j SNR(1)))

    (Kingma et al. 2021, eq. 18; theory.elbo checks the unit-variance case), written with log1p
    of the SNRs' exponentials; the decoder and prior as in :func:`gaussian_ddpm_elbo`."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    for attr in ("mean_vec", "cov"):
        if not hasattr(target, attr):
            raise TypeError(f"target must be a Gaussian, got {type(target).__name__}")
    t_min = _t_min(t_min)
    lam = np.linalg.eigvalsh(target.cov)
    l_hi, l_lo = float(schedule.log_snr(t_min)), float(schedule.log_snr(1.0))
    diffusion = 0.5 * (np.log1p(lam * math.exp(l_hi)) - np.log1p(lam * math.exp(l_lo))).sum()
    lv = -l_hi if decoder_var is None else math.log(positive_scalar(decoder_var, "decoder_var"))
    post_var = lam / (
        1.0 + lam * math.exp(l_hi)
    )  # Var[x_0 | x_t] = lambda sigma^2/(a^2 lambda + s^2)
    decoder_term = 0.5 * (target.d * (LOG_2PI + lv) + post_var.sum() * math.exp(-lv))
    la, ls = float(schedule.log_alpha(1.0)), float(schedule.log_sigma(1.0))
    prior_var = positive_scalar(prior_var, "prior_var")
    u = 2.0 * ls - math.log(prior_var)
    second = float(np.trace(target.cov) + target.mean_vec @ target.mean_vec)
    prior = 0.5 * (target.d * (math.expm1(u) - u) + math.exp(2.0 * la) * second / prior_var)
    return ELBOTerms(np.array([prior]), np.array([[diffusion]]), np.array([decoder_term]), target.d)
