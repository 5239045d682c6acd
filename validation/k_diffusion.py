"""Drive k-diffusion's samplers and sigma schedules with the exact model (issue 6).

k-diffusion's package ``__init__`` imports its training stack (torchvision, kornia, wandb,
clean-fid, ...), none of which the samplers need. :func:`load_sampling` imports
``k_diffusion.sampling`` normally when that works and otherwise loads the installed
``sampling.py`` file itself under a private package name, with a one-function ``utils`` shim
(``append_dims``, the only helper it uses); its own dependencies are torch, scipy, torchsde and
torchdiffeq. The code that runs is the installed release's, unmodified.

Install: ``pip install torchsde torchdiffeq`` and ``pip install --no-deps k-diffusion``
(the ``make`` set-up does this).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np

__all__ = ["check_sampler", "check_schedules", "conformance_report", "load_sampling", "version"]

_SHIM = "_diffusion_oracle_k_diffusion"


def version() -> str:
    """The installed k-diffusion version (ImportError when it is missing)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("k-diffusion")
    except PackageNotFoundError as exc:
        raise ImportError("k-diffusion is not installed") from exc


def load_sampling():
    """The module ``k_diffusion.sampling`` of the installed release (see the module doc)."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError:
        pass
    if f"{_SHIM}.sampling" in sys.modules:
        return sys.modules[f"{_SHIM}.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    root = Path(list(spec.submodule_search_locations)[0])
    pkg = types.ModuleType(_SHIM)
    pkg.__path__ = [str(root)]
    utils = types.ModuleType(f"{_SHIM}.utils")

    def append_dims(x, target_dims):
        """Appends dimensions to the end of a tensor until it has target_dims dimensions."""
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    sys.modules[_SHIM] = pkg
    sys.modules[f"{_SHIM}.utils"] = utils
    pkg.utils = utils
    file_spec = importlib.util.spec_from_file_location(f"{_SHIM}.sampling", root / "sampling.py")
    mod = importlib.util.module_from_spec(file_spec)
    sys.modules[f"{_SHIM}.sampling"] = mod
    file_spec.loader.exec_module(mod)
    return mod


def conformance_cases():
    """(name, k-diffusion function name, keyword arguments, reference sampler factory or None,
    stochastic) for the samplers checked by ``diffusion-oracle conformance k-diffusion``."""
    from diffusion_oracle import LMS, DPMSolverPP2M, DPMSolverPP3M, Euler, Heun

    return (
        ("sample_euler", "sample_euler", {}, Euler, False),
        ("sample_heun", "sample_heun", {}, Heun, False),
        ("sample_dpmpp_2m", "sample_dpmpp_2m", {}, DPMSolverPP2M, False),
        ("sample_dpmpp_3m_sde(eta=0)", "sample_dpmpp_3m_sde", {"eta": 0.0},
         lambda: DPMSolverPP3M("published", warmup="k-diffusion"), False),
        ("sample_lms(order=4)", "sample_lms", {"order": 4}, lambda: LMS(4), False),
        ("sample_euler_ancestral", "sample_euler_ancestral", {}, None, True),
        ("sample_dpm_2", "sample_dpm_2", {}, None, False),
        ("sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}, None, True),
    )  # fmt: skip


def _start(model, grid, n, seed):
    g = np.random.default_rng(seed)
    a, s = grid.alpha[0], grid.sigma[0]
    return a * model.target.sample(n, rng=g) + s * g.standard_normal((n, model.d))


def check_sampler(name, fn_name, kwargs, reference, stochastic, *, target="ring8", n=128, seed=0):
    """Checks of one k-diffusion sampler driven through :func:`diffusion_oracle.from_k_diffusion`
    (float64 torch, the harness's noise through ``noise_sampler``) on Karras grids of VP-linear:
    finite output for 2..12 steps and 25; with a reference counterpart, agreement on the same
    grid from the same start and noise within 1e-9 of the sample scale (both run in float64)."""
    from diffusion_oracle.adapters import from_k_diffusion
    from diffusion_oracle.reference import ExactModel, VPLinear, get_target
    from diffusion_oracle.reference.grids import make_grid

    from .conformance import CheckResult

    # the sampler's own keyword arguments are bound first: some (sample_lms's order) share a
    # name with the adapter's
    fn = functools.partial(getattr(load_sampling(), fn_name), **kwargs)
    sampler = from_k_diffusion(
        fn, framework="torch", name=name, stochastic=stochastic, disable=True
    )
    tgt = get_target(target) if isinstance(target, str) else target
    sch = VPLinear()
    model = ExactModel(tgt, sch)
    out = []
    bad, detail = [], ""
    for N in list(range(2, 13)) + [25]:
        grid = make_grid(sch, N, "karras")
        try:
            y = sampler(model, _start(model, grid, 4, seed), grid, rng=seed)
        except Exception as exc:  # noqa: BLE001 - any failure is a finding
            bad.append(N)
            detail = f"N={N}: {type(exc).__name__}: {exc}"[:160]
            continue
        if not np.isfinite(y).all():
            bad.append(N)
            detail = f"N={N}: non-finite output"
    out.append(
        CheckResult("finite (N = 2..12, 25)", not bad, float(len(bad)), detail or "12 step counts")
    )
    if reference is None:
        out.append(CheckResult("same grid as the reference", None, None, "no counterpart"))
        return out
    # the algorithm on grids ending at sigma_min > 0 (the verdict), and with the last step into
    # sigma = 0, where conventions differ (the reference jumps to D; a multistep method may
    # extrapolate its polynomial to sigma = 0): reported, not judged
    worst = {False: 0.0, True: 0.0}
    for final_zero in (False, True):
        for N in (10, 25):
            grid = make_grid(sch, N, "karras", final_zero=final_zero)
            x = _start(model, grid, n, seed)
            got = sampler(model, x, grid, rng=np.random.default_rng(seed + 1))
            want = reference()(model, x, grid, rng=np.random.default_rng(seed + 1))
            dev = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
            worst[final_zero] = max(worst[final_zero], dev)
    out.append(
        CheckResult(
            f"same grid as the reference ({reference()!r})",
            worst[False] <= 1e-9,
            worst[False],
            f"max diff/scale {worst[False]:.2e} (tolerance 1e-9: both float64); with the last "
            f"step into sigma = 0: {worst[True]:.1e}",
        )
    )
    return out


def check_schedules():
    """k-diffusion's sigma schedules against the reference: ``get_sigmas_karras`` vs
    ``karras_sigmas`` (Karras et al. 2022, eq. 5), ``get_sigmas_exponential`` vs the geometric
    sequence, ``get_sigmas_vp`` vs the VP-linear sigma_EDM at uniform t (Song et al. 2021,
    eq. 33); each must end with 0 appended. Relative error; k-diffusion builds them in float32
    (``torch.linspace`` default dtype), so each tolerance is float32 rounding times the
    condition of the formula."""
    import torch

    from diffusion_oracle.reference import VPLinear, karras_sigmas

    from .conformance import CheckResult

    ks = load_sampling()
    out = []
    n, lo, hi = 20, 0.002, 80.0
    cases = [
        ("get_sigmas_karras", ks.get_sigmas_karras(n, lo, hi, rho=7.0),
         karras_sigmas(n, lo, hi, 7.0)),
        ("get_sigmas_exponential", ks.get_sigmas_exponential(n, lo, hi),
         np.exp(np.linspace(np.log(hi), np.log(lo), n))),
    ]  # fmt: skip
    vp = VPLinear()
    t = np.linspace(1.0, 1e-3, n)
    sig_vp = ks.get_sigmas_vp(n, beta_d=vp.beta_max - vp.beta_min, beta_min=vp.beta_min, eps_s=1e-3)
    cases.append(("get_sigmas_vp", sig_vp, np.asarray(vp.sigma_edm(t))))
    eps32 = 2.0**-24
    # float32 tolerances from the condition of each formula: (a + t b)^rho amplifies the base's
    # rounding by rho; exp(linspace(log)) by |log sigma|; the VP form, written with expm1, is
    # well conditioned (16 ulps of float32 with the rounding of linspace)
    tols = {
        "get_sigmas_karras": 4 * 7.0 * eps32,
        "get_sigmas_exponential": 4 * math.log(hi / lo) * eps32,
        "get_sigmas_vp": 16 * eps32,
    }
    for name, got, want in cases:
        got = got.to(torch.float64).numpy() if hasattr(got, "numpy") else np.asarray(got)
        want = np.asarray(want, dtype=np.float64)
        want = want[:-1] if want[-1] == 0 else want
        ok_zero = got[-1] == 0.0
        err = float(np.max(np.abs(got[:-1] - want) / want))
        tol = tols[name]
        detail = (
            f"max relative error {err:.1e} (float32 tolerance {tol:.1e}), ends with 0: {ok_zero}"
        )
        out.append(CheckResult(name, err <= tol and ok_zero, err, detail))
    return out


def conformance_report(target="ring8", *, progress: bool = True):
    """Markdown report of the k-diffusion checks: one row per sampler, then the schedules."""
    rows = []
    cases = conformance_cases()
    it = cases
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(cases, desc="k-diffusion conformance", unit="sampler")
    for name, fn_name, kwargs, ref, stoch in it:
        rows.append((name, check_sampler(name, fn_name, kwargs, ref, stoch, target=target)))
    sched = check_schedules()
    lines = [
        f"# k-diffusion {version()} conformance (target {target}, exact model, float64)",
        "",
        "| sampler | finite | same grid as the reference | verdict |",
        "|---|---|---|---|",
    ]
    for name, res in rows:
        cells = [
            "n/a" if c.passed is None else ("PASS" if c.passed else "FAIL") + f": {c.detail}"
            for c in res
        ]
        verdict = "FAIL" if any(c.passed is False for c in res) else "PASS"
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {verdict} |")
    lines += ["", "| sigma schedule | check | verdict |", "|---|---|---|"]
    for c in sched:
        lines.append(f"| `{c.name}` | {c.detail} | {'PASS' if c.passed else 'FAIL'} |")
    return "\n".join(lines) + "\n", rows + [("schedules", sched)]
