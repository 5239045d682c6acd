"""reference/forward.py beyond tests/test_forward_posterior.py (issue 22, mutation testing: the
survivors of its first mutmut run).

- ``GaussianKernel``'s mean, sample and log_prob with per-row coefficients (shape (n,) against x
  of shape (n, d) and (n, m, d)) and 0-d x, against the definitions (N(mean_coef x, var I)) and
  SciPy's normal log-density;
- ``marginal``, ``transition`` and ``ddpm_step_kernel`` per row against VPLinear's closed form
  written here and the schedule's betas; the zero-terminal-SNR tail (alpha_s = 0: the kernel
  and the posterior are N(0, sigma^2)) without a floating-point warning;
- ``sample_marginal`` with given noise, per-row t and seeds; ``_rng``'s accepted generators;
- every validation message (DESIGN convention 12).
"""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from diffusion_oracle.reference import (
    DiscreteSchedule,
    VPLinear,
    ddpm_step_kernel,
    marginal,
    posterior,
    sample_marginal,
    transition,
)
from diffusion_oracle.reference import rescale_zero_terminal_snr as ztsnr
from diffusion_oracle.reference.forward import GaussianKernel


def _raises(exc, message, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert str(e.value) == message, str(e.value)


def _vp(t, b0=0.1, b1=20.0):
    """VPLinear: alpha = exp(-(b0 t + (b1 - b0) t^2/2)/2), sigma^2 = 1 - alpha^2."""
    a = math.exp(-(b0 * t + (b1 - b0) * t * t / 2) / 2)
    return a, -math.expm1(-(b0 * t + (b1 - b0) * t * t / 2))


COEF = np.array([0.5, 2.0, -1.5])
VAR = np.array([0.25, 1.0, 4.0])
X = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])


def test_kernel_mean_and_sample_per_row():
    k = GaussianKernel(COEF, VAR)
    assert np.array_equal(k.mean(X), COEF[:, None] * X)
    z = np.array([[0.5, -1.0], [2.0, 0.0], [1.0, 1.0]])
    assert np.array_equal(k.sample(X, noise=z), COEF[:, None] * X + np.sqrt(VAR)[:, None] * z)
    x3 = np.arange(12.0).reshape(3, 2, 2)
    assert np.array_equal(k.mean(x3), COEF[:, None, None] * x3)
    s = GaussianKernel(0.5, 4.0)
    assert np.array_equal(s.mean(X), 0.5 * X)
    assert np.array_equal(s.sample(X, noise=z), 0.5 * X + 2 * z)
    assert np.array_equal(k.std, np.sqrt(VAR)) and np.array_equal(k.log_var, np.log(VAR))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GaussianKernel(1.0, 0.0).log_var == -np.inf
    # seeded draws: the generator's normals
    draws = k.sample(X, 7)
    z7 = np.random.default_rng(7).standard_normal((3, 2))
    want = COEF[:, None] * X + np.sqrt(VAR)[:, None] * z7
    assert draws.shape == (3, 2) and np.array_equal(draws, want)
    assert np.array_equal(k.sample(X, np.random.default_rng(7)), want)


def test_kernel_log_prob_per_row():
    k = GaussianKernel(COEF, VAR)
    y = np.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    want = stats.norm.logpdf(y, COEF[:, None] * X, np.sqrt(VAR)[:, None]).sum(-1)
    assert np.allclose(k.log_prob(y, X), want, rtol=1e-13, atol=0)
    x3 = np.stack([X, 2 * X, -X], axis=1)  # (3, 3, 2): var per leading row; m = 3 != d = 2
    y3 = np.stack([y, -y, 0.5 * y], axis=1)
    want3 = stats.norm.logpdf(y3, COEF[:, None, None] * x3, np.sqrt(VAR)[:, None, None]).sum(-1)
    assert np.allclose(k.log_prob(y3, x3), want3, rtol=1e-13, atol=0)
    # 0-d x: one coordinate
    assert math.isclose(GaussianKernel(0.5, 4.0).log_prob(1.0, 3.0),
                        stats.norm.logpdf(1.0, 1.5, 2.0), rel_tol=1e-13)  # fmt: skip


def test_kernel_messages():
    k = GaussianKernel(COEF, VAR)
    with pytest.raises(ValueError, match=r"^x must be finite, got nan"):
        k.mean(np.array([[np.nan, 0.0]] * 3))
    with pytest.raises(ValueError, match=r"^x must be finite, got inf"):
        k.sample(np.array([[np.inf, 0.0]] * 3), 0)
    with pytest.raises(ValueError, match=r"^noise must be finite, got nan"):
        k.sample(X, noise=np.full((3, 2), np.nan))
    _raises(ValueError, "noise must have the shape of x (3, 2), got (2,)", k.sample, X,
            noise=np.zeros(2))  # fmt: skip
    with pytest.raises(ValueError, match=r"^y must be finite, got nan"):
        k.log_prob(np.full((3, 2), np.nan), X)
    with pytest.raises(ValueError, match=r"^x must be finite, got nan"):
        k.log_prob(X, np.full((3, 2), np.nan))
    _raises(ValueError, "y must have the shape of x (3, 2), got (2,)", k.log_prob, np.zeros(2), X)
    _raises(ValueError, "log_prob needs var > 0; this kernel is degenerate (var = 0)",
            GaussianKernel(1.0, np.array([1.0, 0.0, 1.0])).log_prob, X, X)  # fmt: skip


