"""The verification harness: deliberately broken samplers fail (each a test), samplers that
raise / return NaN / the wrong shape get a clear verdict, the statistical tests hold their
declared false-alarm rate over many seeds, and the CLI's exit codes."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from diffusion_oracle.harness import verify
from diffusion_oracle.reference import get_target
from diffusion_oracle.reference.samplers import DDIM, DDPM, Heun, _predict
from diffusion_oracle.reference.stats import (
    mmd_null,
    mmd_test,
    nll_test,
    projected_ks_test,
    responsibility_test,
)

STEPS = (16, 32, 64, 128, 256)


def _failed(report):
    return [v.name for v in report.verdicts if not v.passed]


# ------------------------------------------------------------------ broken samplers
class MissingFinalJump(DDIM):
    """Stops at t_{N-1}: returns the noisy state instead of E[x0 | x]."""

    def __init__(self):
        super().__init__()
        self.name = "broken: missing final denoising step"

    def _jump(self, model, x, grid, i):
        return x


class EtaIgnored(DDIM):
    """Claims eta = 1 but never adds the noise (and so never draws it)."""

    def __init__(self):
        super().__init__(1.0)
        self.name = "broken: eta ignored"

    def _run(self, model, x, grid, rng):
        return DDIM(0.0)._run(model, x, grid, rng)


class Float16Schedule(DDIM):
    """Stores the schedule's alpha and sigma in float16."""

    def __init__(self):
        super().__init__()
        self.name = "broken: schedule in float16"

    def _run(self, model, x, grid, rng):
        import copy

        g = copy.copy(grid)
        for attr in ("alpha", "sigma"):
            setattr(g, attr, getattr(grid, attr).astype(np.float16).astype(np.float64))
        return super()._run(model, x, g, rng)


class X0AsEps(DDIM):
    """Uses the model's output as eps whatever it predicts (here x0)."""

    def __init__(self):
        super().__init__()
        self.name = "broken: x0 used where eps is expected"

    def _run(self, model, x, grid, rng):
        for i in range(grid.steps):
            eps = model(x, grid.t[i])  # raw output taken to be eps
            x0 = (x - grid.sigma[i] * eps) / grid.alpha[i]
            if grid.sigma[i + 1] == 0:
                return x0
            x = grid.alpha[i + 1] * x0 + grid.sigma[i + 1] * eps
        return x


class OffByOneTimestep(DDIM):
    """Evaluates the model one step of a T = 1000 schedule early (t - 1/1000), the classic
    discrete-index slip."""

    def __init__(self):
        super().__init__()
        self.name = "broken: off-by-one timestep"

    def _run(self, model, x, grid, rng):
        class Shifted:
            prediction = getattr(model, "prediction", "eps")

            def __call__(self, x, t):
                return model(x, max(t - 1e-3, 1e-5))

        return super()._run(Shifted(), x, grid, rng)


class WrongStepVariance(DDPM):
    """Uses the posterior variance of the next step instead of this one."""

    def __init__(self):
        super().__init__()
        self.name = "broken: variance of the wrong step"

    def _run(self, model, x, grid, rng):
        import math

        for i in range(grid.steps):
            if grid.sigma[i + 1] == 0:
                return self._jump(model, x, grid, i)
            x0, _ = _predict(model, x, grid, i)
            frac = -math.expm1(grid.log_snr[i] - grid.log_snr[i + 1])
            coef_x0 = math.exp(grid.log_alpha[i + 1]) * frac
            coef_xt = math.exp(
                grid.log_alpha[i]
                - grid.log_alpha[i + 1]
                + 2 * (grid.log_sigma[i + 1] - grid.log_sigma[i])
            )
            j = min(i + 1, grid.steps - 2)  # next step's variance
            frac_j = -math.expm1(grid.log_snr[j] - grid.log_snr[j + 1])
            var = math.exp(2 * grid.log_sigma[j + 1]) * frac_j
            x = coef_x0 * x0 + coef_xt * x + math.sqrt(var) * rng.standard_normal(x.shape)
        return x


@pytest.mark.parametrize(
    "broken, reference",
    [
        (MissingFinalJump(), DDIM(0.0)),
        (EtaIgnored(), DDIM(1.0)),
        (Float16Schedule(), DDIM(0.0)),
        (OffByOneTimestep(), DDIM(0.0)),
        (WrongStepVariance(), DDPM("fixed_small")),
    ],
    ids=lambda v: getattr(v, "name", "none"),
)
def test_broken_samplers_fail(broken, reference):
    r = verify(broken, "ring8", steps=STEPS, reference=reference, tiers=(1, 2), progress=False)
    assert not r.passed, str(r)


def test_x0_used_as_eps_fails():
    r = verify(X0AsEps(), "ring8", steps=STEPS, prediction="x0", tiers=(1, 2), progress=False)
    assert not r.passed
    assert r.order_tier1 is None or r.order_tier1.slope < 0.8


