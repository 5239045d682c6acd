"""DPM-Solver++(2M)'s step ratio on a grid whose log-SNR steps vary (issue 22, mutation testing).

On a uniform log-SNR grid r_i = h_{i-1}/h_i = 1, so r and 1/r (or a dropped r) give the same
sampler: the order tests there cannot see a step-ratio bug, and only a k-diffusion comparison
did. Here the sampler runs on hand-picked nodes with step ratios from 0.25 to 5 and is compared
with an independent implementation of the update in the form diffusers writes it
(``multistep_dpm_solver_second_order_update``, Lu et al. 2022b, Algorithm 2):

    h = lambda_t - lambda_s0,  r0 = h_0 / h  with h_0 = lambda_s0 - lambda_s1,
    D0 = m0,  D1 = (m0 - m1) / r0,
    x_t = (sigma_t / sigma_s0) x - alpha_t (e^{-h} - 1) D0 - (1/2) alpha_t (e^{-h} - 1) D1,

with lambda = log(alpha / sigma) and m = E[x0 | x] straight from the target's closed form.

Tolerance: both compute the same O(1) quantities with a handful of correctly rounded operations
per step over 6 steps, each step's error damped by sigma_t/sigma_s < 1: <= ~1e-14 of the state's
scale. 1e-12 leaves 100x; a step-ratio error moves the output by ~1e-2 here.
"""

import math

import numpy as np
import pytest

from diffusion_oracle.reference import ExactModel, VPLinear, ring8
from diffusion_oracle.reference.grids import Grid
from diffusion_oracle.reference.samplers import DPMSolverPP2M

T_NODES = np.array([1.0, 0.8, 0.75, 0.5, 0.45, 0.2, 0.15])


def _oracle(target, schedule, x, t):
    a = [float(schedule.alpha(v)) for v in t]
    s = [float(schedule.sigma(v)) for v in t]
    lam = [math.log(ai / si) for ai, si in zip(a, s)]
    m1 = h0 = None
    for i in range(len(t) - 1):
        m0 = target.denoise(x, a[i], s[i])
        h = lam[i + 1] - lam[i]
        em1 = math.expm1(-h)  # e^{-h} - 1, correctly rounded for small h
        x_new = (s[i + 1] / s[i]) * x - a[i + 1] * em1 * m0
        if m1 is not None:
            D1 = (m0 - m1) / (h0 / h)
            x_new = x_new - 0.5 * a[i + 1] * em1 * D1
        x, m1, h0 = x_new, m0, h
    return x


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_dpmpp_2m_on_a_grid_with_unequal_steps(prediction):
    target, schedule = ring8(), VPLinear()
    grid = Grid(schedule, T_NODES, final_zero=False)
    h = np.diff(grid.half_log_snr)
    ratios = h[:-1] / h[1:]
    assert ratios.min() < 0.5 and ratios.max() > 2  # the step ratio matters on this grid
    x = np.random.default_rng(0).standard_normal((50, 2))
    got = DPMSolverPP2M()(ExactModel(target, schedule, prediction=prediction), x, grid, rng=0)
    want = _oracle(target, schedule, x, T_NODES)
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 1e-12 * scale
    # the first step alone is first order (D = x0): two nodes
    g2 = Grid(schedule, T_NODES[:2], final_zero=False)
    got2 = DPMSolverPP2M()(ExactModel(target, schedule, prediction=prediction), x, g2, rng=0)
    assert np.abs(got2 - _oracle(target, schedule, x, T_NODES[:2])).max() <= 1e-12 * scale
