"""Derivations checked by the computer-algebra system (SymPy only).

Each function builds its statement from symbols with assumptions, proves it
(``simplify(lhs - rhs) == 0`` unless stated otherwise), raises :class:`DerivationError` if the
CAS check fails, and returns a :class:`Derivation`: the named result expressions (to be
lambdified against the reference), the symbols, and the steps as text/LaTeX for
``diffusion-oracle derive``.

Notation: x_t = alpha_t x_0 + sigma_t eps on a Gaussian path; lambda = log(alpha^2/sigma^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = [
    "Derivation",
    "DerivationError",
    "TOPICS",
    "derive",
    "forward_marginal",
    "posterior",
    "gaussian_kl",
    "conversions",
    "ddim_family",
    "multistep_third_order",
    "score_equivalences",
    "edm_preconditioning",
    "guidance",
]


class DerivationError(AssertionError):
    """A CAS check of a derivation failed (the statement does not hold as written)."""


@dataclass
class Derivation:
    """A checked derivation: ``results`` maps names to SymPy expressions, ``symbols`` names the
    free symbols, ``steps`` lists (text, expression) pairs in the order of the argument."""

    topic: str
    summary: str
    symbols: dict
    results: dict
    steps: list = field(default_factory=list)

    def text(self, latex: bool = False) -> str:
        """The summary and the numbered steps, expressions as SymPy strings or LaTeX."""
        lines = [f"{self.topic}: {self.summary}", ""]
        for i, (what, expr) in enumerate(self.steps, 1):
            shown = sp.latex(expr) if latex else sp.sstr(expr)
            lines.append(f"{i}. {what}")
            lines.append(f"   {shown}")
        return "\n".join(lines)


def _check(claim: str, expr) -> None:
    """Raise DerivationError unless ``expr`` simplifies to zero."""
    if sp.simplify(expr) != 0:
        raise DerivationError(f"CAS check failed: {claim}; residual {sp.simplify(expr)}")


def _gaussian_product(mean1, var1, mean2, var2, x):
    """Completing the square: N(x; m1, v1) N(x; m2, v2) is proportional to N(x; m, v) with
    1/v = 1/v1 + 1/v2 and m = v (m1/v1 + m2/v2); checked on the exponent's x^2 and x terms."""
    v = 1 / (1 / var1 + 1 / var2)
    m = v * (mean1 / var1 + mean2 / var2)
    expo = -((x - mean1) ** 2) / (2 * var1) - (x - mean2) ** 2 / (2 * var2)
    target = -((x - m) ** 2) / (2 * v)
    diff = sp.expand(expo - target)
    _check("quadratic terms match", sp.diff(diff, x, 2))
    _check("linear terms match", sp.diff(diff, x).subs(x, 0))
    return sp.simplify(m), sp.simplify(v)