class _Probe:
    """Not a Generator, but draws noise the same way (the documented duck type)."""

    def __init__(self):
        self.calls = 0

    def standard_normal(self, shape):
        self.calls += 1
        return np.ones(shape)


def test_rng_accepts_generators_probes_and_seeds():
    k = GaussianKernel(1.0, 4.0)
    p = _Probe()
    assert np.array_equal(k.sample(X, p), X + 2.0) and p.calls == 1
    assert np.array_equal(k.sample(X, 3), k.sample(X, np.int64(3)))
    _raises(TypeError, "rng must be None, an int seed >= 0 or a numpy Generator, got str "
            "'seed'", k.sample, X, "seed")  # fmt: skip


def test_marginal_and_transition_per_row():
    sch = VPLinear()
    t = np.array([0.2, 0.5, 0.8])
    m = marginal(sch, t)
    assert isinstance(m.mean_coef, np.ndarray) and isinstance(m.var, np.ndarray)
    for i, ti in enumerate(t):
        a, v = _vp(ti)
        assert math.isclose(m.mean_coef[i], a, rel_tol=1e-13)
        assert math.isclose(m.var[i], v, rel_tol=1e-13)
    s = np.array([0.1, 0.3, 0.6])
    k = transition(sch, s, t)
    assert isinstance(k.mean_coef, np.ndarray) and isinstance(k.var, np.ndarray)
    for i in range(3):
        (a_s, v_s), (a_t, v_t) = _vp(s[i]), _vp(t[i])
        assert math.isclose(k.mean_coef[i], a_t / a_s, rel_tol=1e-13)
        assert math.isclose(k.var[i], v_t - (a_t / a_s) ** 2 * v_s, rel_tol=1e-11)
    assert isinstance(transition(sch, 0.1, 0.2).mean_coef, float)
    _raises(ValueError, "s must be < t, got s = 0.5, t = 0.3", transition, sch,
            np.array([0.1, 0.5]), np.array([0.3, 0.3]))  # fmt: skip


def test_zero_terminal_snr_tail():
    """alpha_s = 0 (s in the zero-SNR tail of a rescaled discrete schedule): x_s carries nothing
    of x_0, so q(x_t | x_s) and q(x_s | x_t, x_0) are N(0, sigma^2) = N(0, 1); no warning."""
    sch = ztsnr(DiscreteSchedule.linear(10))
    assert sch.alpha(0.95) == 0.0 and sch.alpha(0.5) > 0
    with warnings.catch_warnings(), np.errstate(divide="warn", invalid="warn", over="warn"):
        warnings.simplefilter("error")
        k = transition(sch, np.array([0.5, 0.95]), np.array([1.0, 0.97]))
        p = posterior(sch, 0.95, 0.97)
    assert k.mean_coef.tolist() == [0.0, 0.0] and k.var.tolist() == [1.0, 1.0]
    assert (p.coef_x0, p.coef_xt, p.var, p.log_var) == (0.0, 0.0, 1.0, 0.0)


def test_ddpm_step_kernel():
    sch = DiscreteSchedule.linear(10)
    betas = [float(b) for b in sch.betas]
    k = ddpm_step_kernel(sch, np.array([1, 4, 10]))
    assert isinstance(k.mean_coef, np.ndarray) and isinstance(k.var, np.ndarray)
    assert k.var.tolist() == [betas[0], betas[3], betas[9]]
    assert np.allclose(k.mean_coef, [math.sqrt(1 - betas[i]) for i in (0, 3, 9)], rtol=1e-15)
    one = ddpm_step_kernel(sch, 3)
    assert one.var == betas[2] and isinstance(one.var, float)
    _raises(TypeError, "schedule must be a DiscreteSchedule, got VPLinear "
            "VPLinear(beta_min=0.1, beta_max=20.0)", ddpm_step_kernel, VPLinear(), 1)  # fmt: skip
    _raises(ValueError, "n must lie in [1, T=10], got 0", ddpm_step_kernel, sch,
            np.array([2, 1, 0]))  # fmt: skip


def test_sample_marginal():
    sch = VPLinear()
    x0 = np.array([[1.0, -1.0], [2.0, 0.5], [0.0, 3.0]])
    z = np.array([[0.5, 0.5], [-1.0, 2.0], [1.0, -0.25]])
    t = np.array([0.2, 0.5, 0.8])
    xt, eps = sample_marginal(sch, t, x0, noise=z)
    assert np.array_equal(eps, z)
    for i, ti in enumerate(t):
        a, v = _vp(ti)
        assert np.allclose(xt[i], a * x0[i] + math.sqrt(v) * z[i], rtol=1e-13, atol=1e-15)
    xa, ea = sample_marginal(sch, 0.5, x0, 9)
    xb, eb = sample_marginal(sch, 0.5, x0, 9)
    assert np.array_equal(xa, xb)
    assert np.array_equal(ea, np.random.default_rng(9).standard_normal((3, 2)))
    _raises(TypeError, "x0 must be a real number or array of reals, got str", sample_marginal,
            sch, 0.5, "x")  # fmt: skip
    _raises(ValueError, "t must be scalar or match the leading shape of x0 (3, 2), got (2,)",
            sample_marginal, sch, np.array([0.2, 0.5]), x0)  # fmt: skip
    _raises(ValueError, "noise must have the shape of x0 (3, 2), got (2,)", sample_marginal, sch,
            0.5, x0, noise=np.zeros(2))  # fmt: skip
    with pytest.raises(ValueError, match=r"^noise must be finite, got nan"):
        sample_marginal(sch, 0.5, x0, noise=np.full((3, 2), np.nan))
