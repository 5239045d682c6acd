"""The karras grid against Karras et al. 2022 eq. 5 in 50-digit mpmath (issue 22, mutation
testing): tests/test_grids.py compared make_grid's karras nodes with karras_sigmas, both package
code; here the reference is the equation itself,

    sigma_i = (smax^(1/rho) + i/n (smin^(1/rho) - smax^(1/rho)))^rho,   i = 0..n,

with smax, smin the schedule's sigma_EDM = sigma/alpha at t_start, t_end. Tolerance: the grid
forms its nodes in log-SNR, inverts them with t_from_log_snr (1e-13 relative in t, the
tolerance table's "inverse") and the test reads sigma_EDM back from t, so the relative error in
sigma_EDM is <= 1e-13 (1 + |t d log sigma_EDM/dt|) plus a few ulps of the log-space formula.
"""

import mpmath as mp
import numpy as np
import pytest

from diffusion_oracle.reference.grids import make_grid
from diffusion_oracle.reference.schedules import EDM, VPCosine, VPLinear


def _eq5(smax, smin, rho, n):
    with mp.workdps(50):
        hi, lo = mp.mpf(smax) ** (1 / mp.mpf(rho)), mp.mpf(smin) ** (1 / mp.mpf(rho))
        return np.array([float((hi + mp.mpf(i) / n * (lo - hi)) ** rho) for i in range(n + 1)])


@pytest.mark.parametrize("schedule", [EDM(), VPLinear(), VPCosine()], ids=repr)
@pytest.mark.parametrize("rho", [7.0, 3.0, 1.0])
@pytest.mark.parametrize("n", [1, 4, 17])
def test_karras_grid_is_eq5(schedule, rho, n):
    t0 = min(schedule.t_max, 0.99)
    g = make_grid(schedule, n, "karras", t_start=t0, t_end=0.01, final_zero=False, rho=rho)
    s = np.asarray(g.sigma / g.alpha)
    want = _eq5(s[0], s[-1], rho, n)
    t = np.asarray(g.t)
    dlog = np.abs(schedule.d_sigma(t) / schedule.sigma(t) - schedule.d_alpha(t) / schedule.alpha(t))
    allowed = 1e-13 * (1.0 + np.abs(t) * dlog) + 1e-14
    assert (np.abs(s / want - 1.0) <= allowed).all(), np.abs(s / want - 1.0) / allowed
    assert g.family == f"karras(rho={rho:g})"