def forward_marginal() -> Derivation:
    """q(x_t | x_0) by composing one-step kernels (Ho et al. 2020, eq. 4): two steps
    x_1 = sqrt(a1) x_0 + sqrt(1 - a1) e1, x_2 = sqrt(a2) x_1 + sqrt(1 - a2) e2 give mean
    sqrt(a1 a2) x_0 and variance 1 - a1 a2, i.e. alpha_bar multiplies; and for a general path
    q(x_t | x_s) has alpha_{t|s} = alpha_t/alpha_s, sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2
    sigma_s^2 (Kingma et al. 2021, eq. 2-3), whose composition with q(x_s | x_0) is q(x_t | x_0)."""
    a1, a2 = sp.symbols("alpha_1 alpha_2", positive=True)
    x0 = sp.symbols("x_0", real=True)
    mean2 = sp.sqrt(a2) * sp.sqrt(a1) * x0
    var2 = a2 * (1 - a1) + (1 - a2)
    _check("two DDPM steps: variance 1 - a1 a2", var2 - (1 - a1 * a2))
    al_s, al_t, sg_s, sg_t = sp.symbols("alpha_s alpha_t sigma_s sigma_t", positive=True)
    a_ts = al_t / al_s
    var_ts = sg_t**2 - a_ts**2 * sg_s**2
    comp_var = a_ts**2 * sg_s**2 + var_ts
    _check("composition of q(x_t|x_s) with q(x_s|x_0) has variance sigma_t^2", comp_var - sg_t**2)
    _check("and mean alpha_t x_0", a_ts * al_s * x0 - al_t * x0)
    lam_s, lam_t = sp.log(al_s**2 / sg_s**2), sp.log(al_t**2 / sg_t**2)
    expm1_form = -(sg_t**2) * (sp.exp(lam_t - lam_s) - 1)  # expm1 in the float code
    _check(
        "sigma_{t|s}^2 = -sigma_t^2 expm1(lambda_t - lambda_s)",
        sp.expand(sp.powsimp(sp.expand_log(expm1_form.rewrite(sp.exp), force=True))) - var_ts,
    )
    return Derivation(
        "forward_marginal",
        "one-step kernels compose to the closed-form marginal; q(x_t|x_s) in log-SNR form",
        {"alpha_s": al_s, "alpha_t": al_t, "sigma_s": sg_s, "sigma_t": sg_t},
        {"alpha_ts": a_ts, "var_ts": var_ts, "two_step_var": var2},
        [
            ("two steps: mean", mean2),
            ("two steps: variance", sp.expand(var2)),
            ("alpha_{t|s}", a_ts),
            ("sigma_{t|s}^2", var_ts),
            ("log-SNR form", expm1_form),
        ],
    )


def posterior() -> Derivation:
    """q(x_s | x_t, x_0) for s < t by completing the square (Kingma et al. 2021, eq. 5-6; Ho et
    al. 2020, eq. 6-7 for s = t - 1): q(x_s|x_0) q(x_t|x_s) as a function of x_s is Gaussian with

        var     = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,
        coef_xt = alpha_{t|s} sigma_s^2 / sigma_t^2,  coef_x0 = alpha_s sigma_{t|s}^2 / sigma_t^2,

    and var = sigma_s^2 (1 - exp(lambda_t - lambda_s)) (the reference's form)."""
    al_s, al_t, sg_s, sg_t = sp.symbols("alpha_s alpha_t sigma_s sigma_t", positive=True)
    xs, xt, x0 = sp.symbols("x_s x_t x_0", real=True)
    a_ts = al_t / al_s
    var_ts = sg_t**2 - a_ts**2 * sg_s**2
    # q(x_t | x_s) = N(x_t; a_ts x_s, var_ts) = N(x_s; x_t / a_ts, var_ts / a_ts^2) up to a factor
    m, v = _gaussian_product(al_s * x0, sg_s**2, xt / a_ts, var_ts / a_ts**2, xs)
    coef_xt = sp.simplify(sp.diff(m, xt))
    coef_x0 = sp.simplify(sp.diff(m, x0))
    _check("mean is linear in (x_0, x_t)", sp.expand(m - coef_xt * xt - coef_x0 * x0))
    _check("var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2", v - var_ts * sg_s**2 / sg_t**2)
    _check("coef_xt = alpha_{t|s} sigma_s^2 / sigma_t^2", coef_xt - a_ts * sg_s**2 / sg_t**2)
    _check("coef_x0 = alpha_s sigma_{t|s}^2 / sigma_t^2", coef_x0 - al_s * var_ts / sg_t**2)
    snr_ratio = (al_t**2 / sg_t**2) / (al_s**2 / sg_s**2)  # exp(lambda_t - lambda_s)
    _check("var = sigma_s^2 (1 - exp(lambda_t - lambda_s))", v - sg_s**2 * (1 - snr_ratio))
    # DDPM special case (VP): alpha^2 = alpha_bar, beta_t = 1 - alpha_bar_t/alpha_bar_s
    abs_, abt = sp.symbols("alpha_bar_s alpha_bar_t", positive=True)
    vp = {al_s: sp.sqrt(abs_), al_t: sp.sqrt(abt), sg_s: sp.sqrt(1 - abs_), sg_t: sp.sqrt(1 - abt)}
    beta = 1 - abt / abs_
    _check(
        "DDPM: beta_tilde = (1 - abar_s)/(1 - abar_t) beta_t",
        v.subs(vp) - (1 - abs_) / (1 - abt) * beta,
    )
    _check(
        "DDPM: coef_x0 = sqrt(abar_s) beta_t / (1 - abar_t)",
        coef_x0.subs(vp) - sp.sqrt(abs_) * beta / (1 - abt),
    )
    return Derivation(
        "posterior",
        "q(x_s | x_t, x_0) by completing the square, general path and DDPM case",
        {"alpha_s": al_s, "alpha_t": al_t, "sigma_s": sg_s, "sigma_t": sg_t},
        {"coef_x0": coef_x0, "coef_xt": coef_xt, "var": v},
        [
            ("posterior precision and mean from the product of two Gaussians in x_s", m),
            ("variance", v),
            ("coef_x0", coef_x0),
            ("coef_xt", coef_xt),
        ],
    )


