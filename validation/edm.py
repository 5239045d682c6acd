"""EDM's generalized ablation sampler, VP configuration, transcribed into the sampler protocol.

Source: NVlabs/edm, ``generate.py``, function ``ablation_sampler`` (commit
008a4e5316c8e3bfe61a62f874bddba254295afb, 2024-03-16; ``generate.py`` last changed in
62072d2612c7da05165d6233d13d17d71f213fee), with ``solver='heun', discretization='vp',
schedule='vp', scaling='vp'``, ``alpha=1``, ``S_churn=0``, ``epsilon_s=1e-3`` (Karras et al.
2022, arXiv:2206.00364, Algorithm 1 with Table 1's VP column). The code below is a NumPy
transcription of that published algorithm; edm itself is not imported.

The algorithm (N = ``num_steps``):

    vp_sigma(t)     = (e^(beta_d t^2/2 + beta_min t) - 1)^(1/2)
    vp_sigma'(t)    = (beta_min + beta_d t)/2 (sigma + 1/sigma)
    vp_sigma_inv(s) = ((beta_min^2 + 2 beta_d log(s^2 + 1))^(1/2) - beta_min) / beta_d
    s(t) = 1/sqrt(1 + sigma^2),  s'(t) = -sigma sigma' s^3
    sigma_min = vp_sigma(19.9, 0.1)(epsilon_s), sigma_max = vp_sigma(19.9, 0.1)(1)
    vp_beta_d   = 2 (log(sigma_min^2 + 1)/epsilon_s - log(sigma_max^2 + 1))/(epsilon_s - 1)
    vp_beta_min = log(sigma_max^2 + 1) - vp_beta_d/2          (19.9 and 0.1 again, to round-off)
    orig_t_i = 1 + i/(N-1) (epsilon_s - 1),  i = 0..N-1
    t_i = sigma_inv(round_sigma(vp_sigma(orig_t_i))),  t_N = 0    (round_sigma: identity for VP)
    x_0 = latents sigma(t_0) s(t_0)
    for i = 0..N-1:  (S_churn = 0: t_hat = t_i, x_hat = x_i)
        d_i = (sigma'/sigma + s'/s)(t_i) x_i - (sigma' s/sigma)(t_i) D(x_i/s(t_i); sigma(t_i))
        if i == N-1:  x_N = x_i + (t_N - t_i) d_i                  (Euler into t_N = 0)
        else:         x' = x_i + (t_{i+1} - t_i) d_i
                      d' = (same formula at t_{i+1}, x')
                      x_{i+1} = x_i + (t_{i+1} - t_i)(d_i + d')/2   (Heun)

Mapping onto this package. EDM's VP SDE is ``reference.schedules.VPLinear`` with beta_min = 0.1,
beta_max = beta_min + beta_d = 20 (the defaults): B(t) = beta_min t + beta_d t^2/2, alpha =
e^(-B/2) = s(t), sigma_EDM = sigma/alpha = vp_sigma(t). So EDM's t *is* our t, EDM's x (the
scaled state s (y + sigma n)) *is* our x_t, D(x/s; sigma(t)) is the x0-prediction of the model
at (x, t), and EDM's ``latents * sigma(t_0) s(t_0)`` is the harness's ``x_init`` at ``grid.t[0]``.
The sampler reads EDM's t_0..t_{N-1} from ``grid.t`` (a grid with ``final_zero=True``: its last
node is t_N = 0) and evaluates sigma, sigma', s, s' with EDM's own closed forms above (beta_d,
beta_min recomputed from sigma_min, sigma_max as EDM does). :meth:`EDMAblationHeun.make_grid`
builds exactly EDM's t_i for N steps, so the grid a harness compares against is the one the
sampler runs: the model is called at t_0..t_{N-1} only (the Heun stage at t_{i+1} is the next
node). EDM's t_0 = sigma_inv(sigma(1)) may exceed 1 by an ulp; it is clipped to the schedule's
t_max. On VPLinear the grid equals ``make_grid(VPLinear(), N, "uniform", t_end=1e-3)`` to
round-off.

Omitted on purpose (all inert at S_churn = 0): EDM recomputes t_hat = sigma_inv(round_sigma(
sigma(t_i))) (= t_i to round-off) and adds sqrt(max(sigma(t_hat)^2 - sigma(t_i)^2, 0)) s(t_hat)
S_noise randn, a term that is zero or, from that round-off, below ~1e-8 sigma; this transcription
takes t_hat = t_i and draws no noise (deterministic, as the protocol's ``stochastic=False``
requires). The sigma_min/sigma_max clamps to the network's range are inactive for EDM's VPPrecond
(sigma_min = vp_sigma(1e-5) < vp_sigma(epsilon_s), sigma_max = vp_sigma(1)).

``final="euler"`` is the published last step; ``final="jump"`` replaces it by the denoising jump
x_N = D(x_{N-1}) (what this package's samplers and its exact reference take), so the effect of
the last step can be isolated: theory/edm_last_step.py derives that the Euler step keeps
c(t_{N-1}) ~ 0.455 of the noise s sigma n at t_{N-1} = epsilon_s (docs/edm_vp_heun.md).
"""

