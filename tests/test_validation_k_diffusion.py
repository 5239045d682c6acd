"""validation.k_diffusion (issue 6): the installed k-diffusion release's samplers, loaded without
its training stack, agree with the reference samplers on the same grid in float64; its sigma
schedules against the reference. Runs where k-diffusion, torchsde and torchdiffeq are installed
(CI installs them)."""

import re

import pytest

pytest.importorskip("torchsde", reason="the validation extra is not installed")
pytest.importorskip("torchdiffeq", reason="the validation extra is not installed")
kd = pytest.importorskip("diffusion_oracle.validation.k_diffusion")
try:
    SAMPLING = kd.load_sampling()
except ImportError:  # pragma: no cover - k-diffusion itself missing
    pytest.skip("k-diffusion is not installed", allow_module_level=True)


@pytest.mark.parametrize(
    "case", [c for c in kd.conformance_cases() if c[3] is not None], ids=lambda c: c[0]
)
def test_samplers_equal_the_reference_on_the_same_grid(case):
    """Euler, Heun, DPM++(2M), DPM++(3M) SDE at eta = 0 (= the published third-order update
    with k-diffusion's warm-up) and LMS-4 agree with the reference to float64 rounding."""
    res = kd.check_sampler(*case, n=64)
    assert all(c.passed for c in res), res
    same = res[1]
    assert same.value < 1e-12


def test_lms_differs_only_in_the_step_into_sigma_zero():
    """k-diffusion's LMS extrapolates its polynomial into sigma = 0 where the reference jumps to
    D(x, sigma_min): 1e-14 on grids ending at sigma_min, 5e-3 with the final step (a convention,
    reported but not judged)."""
    case = next(c for c in kd.conformance_cases() if c[0].startswith("sample_lms"))
    same = kd.check_sampler(*case, n=64)[1]
    final = float(same.detail.rsplit(":", 1)[1])
    assert same.value < 1e-12 and final > 1e-4


def test_sigma_schedules():
    res = {c.name: c for c in kd.check_schedules()}
    assert res["get_sigmas_karras"].passed and res["get_sigmas_exponential"].passed
    # get_sigmas_vp computes exp(B) - 1 in float32, not expm1: 2e-4 relative at eps_s = 1e-3
    assert res["get_sigmas_vp"].passed is False and res["get_sigmas_vp"].value > 1e-5


def test_the_third_order_update_is_second_order():
    """finding 1: k-diffusion's dpmpp_3m_sde at eta = 0 measures about 2.4 on tier 2 (ring8,
    Karras grids of VP-linear, 16..256 steps), not 3."""
    import functools

    from diffusion_oracle import VPLinear, from_k_diffusion, verify

    s = from_k_diffusion(
        functools.partial(SAMPLING.sample_dpmpp_3m_sde, eta=0.0), framework="torch", order=3,
        disable=True,
    )  # fmt: skip
    rep = verify(s, "ring8", VPLinear(), steps=[16, 32, 64, 128, 256], tiers=(2,),
                 grid="karras", progress=False)  # fmt: skip
    assert 1.8 < rep.order_tier2.slope < 2.8 and not rep.passed