def gaussian_kl() -> Derivation:
    """KL(N(m1, v1) || N(m2, v2)) = (1/2)(v1/v2 - 1 - log(v1/v2) + (m1 - m2)^2/v2) per
    dimension, from the definition E_1[log N_1 - log N_2] (used by every ELBO term)."""
    m1, m2 = sp.symbols("m_1 m_2", real=True)
    v1, v2 = sp.symbols("v_1 v_2", positive=True)
    x = sp.symbols("x", real=True)

    def logn(m, v):
        return -sp.log(2 * sp.pi * v) / 2 - (x - m) ** 2 / (2 * v)

    integrand = sp.expand(logn(m1, v1) - logn(m2, v2))
    # E_1[(x - m)^2] = v1 + (m1 - m)^2; E_1[x] = m1: substitute the moments term by term
    poly = sp.Poly(integrand, x)
    moments = {0: 1, 1: m1, 2: v1 + m1**2}
    kl = sum(coef * moments[deg[0]] for deg, coef in poly.terms())
    closed = (v1 / v2 - 1 - sp.log(v1 / v2) + (m1 - m2) ** 2 / v2) / 2
    _check("KL closed form", sp.expand(sp.expand_log(kl - closed, force=True)))
    return Derivation(
        "gaussian_kl",
        "KL between univariate Gaussians (nats)",
        {"m_1": m1, "m_2": m2, "v_1": v1, "v_2": v2},
        {"kl": closed},
        [("E_1[log N_1 - log N_2]", kl), ("closed form", closed)],
    )


def conversions() -> Derivation:
    """The five predictions from (x_0, eps) on any path, and their inverses (Salimans & Ho 2022;
    Song et al. 2021; Lipman et al. 2023): v = alpha eps - sigma x_0, score = -eps/sigma,
    u = alpha' x_0 + sigma' eps; x_0 and eps recovered from (x_t, v) and (x_t, u) by solving the
    2x2 systems; each round trip is the identity."""
    a, s, da, ds = sp.symbols("alpha sigma dalpha dsigma", real=True)
    x0, eps = sp.symbols("x_0 epsilon", real=True)
    xt = a * x0 + s * eps
    v = a * eps - s * x0
    u = da * x0 + ds * eps
    n = a**2 + s**2
    x0_v, eps_v = (a * xt - s * v) / n, (s * xt + a * v) / n
    _check("x_0 from (x_t, v)", x0_v - x0)
    _check("eps from (x_t, v)", eps_v - eps)
    D = a * ds - s * da
    x0_u, eps_u = (ds * xt - s * u) / D, (a * u - da * xt) / D
    _check("x_0 from (x_t, u)", x0_u - x0)
    _check("eps from (x_t, u)", eps_u - eps)
    _check("x_0 from (x_t, eps)", (xt - s * eps) / a - x0)
    score = -eps / s
    _check("eps from the score", -s * score - eps)
    return Derivation(
        "conversions",
        "eps / x0 / v / score / velocity and their exact inverses",
        {"alpha": a, "sigma": s, "dalpha": da, "dsigma": ds, "x_0": x0, "epsilon": eps},
        {
            "x_t": xt,
            "v": v,
            "velocity": u,
            "score": score,
            "x0_from_v": x0_v,
            "eps_from_v": eps_v,
            "x0_from_velocity": x0_u,
            "eps_from_velocity": eps_u,
        },
        [("x_t", xt), ("v", v), ("velocity", u), ("x_0 from v", x0_v), ("x_0 from u", x0_u)],
    )