from __future__ import annotations

import inspect

import numpy as np

from diffusion_oracle.reference._checks import finite, positive_int
from diffusion_oracle.reference.grids import Grid
from diffusion_oracle.reference.parameterization import to_x0_eps
from diffusion_oracle.reference.schedules import Schedule, VPLinear

__all__ = ["EDM_SOURCE", "EDMAblationHeun", "edm_ablation_heun", "edm_vp_t_steps"]

EDM_SOURCE = (
    "NVlabs/edm generate.py ablation_sampler @ 008a4e5316c8e3bfe61a62f874bddba254295afb "
    "(solver=heun, discretization=vp, schedule=vp, scaling=vp)"
)

FINALS = ("euler", "jump")


def _vp_sigma(beta_d, beta_min):
    return lambda t: (np.e ** (0.5 * beta_d * (t**2) + beta_min * t) - 1) ** 0.5


def _vp_fns(beta_d, beta_min):
    """sigma, sigma', sigma_inv, s, s' of ablation_sampler's VP schedule and VP scaling."""
    sigma = _vp_sigma(beta_d, beta_min)

    def sigma_deriv(t):
        return 0.5 * (beta_min + beta_d * t) * (sigma(t) + 1 / sigma(t))

    def sigma_inv(sig):
        return (np.sqrt(beta_min**2 + 2 * beta_d * np.log(sig**2 + 1)) - beta_min) / beta_d

    def s(t):
        return 1 / np.sqrt(1 + sigma(t) ** 2)

    def s_deriv(t):
        return -sigma(t) * sigma_deriv(t) * (s(t) ** 3)

    return sigma, sigma_deriv, sigma_inv, s, s_deriv


def _edm_betas(beta_d=19.9, beta_min=0.1, epsilon_s=1e-3):
    """(vp_beta_d, vp_beta_min) as ablation_sampler recomputes them from its default sigma range
    (its hard-coded 19.9 and 0.1; here the schedule's, which are those for VPLinear())."""
    sigma_min = _vp_sigma(beta_d, beta_min)(epsilon_s)
    sigma_max = _vp_sigma(beta_d, beta_min)(1.0)
    vp_beta_d = (
        2 * (np.log(sigma_min**2 + 1) / epsilon_s - np.log(sigma_max**2 + 1)) / (epsilon_s - 1)
    )
    vp_beta_min = np.log(sigma_max**2 + 1) - 0.5 * vp_beta_d
    return float(vp_beta_d), float(vp_beta_min)


def edm_vp_t_steps(num_steps: int, *, beta_d=19.9, beta_min=0.1, epsilon_s=1e-3) -> np.ndarray:
    """ablation_sampler's t_0 > ... > t_{N-1} > t_N = 0 for discretization='vp', schedule='vp'
    (N + 1 values, float64, unclipped)."""
    N = positive_int(num_steps, "num_steps", minimum=2)
    bd, bm = _edm_betas(beta_d, beta_min, epsilon_s)
    sigma, _, sigma_inv, _, _ = _vp_fns(bd, bm)
    step_indices = np.arange(N, dtype=np.float64)
    orig_t_steps = 1 + step_indices / (N - 1) * (epsilon_s - 1)
    sigma_steps = sigma(orig_t_steps)
    t_steps = sigma_inv(sigma_steps)  # net.round_sigma is the identity for VPPrecond
    return np.append(t_steps, 0.0)