def test_cli_conformance_k_diffusion(tmp_path, capsys):
    from diffusion_oracle.cli import main

    code = main(["conformance", "k-diffusion", "--checks", "1,2,6", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1  # get_sigmas_vp fails its float32 tolerance
    assert re.search(r"\| `sample_heun` +\| PASS", out) and "get_sigmas_vp" in out
    assert (tmp_path / "conformance_k-diffusion.md").exists()
    import json

    rows = json.loads((tmp_path / "conformance_k-diffusion.json").read_text())
    assert any(r["case"] == "sample_heun" for r in rows)


def test_model_wrappers_against_the_exact_denoiser(monkeypatch):
    """external.py's wrappers around the exact network give the exact denoiser (float64: 1e-13);
    OpenAIDenoiser casts alphas_cumprod to float32 before sigma = sqrt((1 - a)/a), losing four
    digits at the smallest levels (finding 10); a planted sign error in c_out fails."""
    res = {c.name: c for c in kd.check_wrappers()}
    for name in ("DiscreteEpsDDPMDenoiser", "DiscreteVDDPMDenoiser", "CompVisDenoiser",
                 "CompVisVDenoiser", "VDenoiser"):  # fmt: skip
        c = res[f"wrapper {name}"]
        assert c.passed is True and c.value < 1e-12, c.detail
    oai = res["wrapper OpenAIDenoiser(has_learned_sigmas=True)"]
    assert oai.passed is False and 1e-5 < oai.value < 1e-3, oai.detail
    assert res["CompVisDenoiser + samplers on get_sigmas(28) vs the reference"].value < 1e-12
    ext = kd.load_module("external")
    orig = ext.DiscreteEpsDDPMDenoiser.get_scalings
    monkeypatch.setattr(
        ext.DiscreteEpsDDPMDenoiser, "get_scalings",
        lambda self, sigma: (-orig(self, sigma)[0], orig(self, sigma)[1]),
    )  # fmt: skip
    res = {c.name: c for c in kd.check_wrappers()}
    assert res["wrapper DiscreteEpsDDPMDenoiser"].passed is False


def test_sampler_law_checks_find_the_published_3m_and_lms_final_step():
    """Checks 4 and 5 on k-diffusion: DPM++(3M) at eta = 0 measures about second order on the
    exact Gaussian (finding 1; declared 3: fails), and LMS-4's final step into sigma = 0 with
    its polynomial widens std-0.025 modes by ~8% (finding 6), which the narrow-mode test sees."""
    cases = {c[0]: c for c in kd.conformance_cases()}
    res = kd.check_sampler_law(*cases["sample_dpmpp_3m_sde(eta=0)"])
    assert res[0].passed is False and 1.5 < res[0].value < 2.3, res[0].detail
    res = kd.check_sampler_law(*cases["sample_lms(order=4)"])
    assert res[0].passed is True, res[0].detail
    assert res[1].passed is False and "mode width / ideal 1.0" in res[1].detail, res[1].detail


def test_as_shipped_names_the_one_step_crash_of_the_sde_samplers():
    """k-diffusion 0.1.1.post1's DPM++ 2M / 3M SDE assign h only when sigma_next > 0 and then
    read it (h_last = h): one step, sigmas [sigma_max, 0], raises UnboundLocalError (shown here
    by calling the sampler directly with a trivial denoiser, the independent evidence); the
    as-shipped check names N = 1 and the open upstream issue; Euler is clean."""
    import torch

    from diffusion_oracle.validation.k_diffusion import check_wrapper_shipped, load_sampling

    ks = load_sampling()
    x = torch.zeros(2, 2)
    for fn in (ks.sample_dpmpp_2m_sde, ks.sample_dpmpp_3m_sde):
        with pytest.raises(UnboundLocalError):
            fn(lambda x, s, **kw: x * 0, x, torch.tensor([10.0, 0.0]), disable=True)
    res = check_wrapper_shipped("sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde", {},
                                steps=(1, 2, 3))  # fmt: skip
    assert res.passed is False and "raises at N = [1]," in res.detail
    assert "UnboundLocalError" in res.detail and "crowsonkb/k-diffusion#72" in res.detail
    ok = check_wrapper_shipped("sample_euler", "sample_euler", {}, steps=(1, 2, 3, 50))
    assert ok.passed is True, ok.detail


def test_dpmpp_2m_negative_control_passes_every_check():
    """k-diffusion's sample_dpmpp_2m (a correct sampler, issue 21's negative control): same
    grid, finiteness, order, narrow modes and as shipped all PASS."""
    from diffusion_oracle.validation.k_diffusion import _sampler_row, conformance_cases

    i = next(k for k, c in enumerate(conformance_cases()) if c[0] == "sample_dpmpp_2m")
    _, res = _sampler_row(i, "ring8", True, True)
    assert len(res) == 5 and all(c.passed is True for c in res), [c.detail for c in res]