def ddim_family() -> Derivation:
    """DDIM (Song et al. 2021a, eq. 12 and 16): with x_s = alpha_s x_0 + sqrt(sigma_s^2 - c^2)
    eps_t + c z, the marginal of x_s given x_0 is N(alpha_s x_0, sigma_s^2) for every c (eta);
    c^2 equal to the posterior variance (eta = 1) makes the kernel the DDPM posterior; and
    eta = 0 equals DPM-Solver-1, x_s = (alpha_s/alpha_t) x_t - sigma_s (e^h - 1) eps with h the
    half-log-SNR step (Lu et al. 2022, Sec. 4.1)."""
    al_s, al_t, sg_s, sg_t, c = sp.symbols("alpha_s alpha_t sigma_s sigma_t c", positive=True)
    x0, eps, xt = sp.symbols("x_0 epsilon x_t", real=True)
    # eps_t ~ N(0,1) and z ~ N(0,1) independent: variance of x_s given x_0
    var_s = (sg_s**2 - c**2) + c**2
    _check("marginal variance is sigma_s^2 for every c", var_s - sg_s**2)
    post_var = sg_s**2 * (1 - (al_t**2 / sg_t**2) / (al_s**2 / sg_s**2))
    det_coef = sp.sqrt(sg_s**2 - post_var)  # coefficient of eps_t at eta = 1
    a_ts = al_t / al_s
    coef_xt = a_ts * sg_s**2 / sg_t**2  # posterior's x_t coefficient; x_t carries sigma_t eps
    _check(
        "eta = 1: eps coefficient equals the posterior's sigma_t coef_xt",
        sp.simplify(det_coef**2 - (coef_xt * sg_t) ** 2),
    )
    h = sp.log(al_s / sg_s) - sp.log(al_t / sg_t)
    eps_t = (xt - al_t * x0) / sg_t
    ddim0 = al_s * x0 + sg_s * eps_t
    dpm1 = (al_s / al_t) * xt - sg_s * (sp.exp(h) - 1) * eps_t
    _check("eta = 0 equals DPM-Solver-1", sp.expand(sp.simplify(ddim0 - dpm1)))
    return Derivation(
        "ddim_family",
        "DDIM keeps the marginals for every eta; eta=1 is DDPM; eta=0 is DPM-Solver-1",
        {"alpha_s": al_s, "alpha_t": al_t, "sigma_s": sg_s, "sigma_t": sg_t},
        {"posterior_var": post_var, "ddim0": ddim0, "dpm_solver_1": dpm1},
        [
            ("variance of x_s | x_0", var_s),
            ("eta = 1 variance", post_var),
            ("DPM-Solver-1 step", dpm1),
        ],
    )