class EDMAblationHeun:
    """EDM's ablation sampler (Heun, VP discretization, VP schedule, VP scaling) in the sampler
    protocol; see the module docstring for the transcription and the mapping of EDM's t.

    ``final``: "euler" (published: Euler step in t into t_N = 0) or "jump" (x_N = D(x_{N-1})).
    ``epsilon_s``: EDM's last nonzero time (1e-3). Runs on a ``VPLinear`` grid with
    ``final_zero=True``; :meth:`make_grid` gives EDM's own grid for N steps. 2N - 1 model calls.
    """

    order = 2
    stochastic = False
    default_grid = "uniform"

    def __init__(self, final: str = "euler", *, epsilon_s: float = 1e-3):
        if final not in FINALS:
            raise ValueError(f"final must be one of {FINALS}, got {final!r}")
        self.final = final
        self.epsilon_s = float(epsilon_s)
        if not 0.0 < self.epsilon_s < 1.0:
            raise ValueError(f"epsilon_s must be in (0, 1), got {epsilon_s!r}")
        suffix = "" if final == "euler" else "-jump"
        self.name = f"edm-ablation-heun-vp{suffix}"

    def __repr__(self):
        return self.name

    @staticmethod
    def _betas(schedule):
        if not isinstance(schedule, VPLinear):
            raise TypeError(
                "the EDM VP ablation sampler runs on VPLinear (EDM's VP SDE), got "
                f"{type(schedule).__name__}"
            )
        return schedule.beta_max - schedule.beta_min, schedule.beta_min

    def make_grid(self, schedule: Schedule, steps: int) -> Grid:
        """The grid EDM's ablation sampler runs for ``steps`` = N: t_0..t_{N-1} (model calls) and
        t_N = 0 (``final_zero=True``); t_0 clipped to the schedule's t_max. Where Grid records
        its family, it is "edm-vp(epsilon_s=...)" and refines (uniform in t between fixed ends)."""
        bd, bm = self._betas(schedule)
        ts = edm_vp_t_steps(steps, beta_d=bd, beta_min=bm, epsilon_s=self.epsilon_s)[:-1]
        ts = np.clip(ts, schedule.t_min, schedule.t_max)
        if "refines" in inspect.signature(Grid).parameters:
            # uniform in t between fixed ends (1 and epsilon_s): a refining family in N
            family = f"edm-vp(epsilon_s={self.epsilon_s:g})"
            return Grid(schedule, ts, final_zero=True, family=family, refines=True)
        return Grid(schedule, ts, final_zero=True)

    def __call__(self, model, x_init, grid, *, rng=None):
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
        if not grid.final_zero:
            raise ValueError("EDM's sampler ends at t_N = 0: the grid needs final_zero=True")
        bd, bm = self._betas(grid.schedule)
        sigma, sigma_deriv, _, s, s_deriv = _vp_fns(*_edm_betas(bd, bm, self.epsilon_s))
        x = finite(x_init, "x_init")
        if x.ndim != 2:
            raise ValueError(f"x_init must have shape (n, d), got {x.shape}")
        x_next = x.copy()
        t_steps = grid.t
        num_steps = grid.steps
        pred = getattr(model, "prediction", "eps")

        def denoise(xv, i):
            # D(x/s(t_i); sigma(t_i)) = E[x0 | x_t = x] of our model at node i (same SDE)
            out = np.asarray(model(xv, float(t_steps[i])), dtype=np.float64)
            if out.shape != xv.shape:
                raise ValueError(f"model output must have the shape of x {xv.shape}")
            x0, _ = to_x0_eps(
                out,
                source=pred,
                x_t=xv,
                alpha=grid.alpha[i],
                sigma=grid.sigma[i],
                d_alpha=grid.d_alpha[i],
                d_sigma=grid.d_sigma[i],
            )
            return x0

        def deriv(xv, tv, denoised):
            # d = (sigma'/sigma + s'/s) x - sigma' s/sigma D   (Karras et al. 2022, eq. 4)
            a = sigma_deriv(tv) / sigma(tv) + s_deriv(tv) / s(tv)
            b = sigma_deriv(tv) * s(tv) / sigma(tv)
            return a * xv - b * denoised

        for i in range(num_steps):  # 0, ..., N-1
            t_cur, t_next = float(t_steps[i]), float(t_steps[i + 1])
            x_hat, t_hat = x_next, t_cur  # S_churn = 0
            h = t_next - t_hat
            denoised = denoise(x_hat, i)
            if i == num_steps - 1 and self.final == "jump":
                return denoised
            d_cur = deriv(x_hat, t_hat, denoised)
            x_prime = x_hat + h * d_cur  # alpha = 1: t_prime = t_next
            if i == num_steps - 1:
                x_next = x_hat + h * d_cur  # Euler into t_N = 0
            else:
                denoised = denoise(x_prime, i + 1)
                d_prime = deriv(x_prime, t_next, denoised)
                x_next = x_hat + h * (0.5 * d_cur + 0.5 * d_prime)
        return x_next


def edm_ablation_heun(final: str = "euler", *, epsilon_s: float = 1e-3) -> EDMAblationHeun:
    """EDM's ablation sampler, VP configuration (Heun; ``final`` "euler" as published, or "jump");
    the step count comes from the grid (``make_grid(schedule, N)``)."""
    return EDMAblationHeun(final, epsilon_s=epsilon_s)
