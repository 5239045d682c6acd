"""VPCosine's t(lambda) far in the data-end tail (lambda > 709.8), where sigmoid(-lambda)
underflows: it returned t = 0 (lambda = inf) although t ~ e^(-lambda/2) is a normal double
there. Oracle: with s = 0, lambda = 2 log cot(pi t / 2), so
t = (2/pi) arcsin(sigmoid(-lambda)^(1/2)), in 50-digit mpmath."""

import mpmath as mp
import pytest

from diffusion_oracle.reference import VPCosine


@pytest.mark.parametrize("lam", [30.0, 700.0, 710.0, 745.0, 800.0, 1400.0])
def test_cosine_inverse_in_the_data_end_tail(lam):
    with mp.workdps(50):
        ref = 2 / mp.pi * mp.asin(mp.sqrt(1 / (1 + mp.exp(mp.mpf(lam)))))
        got = VPCosine(0.0).t_from_log_snr(lam)
        assert got > 0
        assert abs(mp.mpf(got) - ref) / ref < 1e-15
