"""Adapters: a k-diffusion-style function and a diffusers-style scheduler, written here in plain
NumPy after those libraries' conventions (the real libraries are exercised by the validation
issue), are verified and reproduce the reference samplers' exact affine maps."""

import numpy as np

from diffusion_oracle import from_diffusers, from_k_diffusion, verify
from diffusion_oracle.reference import DiscreteSchedule
from diffusion_oracle.reference.samplers import DDIM, Euler

STEPS = (16, 32, 64, 128, 256)


def sample_euler(model, x, sigmas):
    """k-diffusion's sample_euler (Karras et al. Algorithm 1 without correction), NumPy."""
    s_in = np.ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def sample_euler_ancestral(model, x, sigmas, noise_sampler=None, eta=1.0):
    """k-diffusion's sample_euler_ancestral with its get_ancestral_step, NumPy."""
    s_in = np.ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        s, sn = sigmas[i], sigmas[i + 1]
        sigma_up = min(sn, eta * (sn**2 * (s**2 - sn**2) / s**2) ** 0.5)
        sigma_down = (sn**2 - sigma_up**2) ** 0.5
        x = x + (x - denoised) / s * (sigma_down - s)
        if sn > 0:
            x = x + noise_sampler(s, sn) * sigma_up
    return x


class MiniDDIMScheduler:
    """A diffusers-style DDIM scheduler (leading spacing, set_alpha_to_one=True), NumPy."""

    def __init__(self, betas):
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.T = len(betas)
        self.init_noise_sigma = 1.0

    def set_timesteps(self, n):
        self.n = n
        self.timesteps = (np.arange(0, n) * (self.T // n))[::-1].copy()

    def scale_model_input(self, sample, t):
        return sample

    def step(self, eps, t, sample):
        prev = t - self.T // self.n
        ab = self.alphas_cumprod[t]
        ab_prev = self.alphas_cumprod[prev] if prev >= 0 else 1.0
        x0 = (sample - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        return (np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps,)


def test_k_diffusion_style_euler_matches_the_reference():
    sampler = from_k_diffusion(sample_euler, order=1)
    r = verify(sampler, "ring8", steps=STEPS, reference=Euler(), tiers=(1, 2), progress=False)
    assert r.passed, str(r)


def test_k_diffusion_style_ancestral_is_ddim_eta_one():
    """Euler-ancestral (eta = 1) in the sigma frame is DDPM posterior sampling = DDIM(eta=1):
    identical affine maps, noise included (research note, anchors (c) 5)."""
    sampler = from_k_diffusion(sample_euler_ancestral, order=1, stochastic=True)
    r = verify(sampler, "ring8", steps=STEPS, reference=DDIM(1.0), tiers=(1,), progress=False)
    assert r.passed, str(r)


def test_diffusers_style_ddim_matches_the_reference():
    sch = DiscreteSchedule.linear(1000)
    sampler = from_diffusers(lambda: MiniDDIMScheduler(sch.betas), sch, order=1)
    g = sampler.make_grid(sch, 10)
    assert np.allclose(g.t[:-1], (np.arange(0, 10)[::-1] * 100 + 1) / 1000) and g.final_zero
    r = verify(
        sampler,
        "ring8",
        sch,
        steps=(10, 20, 50, 100, 250),
        reference=DDIM(0.0),
        tiers=(1,),
        progress=False,
    )
    assert r.passed, str(r)
    assert [v.name for v in r.verdicts] == [
        "runs",
        "final step (landing)",
        "model calls",
        "prior (terminal SNR)",
        "order (tier 1, exact)",
        "same-grid reference",
    ]