def multistep_third_order() -> Derivation:
    """The exponential-integrator coefficients of DPM-Solver++ (Lu et al. 2022b): the exact step
    in data prediction, x_t = (sigma_t/sigma_s) x_s + sigma_t int_0^h e^{lambda_s + tau}
    x0(lambda_s + tau) d tau, with x0 Taylor-expanded to second order, is

        (sigma_t/sigma_s) x_s - alpha_t phi_1 x0 + alpha_t h phi_2 x0' - alpha_t h^2 phi_3 x0'',
        phi_1 = expm1(-h), phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2,

    and the multistep divided differences from nodes lambda_s, lambda_s - h0, lambda_s - h0 - h1
    satisfy D1 = h x0' + O(h^3) and D2 = h^2 x0''/2 + O(h^3). Hence the third-order update needs
    -2 alpha_t phi_3 D2; the published -alpha_t phi_3 D2 leaves an O(h^3) local error (second
    order). Checked on an exact quadratic x0(lambda), where the truncated expansion is exact."""
    h, h0, h1, tau = sp.symbols("h h_0 h_1 tau", positive=True)
    c0, c1, c2 = sp.symbols("c_0 c_1 c_2", real=True)  # x0(lambda_s + tau) = c0 + c1 tau + c2 tau^2
    alpha_t = sp.symbols("alpha_t", positive=True)

    def x0(tt):
        return c0 + c1 * tt + c2 * tt**2

    # sigma_t e^{lambda_s} = alpha_t e^{-h} (lambda_t = lambda_s + h)
    exact = alpha_t * sp.exp(-h) * sp.integrate(sp.exp(tau) * x0(tau), (tau, 0, h))
    phi_1 = sp.exp(-h) - 1  # expm1(-h) in the float code
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - sp.Rational(1, 2)
    taylor = -alpha_t * phi_1 * c0 + alpha_t * h * phi_2 * c1 - alpha_t * h**2 * phi_3 * (2 * c2)
    _check("Taylor form with phi_1, phi_2, phi_3", sp.simplify((exact - taylor).rewrite(sp.exp)))
    r0, r1 = h0 / h, h1 / h
    m0, m1, m2 = x0(0), x0(-h0), x0(-h0 - h1)
    D1_0, D1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
    D2 = (D1_0 - D1_1) / (r0 + r1)
    _check("D1 = h x0'(lambda_s)", sp.simplify(D1 - h * c1))
    _check("D2 = h^2 x0''/2", sp.simplify(D2 - h**2 * c2))  # x0'' = 2 c2
    corrected = -alpha_t * phi_1 * m0 + alpha_t * phi_2 * D1 - 2 * alpha_t * phi_3 * D2
    published = -alpha_t * phi_1 * m0 + alpha_t * phi_2 * D1 - alpha_t * phi_3 * D2
    _check(
        "the corrected update is exact on quadratics",
        sp.simplify((exact - corrected).rewrite(sp.exp)),
    )
    defect = sp.simplify((published - exact).rewrite(sp.exp))
    if sp.simplify(defect) == 0:
        raise DerivationError("the published update should not be exact on quadratics")
    lead = sp.series(defect.subs(h0, h).subs(h1, h), h, 0, 4).removeO()
    # by hand: the x0'' term's exact coefficient is alpha_t (h^2/2 - h + 1 - e^{-h}) x0'' =
    # alpha_t h^3 x0''/6 + O(h^4); the published form takes half of it, so the defect is
    # -alpha_t h^3 x0''/12 = -alpha_t c2 h^3/6 (x0'' = 2 c2)
    _check(
        "published defect is -alpha_t c2 h^3/6 + O(h^4): a local O(h^3) error",
        sp.simplify(lead + alpha_t * c2 * h**3 / 6),
    )
    return Derivation(
        "multistep_third_order",
        "DPM-Solver++ exponential-integrator coefficients; third-order multistep needs 2 phi_3 D2",
        {"h": h, "alpha_t": alpha_t, "c_2": c2},
        {"phi_1": phi_1, "phi_2": phi_2, "phi_3": phi_3, "published_defect": defect},
        [
            ("exact increment for x0 = c0 + c1 tau + c2 tau^2", sp.simplify(exact)),
            ("Taylor form", taylor),
            ("D2", sp.simplify(D2)),
            ("published minus exact (uniform steps), leading term", lead),
        ],
    )