def test_missing_final_jump_shows_as_an_error_floor():
    """Without a reference: where the last noise level is not negligible against the narrow
    modes (t_end = 0.01, sigma_EDM = 0.045 vs mode std 0.05) the skipped jump leaves a floor that
    the pathwise tier sees as a collapsed order and tier 3 as excess NLL."""
    r = verify(
        MissingFinalJump(),
        "ring8",
        steps=STEPS,
        t_end=0.01,
        tiers=(2, 3),
        tier3_steps=256,
        progress=False,
    )
    failed = _failed(r)
    assert "order (tier 2, pathwise)" in failed and "tier 3 NLL (two-sided)" in failed, str(r)


def test_broken_weights_fail_tier3():
    """A sampler with the right local dynamics but a mode dropped: only tier 3 sees it."""

    class DropsMode(Heun):
        name = "broken: drops a mode"

        def _run(self, model, x, grid, rng):
            out = super()._run(model, x, grid, rng)
            bad = (out[:, 0] > 0.9) & (np.abs(out[:, 1]) < 0.3)
            out[bad] = -out[bad]  # mass of mode 0 moved to mode 4
            return out

    r = verify(DropsMode(), "ring8", steps=(8, 16, 32), tiers=(3,), tier3_steps=64, progress=False)
    assert "tier 3 responsibilities" in _failed(r)


def test_correct_samplers_pass_with_a_same_grid_reference():
    r = verify(DDIM(0.0), "ring8", steps=STEPS, reference=DDIM(0.0), tiers=(1,), progress=False)
    assert r.passed, str(r)


# ------------------------------------------------------------------ clear verdicts
def _raises(model, x, grid, *, rng):
    raise RuntimeError("boom")


def _nan(model, x, grid, *, rng):
    return np.full_like(x, np.nan)


def _wrong_shape(model, x, grid, *, rng):
    return x[:, :1]


@pytest.mark.parametrize(
    "sampler, needle",
    [(_raises, "raised RuntimeError: boom"), (_nan, "non-finite"), (_wrong_shape, "shape")],
)
def test_misbehaving_samplers_get_a_clear_verdict(sampler, needle):
    r = verify(sampler, "ring8", steps=(4, 8), progress=False)
    assert not r.passed
    assert r.verdicts[0].name == "runs" and needle in r.verdicts[0].reason
    assert needle in str(r)


# ------------------------------------------------------------------ calibration
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ring8", "bimodal1d"])
def test_statistical_tests_hold_their_false_alarm_rate(name):
    """Exact samples, 150 seeds, tests at alpha = 0.05: each test's rejection count must stay
    below the binomial(150, 0.05) 99.9% quantile (16) -- a miscalibrated null (e.g. ignoring the
    null mean's own Monte Carlo error) would exceed it."""
    gm = get_target(name)
    n, reps, a = 800, 150, 0.05
    null = mmd_null(gm, 200, replicates=199, rng=99)
    rejections = {"resp": 0, "ks": 0, "nll": 0, "mmd": 0}
    for seed in range(reps):
        x = gm.sample(n, np.random.default_rng(1000 + seed))
        rejections["resp"] += not responsibility_test(
            gm, x, alpha=a, null_n=20_000, rng=seed
        ).passed
        rejections["ks"] += not projected_ks_test(gm, x, alpha=a, n_proj=4, rng=seed).passed
        rejections["nll"] += not nll_test(gm, x, alpha=a, null_n=20_000, rng=seed).passed
        rejections["mmd"] += not mmd_test(gm, x[:200], alpha=a, null=null).passed
    from scipy.stats import binom

    limit = binom.ppf(0.999, reps, a)
    assert all(v <= limit for v in rejections.values()), (rejections, limit)


# ------------------------------------------------------------------ CLI
def test_cli_verify_user_sampler_and_exit_codes(tmp_path):
    mod = tmp_path / "usersamplers.py"
    mod.write_text(
        textwrap.dedent("""
        import numpy as np
        from diffusion_oracle.reference.samplers import Heun
        good = Heun()
        def bad(model, x, grid, *, rng):
            return x * np.nan
    """)
    )
    exe = [sys.executable, "-m", "diffusion_oracle", "verify"]
    ok = subprocess.run(
        [
            *exe,
            "usersamplers:good",
            "--steps",
            "32,64,128,256",
            "--tier3-steps",
            "128",
            "--n-samples",
            "1000",
            "--out",
            str(tmp_path / "p"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verdict: PASS" in ok.stdout and (tmp_path / "p" / "convergence_heun.png").exists()
    bad = subprocess.run(
        [*exe, "usersamplers:bad", "--steps", "8,16"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "non-finite" in bad.stdout
    missing = subprocess.run([*exe, "nosuchmodule:f"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot import module" in missing.stderr
