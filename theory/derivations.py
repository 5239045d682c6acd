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
    "elbo",
    "schedules",
    "probability_flow",
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

    def _repr_markdown_(self) -> str:
        """Rendered in notebooks: the summary, then each step as display LaTeX."""
        parts = [f"**{self.topic}**: {self.summary}", ""]
        for i, (what, expr) in enumerate(self.steps, 1):
            parts += [f"{i}. {what}", "", f"$$ {sp.latex(expr)} $$", ""]
        return "\n".join(parts)


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
    _check("two DDPM steps: mean sqrt(a1 a2) x_0", mean2 - sp.sqrt(a1 * a2) * x0)
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
    # the general 1-D argument, for any smooth s and density p > 0 (abstract functions): the
    # integrands differ by an exact derivative, so the expectations agree exactly when the
    # boundary term s p vanishes at both ends (Hyvarinen 2005, Theorem 1, assumption s p -> 0)
    S, P = sp.Function("s")(x), sp.Function("p")(x)
    psi = sp.diff(P, x) / P
    gap = (S - psi) ** 2 / 2 * P - (sp.diff(S, x) + S**2 / 2) * P - psi**2 / 2 * P
    _check("integrands differ by -d(s p)/dx", sp.simplify(gap + sp.diff(S * P, x)))
    c = sp.symbols("c0:4", real=True)  # boundary term for a cubic s and a Gaussian p
    boundary = sum(ci * x**i for i, ci in enumerate(c)) * sp.exp(-((x - mu) ** 2) / (2 * lam))
    for end in (sp.oo, -sp.oo):
        _check(f"boundary term s p -> 0 at {end}", sp.limit(boundary, x, end))
    return Derivation(
        "score_equivalences",
        "grad log q = -eps/sigma; Tweedie; DSM = ESM + const (Vincent); Hyvarinen's identity",
        {"alpha": al, "sigma": sg, "lambda": lam, "mu": mu, "x": x},
        {"score": score, "tweedie": tweedie, "dsm_minus_esm": diff},
        [
            ("posterior mean by Bayes", bayes_mean),
            ("Tweedie", tweedie),
            ("DSM - ESM (a constant)", diff),
            ("Hyvarinen: integrand gap = -d(s p)/dx; boundary condition s p -> 0 at +-inf", gap),
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
    _check("c_out is the root of c_out^2 at the optimum", c_out**2 - c_out_sq.subs(cs, c_skip))
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
    grad log p_t(x) (Bayes), so scale 1 is the conditional (checked with the logistic posterior
    of a two-class mixture pi N(alpha m, .) + (1 - pi) N(-alpha m, .), differentiated by SymPy).
    The tilt is shown with Gaussians p = N(0, 1),
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
    # classifier guidance: the classifier is Bayes' posterior of a labelled mixture, written
    # here in its own closed form (logistic in x for two equal-variance Gaussians), and its
    # gradient added to the mixture's score at scale 1 must give the class-conditional score
    # (computed by differentiating the densities, not by rearranging the claim)
    pi = sp.symbols("pi", positive=True)
    var_t = al**2 + sg**2

    def dens(mean):
        return sp.exp(-((x - mean) ** 2) / (2 * var_t)) / sp.sqrt(2 * sp.pi * var_t)

    p_c, p_o = dens(al * m), dens(-al * m)  # class c at +m, the other class at -m (t = 0)
    # the class densities are the diffused N(+-m, 1) the CFG part assumes: normalised (the
    # constant cancels in the posterior and in d/dx log below) and with its scores s_c, s_u
    for claim, dens_c in (("p_t(x|c)", p_c), ("p_t(x|other)", p_o)):
        _check(f"{claim} integrates to 1", sp.integrate(dens_c, (x, -sp.oo, sp.oo)) - 1)
    _check("p_t(x|c) has the score s_c of the CFG part", sp.diff(sp.log(p_c), x) - s_c)
    _check("N(0, alpha^2 + sigma^2) has the score s_u of the CFG part",
           sp.diff(sp.log(dens(0)), x) - s_u)  # fmt: skip
    p_mix = pi * p_c + (1 - pi) * p_o
    logit = sp.log(pi / (1 - pi)) + 2 * al * m * x / var_t  # log p(c|x) - log p(other|x)
    classifier = 1 / (1 + sp.exp(-logit))
    _check("the logistic classifier is Bayes' posterior p(c | x)", classifier - pi * p_c / p_mix)
    guided = sp.diff(sp.log(p_mix), x) + sp.diff(sp.log(classifier), x)
    _check(
        "classifier guidance at scale 1 is the conditional score",
        guided - sp.diff(sp.log(p_c), x),
    )
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
    # in closed form (completing the algebra by hand, D = v (1 - w) + w = v prec0): a product
    # of factors, nonzero exactly when w is not 0 or 1 and v != 1
    D = v * (1 - w) + w
    closed = al**2 * sg**2 * w * (1 - w) * (v - 1) ** 2 / (D * (al**2 * D + sg**2))
    _check("the gap is a^2 s^2 w (1 - w) (v - 1)^2 / (D (a^2 D + s^2)): nonzero", gap - closed)
    return Derivation(
        "guidance",
        "CFG is the tilted score; classifier guidance at scale 1 is the conditional; tilting "
        "does not commute with diffusion",
        {"w": w, "alpha": al, "sigma": sg, "m": m, "v": v},
        {"cfg_eps": cfg, "tilted_variance_gap": gap},
        [("CFG eps", sp.simplify(cfg)), ("variance of the tilt at t minus the diffused tilt", gap)],
    )


def _log_normal(x, mean, var):
    return -sp.log(2 * sp.pi * var) / 2 - (x - mean) ** 2 / (2 * var)


def elbo() -> Derivation:
    """The variational bound of a discrete diffusion and its continuous-time limit.

    - Bayes for the forward chain (Ho et al. 2020, eq. 5 and App. A): q(x_t | x_{t-1}) =
      q(x_{t-1} | x_t, x_0) q(x_t | x_0) / q(x_{t-1} | x_0), checked on the Gaussian log-densities
      for every x; substituted into -log [p(x_{0:T}) / q(x_{1:T} | x_0)] the marginals telescope
      into L_T + sum_{t>=2} L_{t-1} + L_0 (checked with abstract log-densities for T = 5; the
      argument is the same for every T).
    - L_{t-1} with model mean mu = (x_t - beta_t / sqrt(1 - abar_t) eps_hat)/sqrt(alpha_t) and
      variance s^2 is KL(q || p) whose mean part is beta_t^2 / (2 s^2 alpha_t (1 - abar_t))
      |eps - eps_hat|^2 (Ho et al. 2020, eq. 12); with s^2 the posterior variance this weight is
      (SNR_{t-1}/SNR_t - 1)/2 in eps and (SNR_{t-1} - SNR_t)/2 in x_0 (Kingma et al. 2021, VDM,
      eq. 13) on any path. L_simple (Ho et al. eq. 14) drops the weight: term t multiplied by
      1/w_t.
    - Continuous limit (VDM, eq. 15-17): T (SNR(t - 1/T) - SNR(t))/2 -> -SNR'(t)/2 and the eps
      weight tends to -lambda'(t)/2; the loss -1/2 int SNR'(t) mse(SNR(t)) dt = 1/2 int mse(v) dv
      depends only on the end points of SNR (checked for two schedules with unit-Gaussian data,
      whose x_0-MMSE at SNR v is 1/(1 + v)).
    - Weight <-> timestep density (Kingma & Gao 2023, Sec. 4): uniform t induces the log-SNR
      density p(lambda) = |dt/dlambda|; for the cosine schedule (s = 0) p(lambda) =
      sech(lambda/2)/(2 pi), which integrates to 1; a weight w(lambda) under uniform t equals
      sampling lambda from p with weight w/p."""
    # -- Bayes for one DDPM step, VP: alpha_t = abar_t/abar_s, beta_t = 1 - alpha_t
    abs_, abt = sp.symbols("alpha_bar_s alpha_bar_t", positive=True)
    x0, xs, xt = sp.symbols("x_0 x_s x_t", real=True)
    at = abt / abs_
    beta = 1 - at
    post_var = (1 - abs_) / (1 - abt) * beta
    post_mean = sp.sqrt(abs_) * beta / (1 - abt) * x0 + sp.sqrt(at) * (1 - abs_) / (1 - abt) * xt
    lhs = _log_normal(xt, sp.sqrt(at) * xs, beta) + _log_normal(xs, sp.sqrt(abs_) * x0, 1 - abs_)
    rhs = _log_normal(xs, post_mean, post_var) + _log_normal(xt, sp.sqrt(abt) * x0, 1 - abt)
    bayes = sp.expand(sp.expand_log(lhs - rhs, force=True))
    for var in (xs, xt, x0):
        _check(f"Bayes: log-density difference is free of {var}", sp.diff(bayes, var))
    _check("Bayes: and the constant vanishes", bayes.subs({xs: 0, xt: 0, x0: 0}))
    # -- telescoping with abstract log-densities, T = 5
    T = 5
    fwd = sp.symbols(f"logq_fwd1:{T + 1}")  # log q(x_t | x_{t-1}), t = 1..T
    marg = sp.symbols(f"logq_marg1:{T + 1}")  # log q(x_t | x_0)
    post = sp.symbols(f"logq_post2:{T + 1}")  # log q(x_{t-1} | x_t, x_0), t = 2..T
    rev = sp.symbols(f"logp_rev1:{T + 1}")  # log p(x_{t-1} | x_t), t = 1..T
    log_prior = sp.symbols("logp_T")
    neg_elbo = sum(fwd) - log_prior - sum(rev)
    bayes_subs = {fwd[t - 1]: post[t - 2] + marg[t - 1] - marg[t - 2] for t in range(2, T + 1)}
    bayes_subs[fwd[0]] = marg[0]
    L_T = marg[T - 1] - log_prior
    L_mid = [post[t - 2] - rev[t - 1] for t in range(2, T + 1)]
    L_0 = -rev[0]
    _check(
        "-ELBO = L_T + sum L_{t-1} + L_0 (T = 5)",
        neg_elbo.subs(bayes_subs) - (L_T + sum(L_mid) + L_0),
    )
    # -- L_{t-1} in eps form
    eps, eps_hat = sp.symbols("epsilon epsilon_hat", real=True)
    s2 = sp.symbols("s2", positive=True)  # the model's variance
    x0_of = (xt - sp.sqrt(1 - abt) * eps) / sp.sqrt(abt)
    mu_tilde = post_mean.subs(x0, x0_of)
    mu_model = (xt - beta / sp.sqrt(1 - abt) * eps_hat) / sp.sqrt(at)
    _check(
        "posterior mean in eps form (Ho et al. eq. 10)",
        mu_tilde - (xt - beta / sp.sqrt(1 - abt) * eps) / sp.sqrt(at),
    )
    weight_eps = beta**2 / (2 * s2 * at * (1 - abt))
    _check(
        "KL mean part = beta^2/(2 s^2 alpha_t (1 - abar_t)) |eps - eps_hat|^2",
        (mu_tilde - mu_model) ** 2 / (2 * s2) - weight_eps * (eps - eps_hat) ** 2,
    )
    # -- the weight in SNR form on any path, model x0_hat, variance = posterior variance
    al_s, al_t, sg_s, sg_t = sp.symbols("alpha_s alpha_t sigma_s sigma_t", positive=True)
    x0_hat = sp.symbols("x0_hat", real=True)
    a_ts = al_t / al_s
    var_ts = sg_t**2 - a_ts**2 * sg_s**2
    coef_x0 = al_s * var_ts / sg_t**2
    var_post = var_ts * sg_s**2 / sg_t**2
    snr_s, snr_t = al_s**2 / sg_s**2, al_t**2 / sg_t**2
    _check(
        "x0 weight = (SNR_s - SNR_t)/2",
        (coef_x0 * (x0 - x0_hat)) ** 2 / (2 * var_post) - (snr_s - snr_t) / 2 * (x0 - x0_hat) ** 2,
    )
    w_eps = (snr_s / snr_t - 1) / 2  # x0 - x0_hat = (sigma_t/alpha_t)(eps_hat - eps)
    _check("eps weight = (SNR_s/SNR_t - 1)/2", (snr_s - snr_t) / 2 * sg_t**2 / al_t**2 - w_eps)
    vp = {al_s: sp.sqrt(abs_), al_t: sp.sqrt(abt), sg_s: sp.sqrt(1 - abs_), sg_t: sp.sqrt(1 - abt)}
    _check(
        "DDPM weight with s^2 = beta_tilde equals (SNR_{t-1}/SNR_t - 1)/2",
        weight_eps.subs(s2, post_var) - w_eps.subs(vp),
    )
    # -- continuous limit with an abstract SNR(t)
    t, h = sp.symbols("t h", positive=True)
    S = sp.Function("SNR")
    limit_x0 = sp.series((S(t - h) - S(t)) / (2 * h), h, 0, 1).removeO().doit()
    _check("T (SNR(t - 1/T) - SNR(t))/2 -> -SNR'(t)/2", limit_x0 + sp.diff(S(t), t) / 2)
    limit_eps = sp.series((S(t - h) / S(t) - 1) / (2 * h), h, 0, 1).removeO().doit()
    lam = sp.log(S(t))
    _check("T (SNR_s/SNR_t - 1)/2 -> -lambda'(t)/2", limit_eps + sp.diff(lam, t) / 2)
    # -- invariance to the schedule between the end points (unit-Gaussian data: mmse = 1/(1+v))
    A, B = sp.symbols("A B", positive=True)  # SNR(0) = A > SNR(1) = B
    expected = sp.log((1 + A) / (1 + B)) / 2
    for name, snr in (("linear", A + (B - A) * t), ("quadratic", A + (B - A) * t**2)):
        loss = sp.integrate(-sp.diff(snr, t) / (1 + snr) / 2, (t, 0, 1))
        _check(
            f"continuous loss for the {name} SNR(t) depends only on SNR(0), SNR(1)",
            sp.expand_log(sp.logcombine(loss - expected, force=True), force=True),
        )
    # -- timestep density of uniform t in log-SNR, cosine schedule (s = 0)
    lmb = sp.symbols("lambda", real=True)
    t_of_lam = 2 / sp.pi * sp.atan(sp.exp(-lmb / 2))
    _check(
        "cosine: lambda(t(lambda)) = lambda",
        sp.simplify(-2 * sp.log(sp.tan(sp.pi * t_of_lam / 2))) - lmb,
    )
    p_lam = sp.simplify(-sp.diff(t_of_lam, lmb))
    p_cos = 1 / (2 * sp.pi * sp.cosh(lmb / 2))
    _check("cosine: p(lambda) = sech(lambda/2)/(2 pi)", (p_lam - p_cos).rewrite(sp.exp))
    _check("and it is a density", sp.integrate(p_cos.rewrite(sp.exp), (lmb, -sp.oo, sp.oo)) - 1)
    return Derivation(
        "elbo",
        "ELBO = L_T + sum L_{t-1} + L_0; L_{t-1} in eps form and its SNR weight; VDM limit; "
        "loss weight <-> log-SNR density",
        {
            "alpha_bar_s": abs_,
            "alpha_bar_t": abt,
            "s2": s2,
            "alpha_s": al_s,
            "alpha_t": al_t,
            "sigma_s": sg_s,
            "sigma_t": sg_t,
            "lambda": lmb,
            "SNR_0": A,
            "SNR_1": B,
        },
        {
            "vdm_loss_unit_gaussian": expected,
            "weight_eps_ddpm": weight_eps,
            "weight_eps": w_eps,
            "weight_x0": (snr_s - snr_t) / 2,
            "cosine_log_snr_density": p_cos,
            "cosine_t_of_log_snr": t_of_lam,
        },
        [
            (
                "posterior mean used in Bayes' rule q(x_t|x_{t-1}) q(x_{t-1}|x_0) = "
                "q(x_{t-1}|x_t,x_0) q(x_t|x_0)",
                post_mean,
            ),
            ("posterior variance", post_var),
            ("-ELBO after substituting Bayes (T = 5)", L_T + sum(L_mid) + L_0),
            ("L_{t-1} eps weight (model variance s^2)", weight_eps),
            ("with s^2 the posterior variance, in SNR form", w_eps),
            ("x0 weight", (snr_s - snr_t) / 2),
            ("continuous limit of the x0 weight per unit time", limit_x0),
            ("log-SNR density of uniform t, cosine", p_cos),
        ],
    )


def schedules() -> Derivation:
    """Closed forms of the noise schedules and the SDE coefficients they imply.

    - Variance preserving (alpha^2 + sigma^2 = 1): alpha^2 = sigmoid(lambda), sigma^2 =
      sigmoid(-lambda); sigma_EDM = sigma/alpha = exp(-lambda/2) on every path (Karras et al. 2022,
      eq. 4 with s(t) = alpha).
    - VP linear (Song et al. 2021, eq. 33): B(t) = beta_min t + (beta_max - beta_min) t^2/2,
      alpha = exp(-B/2), lambda = -log(expm1(B)), and the inverse t = 2B/(beta_min +
      sqrt(beta_min^2 + 2 (beta_max - beta_min) B)) with B = log(1 + exp(-lambda)).
    - Cosine (Nichol & Dhariwal 2021, eq. 17): alpha_bar = cos^2(phi)/cos^2(phi0); the reference's
      sigma^2 = sin(phi - phi0) sin(phi + phi0)/cos^2(phi0) is 1 - alpha_bar exactly; for s = 0,
      lambda = -2 log tan(pi t/2), lambda' = -2 pi / sin(pi t), t = (2/pi) atan(exp(-lambda/2)).
    - Flow (Lipman et al. 2023): lambda = 2 log((1 - t)/t), t = sigmoid(-lambda/2).
    - SDE coefficients (Song et al. 2021, eq. 5; Kingma et al. 2021, App. A): dx = f x dt + g dW
      with marginal variance sigma^2 needs f = alpha'/alpha and g^2 = (sigma^2)' - 2 f sigma^2 =
      -sigma^2 lambda'; VP linear gives f = -beta/2, g^2 = beta; Flow f = -1/(1-t),
      g^2 = 2t/(1-t)."""
    lam = sp.symbols("lambda", real=True)
    t = sp.symbols("t", positive=True)
    # VP
    a2 = 1 / (1 + sp.exp(-lam))
    s2 = 1 - a2
    _check("VP: log(alpha^2/sigma^2) = lambda", sp.expand_log(sp.log(a2 / s2), force=True) - lam)
    _check("VP: sigma^2 = sigmoid(-lambda)", s2 - 1 / (1 + sp.exp(lam)))
    _check("sigma_EDM = exp(-lambda/2)", sp.sqrt(s2 / a2) - sp.exp(-lam / 2))
    # VP linear
    bmin, bmax = sp.symbols("beta_min beta_max", positive=True)
    beta = bmin + t * (bmax - bmin)
    B = bmin * t + (bmax - bmin) * t**2 / 2
    _check("VP linear: B' = beta", sp.diff(B, t) - beta)
    alpha_lin = sp.exp(-B / 2)
    sigma_lin = sp.sqrt(1 - sp.exp(-B))
    lam_lin = -sp.log(sp.exp(B) - 1)
    _check(
        "VP linear: lambda = -log(expm1(B))",
        sp.expand_log(sp.simplify(sp.log(alpha_lin**2 / sigma_lin**2) - lam_lin), force=True),
    )
    Bv = sp.symbols("B", positive=True)
    t_of_B = 2 * Bv / (bmin + sp.sqrt(bmin**2 + 2 * (bmax - bmin) * Bv))
    _check("VP linear: B(t(B)) = B", sp.radsimp(B.subs(t, t_of_B)) - Bv)
    _check(
        "VP linear: lambda at B = log(1 + exp(-lambda)) is lambda",
        sp.simplify(-sp.log(sp.exp(sp.log(1 + sp.exp(-lam))) - 1)) - lam,
    )
    t_of_lam_lin = t_of_B.subs(Bv, sp.log(1 + sp.exp(-lam)))
    # cosine
    phi, phi0 = sp.symbols("phi phi_0", positive=True)
    _check(
        "cosine: cos^2(phi0) - cos^2(phi) = sin(phi - phi0) sin(phi + phi0)",
        sp.expand_trig(
            sp.cos(phi0) ** 2 - sp.cos(phi) ** 2 - sp.sin(phi - phi0) * sp.sin(phi + phi0)
        ),
    )
    alpha_cos = sp.cos(sp.pi * t / 2)  # s = 0
    sigma_cos = sp.sin(sp.pi * t / 2)
    lam_cos = -2 * sp.log(sp.tan(sp.pi * t / 2))
    # log is injective: compare the SNRs themselves
    _check("cosine (s=0): SNR = exp(lambda)", alpha_cos**2 / sigma_cos**2 - sp.exp(lam_cos))
    dlam_cos = -2 * sp.pi / (2 * sp.sin(sp.pi * t / 2) * sp.cos(sp.pi * t / 2))
    _check("cosine (s=0): lambda' = -2 pi / sin(pi t)", sp.simplify(sp.diff(lam_cos, t) - dlam_cos))
    _check(
        "cosine (s=0): lambda' = -2 pi / sin(pi t) (double angle)",
        sp.simplify(dlam_cos + 2 * sp.pi / sp.sin(sp.pi * t)),
    )
    # flow
    lam_flow = 2 * sp.log((1 - t) / t)
    t_of_lam_flow = 1 / (1 + sp.exp(lam / 2))
    _check(
        "flow: t(lambda(t)) = t",
        sp.simplify(t_of_lam_flow.subs(lam, lam_flow)) - t,
    )
    # SDE coefficients: d Var/dt = 2 f Var + g^2 for dx = f x dt + g dW (Ito)
    A, Sg = sp.Function("alpha")(t), sp.Function("sigma")(t)
    f = sp.diff(A, t) / A
    g2 = sp.diff(Sg**2, t) - 2 * f * Sg**2
    v0 = sp.symbols("v_0", positive=True)
    var = A**2 * v0 + Sg**2  # marginal variance for data variance v0
    _check("variance ODE d Var/dt = 2 f Var + g^2", sp.diff(var, t) - (2 * f * var + g2))
    lam_gen = sp.log(A**2 / Sg**2)
    _check("g^2 = -sigma^2 lambda'", sp.simplify(g2 + Sg**2 * sp.diff(lam_gen, t)))

    def coeffs(alpha, sigma):
        ff = sp.simplify(sp.diff(alpha, t) / alpha)
        return ff, sp.simplify(sp.diff(sigma**2, t) - 2 * ff * sigma**2)

    f_lin, g2_lin = coeffs(alpha_lin, sigma_lin)
    _check("VP linear: f = -beta/2", f_lin + beta / 2)
    _check("VP linear: g^2 = beta", g2_lin - beta)
    f_flow, g2_flow = coeffs(1 - t, t)
    _check("flow: f = -1/(1 - t)", f_flow + 1 / (1 - t))
    _check("flow: g^2 = 2t/(1 - t)", g2_flow - 2 * t / (1 - t))
    return Derivation(
        "schedules",
        "log-SNR closed forms (VP, VP linear, cosine, flow), their inverses, f and g^2",
        {"t": t, "lambda": lam, "beta_min": bmin, "beta_max": bmax},
        {
            "vp_alpha_sq": a2,
            "vp_sigma_sq": s2,
            "vp_linear_alpha": alpha_lin,
            "vp_linear_sigma": sigma_lin,
            "vp_linear_log_snr": lam_lin,
            "vp_linear_t_of_log_snr": t_of_lam_lin,
            "vp_linear_f": f_lin,
            "vp_linear_g_squared": g2_lin,
            "cosine_log_snr": lam_cos,
            "cosine_d_log_snr": -2 * sp.pi / sp.sin(sp.pi * t),
            "flow_log_snr": lam_flow,
            "flow_t_of_log_snr": t_of_lam_flow,
            "flow_f": f_flow,
            "flow_g_squared": g2_flow,
        },
        [
            ("VP: alpha^2(lambda)", a2),
            ("VP linear: lambda(t)", lam_lin),
            ("VP linear: t(lambda)", t_of_lam_lin),
            ("cosine (s = 0): lambda(t)", lam_cos),
            ("flow: t(lambda)", t_of_lam_flow),
            ("f for any path", f),
            ("g^2 for any path", g2),
        ],
    )


def probability_flow() -> Derivation:
    """The probability-flow ODE and the reverse SDE keep the forward marginals (Song et al. 2021,
    eq. 6 and 13; Anderson 1982), shown for Gaussian data N(mu, v) on any path alpha(t), sigma(t)
    (abstract functions) in one dimension, where p_t = N(alpha mu, alpha^2 v + sigma^2).

    - Fokker-Planck: p_t solves dp/dt = -d(f x p)/dx + (g^2/2) d^2p/dx^2 for the forward SDE
      dx = f x dt + g dW, with f = alpha'/alpha and g^2 = (sigma^2)' - 2 f sigma^2.
    - For every kappa >= 0 the SDE dx = [f x - (1 - kappa) g^2 score/2] dt + sqrt(kappa) g dW has
      the same Fokker-Planck solution p_t: kappa = 0 is the probability-flow ODE, kappa = 1 the
      forward SDE; so the ODE and the SDE have the same marginals.
    - The reverse SDE dx = [f x - g^2 score] dt + g dW_bar, run backward in time, solves the
      time-reversed Fokker-Planck equation with the same p_t.
    - The PF-ODE drift equals the flow-matching velocity E[alpha' x_0 + sigma' eps | x_t]
      (Lipman et al. 2023): f x - g^2 score/2 = alpha' x0_hat + sigma' eps_hat, with Tweedie's
      x0_hat = (x + sigma^2 score)/alpha and eps_hat = -sigma score."""
    t = sp.symbols("t", positive=True)
    x, mu = sp.symbols("x mu", real=True)
    v, kappa = sp.symbols("v kappa", positive=True)
    A, Sg = sp.Function("alpha")(t), sp.Function("sigma")(t)
    f = sp.diff(A, t) / A
    g2 = sp.diff(Sg**2, t) - 2 * f * Sg**2
    var = A**2 * v + Sg**2
    p = sp.exp(-((x - A * mu) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)
    score = -(x - A * mu) / var
    _check("score = d log p/dx", sp.simplify(sp.diff(p, x) / p - score))

    def fp_residual(drift, diffusion, sign=1):
        """sign * dp/dt + d(drift p)/dx - diffusion/2 d^2p/dx^2, divided by p."""
        res = sign * sp.diff(p, t) + sp.diff(drift * p, x) - diffusion / 2 * sp.diff(p, x, 2)
        return sp.simplify(sp.expand(sp.simplify(res / p)))

    _check("Fokker-Planck of the forward SDE", fp_residual(f * x, g2))
    drift_kappa = f * x - (1 - kappa) * g2 * score / 2
    _check("every kappa >= 0 gives the same marginals", fp_residual(drift_kappa, kappa * g2))
    pf_drift = f * x - g2 * score / 2
    _check("probability-flow ODE: continuity equation", fp_residual(pf_drift, 0))
    # reverse SDE in reversed time tau = -t: dx = -(f x - g^2 score) dtau + g dW, so
    # dp/dtau = -dp/dt = d((f x - g^2 score) p)/dx + g^2/2 d^2p/dx^2
    rev_drift = f * x - g2 * score
    rev_res = sp.simplify(
        sp.expand(
            sp.simplify(
                (-sp.diff(p, t) - sp.diff(rev_drift * p, x) - g2 / 2 * sp.diff(p, x, 2)) / p
            )
        )
    )
    _check("reverse SDE solves the time-reversed Fokker-Planck equation", rev_res)
    x0_hat = (x + Sg**2 * score) / A
    eps_hat = -Sg * score
    velocity = sp.diff(A, t) * x0_hat + sp.diff(Sg, t) * eps_hat
    _check("PF-ODE drift = flow velocity alpha' x0_hat + sigma' eps_hat", pf_drift - velocity)
    da, ds, al, sg, sc = sp.symbols("dalpha dsigma alpha sigma score", real=True)
    drift_plain = da / al * x - (2 * sg * ds - 2 * da / al * sg**2) * sc / 2
    _check(
        "the plain-symbol drift is the PF-ODE drift",
        drift_plain.subs({da: sp.diff(A, t), ds: sp.diff(Sg, t), al: A, sg: Sg, sc: score})
        - pf_drift,
    )
    return Derivation(
        "probability_flow",
        "Fokker-Planck for Gaussian data; the PF-ODE, the SDE family and the reverse SDE share "
        "the marginals; the PF-ODE drift is the flow velocity",
        {"alpha": al, "sigma": sg, "dalpha": da, "dsigma": ds, "x": x, "score": sc},
        {"pf_ode_drift": drift_plain, "f": da / al, "g_squared": 2 * sg * ds - 2 * da / al * sg**2},
        [
            ("marginal density", p),
            ("f", f),
            ("g^2", g2),
            ("SDE family drift (diffusion kappa g^2)", drift_kappa),
            ("PF-ODE drift", pf_drift),
            ("flow velocity from Tweedie", velocity),
        ],
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
    "elbo": elbo,
    "schedules": schedules,
    "probability_flow": probability_flow,
}


def derive(topic: str) -> Derivation:
    """Run (and so check) the derivation ``topic``; see ``TOPICS``."""
    if topic not in TOPICS:
        raise ValueError(f"topic must be one of {sorted(TOPICS)}, got {topic!r}")
    return TOPICS[topic]()