def score_equivalences() -> Derivation:
    """Scores, for Gaussian data N(mu, lam) in one dimension on a path (alpha, sigma):

    - grad log q(x_t | x_0) = -eps / sigma (the DSM regression target);
    - Tweedie (Efron 2011): E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha, with
      E[x_0 | x_t] from Bayes' rule for the Gaussian pair (x_0, x_t);
    - denoising score matching equals explicit score matching up to a constant (Vincent 2011):
      for s(x) = a x + b, E|s - grad log q(x_t|x_0)|^2 - E|s - grad log p_t|^2 does not depend on
      (a, b);
    - Hyvarinen (2005) integration by parts: E[s'(x) + s(x)^2/2] = E|s - grad log p|^2 / 2
      - E|grad log p|^2 / 2 (boundary terms vanish: s p -> 0 at +-inf for Gaussian p)."""
    al, sg, lam = sp.symbols("alpha sigma lambda", positive=True)
    mu, x, x0, eps, a, b = sp.symbols("mu x x_0 epsilon a b", real=True)
    # forward kernel score at x_t = alpha x0 + sigma eps
    xt = al * x0 + sg * eps
    logq = -((x - al * x0) ** 2) / (2 * sg**2)
    _check("grad log q(x_t|x_0) = -eps/sigma", sp.diff(logq, x).subs(x, xt) + eps / sg)
    v = al**2 * lam + sg**2  # Var[x_t]
    score = -(x - al * mu) / v
    bayes_mean = mu + al * lam / v * (x - al * mu)  # E[x0|x_t] from the joint Gaussian
    tweedie = (x + sg**2 * score) / al
    _check("Tweedie", bayes_mean - tweedie)
    # expectations under the joint (x0, eps) Gaussian: x0 = mu + sqrt(lam) z, eps independent
    z = sp.symbols("z", real=True)

    def expect(expr):
        e = sp.expand(expr.subs(x0, mu + sp.sqrt(lam) * z))
        poly = sp.Poly(e, z, eps)
        moments = {0: 1, 1: 0, 2: 1, 3: 0, 4: 3}
        return sp.expand(sum(c * moments[i] * moments[j] for (i, j), c in poly.terms()))

    s_model = a * x + b
    dsm = expect(((s_model + eps / sg) ** 2).subs(x, xt))
    esm = expect(((s_model - score) ** 2).subs(x, xt))
    diff = sp.simplify(dsm - esm)
    _check("DSM - ESM is free of a", sp.diff(diff, a))
    _check("DSM - ESM is free of b", sp.diff(diff, b))
    hyv = expect((sp.diff(s_model, x) + s_model**2 / 2).subs(x, xt))
    rhs = expect((((s_model - score) ** 2) / 2 - score**2 / 2).subs(x, xt))
    _check("Hyvarinen's identity", hyv - rhs)
    return Derivation(
        "score_equivalences",
        "grad log q = -eps/sigma; Tweedie; DSM = ESM + const (Vincent); Hyvarinen's identity",
        {"alpha": al, "sigma": sg, "lambda": lam, "mu": mu, "x": x},
        {"score": score, "tweedie": tweedie, "dsm_minus_esm": diff},
        [
            ("posterior mean by Bayes", bayes_mean),
            ("Tweedie", tweedie),
            ("DSM - ESM (a constant)", diff),
        ],
    )


def edm_preconditioning() -> Derivation:
    """EDM preconditioning from its unit-variance conditions (Karras et al. 2022, App. B.6):
    with data variance sigma_d^2 and D(x) = c_skip x + c_out F(c_in x), x = y + n,
    c_in = 1/sqrt(sigma^2 + sigma_d^2) gives unit-variance inputs; the effective target
    F* = (y - c_skip (y + n))/c_out has unit variance, and c_skip minimising c_out (so errors of
    F are amplified least) is sigma_d^2/(sigma^2 + sigma_d^2), c_out = sigma sigma_d /
    sqrt(sigma^2 + sigma_d^2)."""
    sg, sd, cs = sp.symbols("sigma sigma_d c_skip", positive=True)
    c_in = 1 / sp.sqrt(sg**2 + sd**2)
    _check("unit input variance", c_in**2 * (sd**2 + sg**2) - 1)
    # Var[y - c_skip (y + n)] = (1 - c_skip)^2 sigma_d^2 + c_skip^2 sigma^2 = c_out^2
    c_out_sq = (1 - cs) ** 2 * sd**2 + cs**2 * sg**2
    c_skip = sp.solve(sp.diff(c_out_sq, cs), cs)[0]
    _check("c_skip", c_skip - sd**2 / (sg**2 + sd**2))
    _check("c_out^2 at the optimum", c_out_sq.subs(cs, c_skip) - sg**2 * sd**2 / (sg**2 + sd**2))
    c_out = sg * sd / sp.sqrt(sg**2 + sd**2)  # the positive root of the checked square
    return Derivation(
        "edm_preconditioning",
        "c_in, c_skip, c_out from unit variances (EDM, App. B.6)",
        {"sigma": sg, "sigma_d": sd},
        {"c_in": c_in, "c_skip": sp.simplify(c_skip), "c_out": sp.simplify(c_out)},
        [
            ("c_in", c_in),
            ("c_out^2 as a function of c_skip", c_out_sq),
            ("argmin c_skip", sp.simplify(c_skip)),
            ("c_out", sp.simplify(c_out)),
        ],
    )


def guidance() -> Derivation:
    """Guidance algebra (Ho & Salimans 2022; Dhariwal & Nichol 2021). Classifier-free guidance
    eps_u + w (eps_c - eps_u) is -sigma times the score of the tilted law
    p_t(x)^(1-w) p_t(x|c)^w; classifier guidance adds grad log p_t(c|x) = grad log p_t(x|c) -
    grad log p_t(x) (Bayes), so scale 1 is the conditional. Shown with Gaussians p = N(0, 1),
    p_c = N(m, v): tilting at time t and diffusing the t = 0 tilt give different variances when
    v != 1, so the guided scores are not the scores of one diffused family and sampling with
    them does not produce the tilted law at t = 0."""
    w, sg, al, m = sp.symbols("w sigma alpha m", positive=True)
    x = sp.symbols("x", real=True)
    s_u = -x / (al**2 + sg**2)  # score of p_t = N(0, alpha^2 + sigma^2)
    s_c = -(x - al * m) / (al**2 + sg**2)  # score of p_t(x|c) = N(alpha m, alpha^2 + sigma^2)
    eps_u, eps_c = -sg * s_u, -sg * s_c
    cfg = eps_u + w * (eps_c - eps_u)
    tilted_score = (1 - w) * s_u + w * s_c
    _check("CFG eps is -sigma times the tilted score", cfg + sg * tilted_score)
    _check("classifier gradient = score_c - score_u (Bayes) at scale 1", (s_u + (s_c - s_u)) - s_c)
    # the tilted law at time t is N(w alpha m, alpha^2 + sigma^2) here (equal variances), which
    # IS the diffusion of N(w m, 1): equal-variance Gaussians are the degenerate case. With
    # unequal variances (p = N(0, 1), p_c = N(m, v)) the tilt does not commute with diffusion:
    v = sp.symbols("v", positive=True)
    var_t = al**2 + sg**2
    var_ct = al**2 * v + sg**2
    prec_tilt_t = (1 - w) / var_t + w / var_ct  # precision of p_t^(1-w) p_t(.|c)^w
    prec0 = (1 - w) + w / v  # precision of the t = 0 tilt
    var_diffused = al**2 / prec0 + sg**2  # the t = 0 tilt, diffused
    gap = sp.simplify(1 / prec_tilt_t - var_diffused)
    if gap.subs({w: 2, v: sp.Rational(1, 4), al: sp.Rational(3, 5), sg: sp.Rational(4, 5)}) == 0:
        raise DerivationError("expected a nonzero gap between tilting and diffusing")
    return Derivation(
        "guidance",
        "CFG is the tilted score; classifier guidance at scale 1 is the conditional; tilting "
        "does not commute with diffusion",
        {"w": w, "alpha": al, "sigma": sg, "m": m, "v": v},
        {"cfg_eps": cfg, "tilted_variance_gap": gap},
        [("CFG eps", sp.simplify(cfg)), ("variance of the tilt at t minus the diffused tilt", gap)],
    )


TOPICS = {
    "forward_marginal": forward_marginal,
    "posterior": posterior,
    "gaussian_kl": gaussian_kl,
    "conversions": conversions,
    "ddim_family": ddim_family,
    "multistep_third_order": multistep_third_order,
    "score_equivalences": score_equivalences,
    "edm_preconditioning": edm_preconditioning,
    "guidance": guidance,
}


def derive(topic: str) -> Derivation:
    """Run (and so check) the derivation ``topic``; see ``TOPICS``."""
    if topic not in TOPICS:
        raise ValueError(f"topic must be one of {sorted(TOPICS)}, got {topic!r}")
    return TOPICS[topic]()
