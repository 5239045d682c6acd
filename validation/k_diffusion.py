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

__all__ = [
    "check_sampler",
    "check_schedules",
    "check_sampler_law",
    "check_wrappers",
    "conformance_report",
    "load_module",
    "load_sampling",
    "version",
]

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
    return load_module("sampling")


def load_module(name: str):
    """The module ``k_diffusion.<name>`` of the installed release: ``"sampling"`` or
    ``"external"`` (the model wrappers, which need only ``sampling`` and ``utils.append_dims``);
    through the shim package of the module doc when the package's ``__init__`` cannot import."""
    if name not in ("sampling", "external"):
        raise ValueError(f"name must be 'sampling' or 'external', got {name!r}")
    try:
        return importlib.import_module(f"k_diffusion.{name}")
    except ImportError:
        pass
    if f"{_SHIM}.{name}" in sys.modules:
        return sys.modules[f"{_SHIM}.{name}"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    root = Path(list(spec.submodule_search_locations)[0])
    if _SHIM not in sys.modules:
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
    pkg = sys.modules[_SHIM]
    if name == "external":
        load_module("sampling")  # external does ``from . import sampling, utils``
    file_spec = importlib.util.spec_from_file_location(f"{_SHIM}.{name}", root / f"{name}.py")
    mod = importlib.util.module_from_spec(file_spec)
    sys.modules[f"{_SHIM}.{name}"] = mod
    file_spec.loader.exec_module(mod)
    setattr(pkg, name, mod)
    return mod


# documented orders of the k-diffusion samplers (None: not documented); check 4
ORDERS = {
    "sample_euler": 1,
    "sample_heun": 2,
    "sample_dpmpp_2m": 2,
    "sample_dpmpp_3m_sde(eta=0)": 3,
    "sample_lms(order=4)": 4,
    "sample_euler_ancestral": 1,
    "sample_dpm_2": 2,
    "sample_dpmpp_2m_sde": None,
}


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


def check_sampler_law(name, fn_name, kwargs, reference, stochastic, *, target="ring8", seed=0):
    """Checks 4 and 5 of one k-diffusion sampler on Karras grids of VP-linear (sigma 0.002..80
    clipped to the schedule; they refine in lambda with fixed ends): the tier-1 order at
    N = 16..256 (exact Gaussian, ``verify``) against :data:`ORDERS`, window [p - 0.2, p + 0.35]
    or above; and the narrow-mode two-sample tests of
    :func:`~diffusion_oracle.validation.conformance.narrow_mode_check` at N = 2048 (order 1 or
    undeclared) or 512."""
    from diffusion_oracle import verify
    from diffusion_oracle.adapters import from_k_diffusion
    from diffusion_oracle.harness import ORDER_WINDOW
    from diffusion_oracle.reference import VPLinear, get_target
    from diffusion_oracle.reference.grids import make_grid

    from .conformance import CheckResult, narrow_mode_check

    fn = functools.partial(getattr(load_sampling(), fn_name), **kwargs)
    order = ORDERS.get(name)
    sampler = from_k_diffusion(
        fn, framework="torch", name=name, stochastic=stochastic, order=order, disable=True
    )
    tgt = get_target(target) if isinstance(target, str) else target
    sch = VPLinear()
    steps = [16, 32, 64, 128, 256]
    rep = verify(sampler, tgt, sch, steps, grid="karras", tiers=(1,), progress=False)
    w2 = [r.w2 for r in rep.rows]
    fit = rep.order_tier1
    title = "order (tier 1, exact Gaussian)"
    if fit is None or any(v is None for v in w2):
        errs = [r.error for r in rep.rows if r.error]
        out = [CheckResult(title, None, None, (errs[0] if errs else "no fit")[:160])]
    else:
        ev = (
            f"W2 {w2[0]:.1e} .. {w2[-1]:.1e} at N = 16..256 (Karras); measured {fit.slope:.2f} "
            f"(local {', '.join(f'{v:.2f}' for v in fit.local)})"
        )
        data = {"steps": steps, "w2": w2, "declared": order}
        if order is None:
            out = [CheckResult(title, None, fit.slope, ev + "; no documented order", data)]
        else:
            lo, hi = order + ORDER_WINDOW[0], order + ORDER_WINDOW[1]
            ok = fit.slope >= lo
            ev += f", declared {order} (window [{lo:.2f}, {hi:.2f}])"
            out = [CheckResult(title, ok, fit.slope, ev, data)]
    N = 2048 if (order or 1) < 2 else 512
    grid = make_grid(sch, N, "karras")
    ref = reference() if reference is not None else None
    out.append(narrow_mode_check(sampler, sch, grid, ref, repr(ref) if ref else None, seed=seed))
    return out


def conformance_report(target="ring8", *, progress: bool = True, checks=(1, 2, 3, 4, 5, 6, 7)):
    """Markdown report of the k-diffusion checks: one row per sampler (finiteness, same grid as
    the reference, and with checks 4/5 the order and narrow-mode statistics), then the model
    wrappers and the sigma schedules."""
    rows = []
    cases = conformance_cases()
    it = cases
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(cases, desc="k-diffusion conformance", unit="sampler")
    law = bool(set(checks) & {4, 5})
    for name, fn_name, kwargs, ref, stoch in it:
        res = check_sampler(name, fn_name, kwargs, ref, stoch, target=target)
        if law:
            res += check_sampler_law(name, fn_name, kwargs, ref, stoch, target=target)
        rows.append((name, res))
    sched = check_schedules()
    wraps = check_wrappers(target)
    head = ["finite", "same grid as the reference"] + (
        ["order (tier 1)", "tier 3 on narrow modes"] if law else []
    )
    lines = [
        f"# k-diffusion {version()} conformance (target {target}, exact model, float64)",
        "",
        "| sampler | " + " | ".join(head) + " | verdict |",
        "|---|" + "---|" * (len(head) + 1),
    ]

    def cell(c):
        if c.passed is None:
            return f"n/a ({c.detail})" if c.value is not None else "n/a"
        return ("PASS" if c.passed else "FAIL") + f": {c.detail}"

    for name, res in rows:
        verdict = "FAIL" if any(c.passed is False for c in res) else "PASS"
        lines.append(f"| `{name}` | " + " | ".join(cell(c) for c in res) + f" | {verdict} |")
    lines += ["", "| model wrapper (external.py) | check | verdict |", "|---|---|---|"]
    for c in wraps:
        v = "n/a" if c.passed is None else ("PASS" if c.passed else "FAIL")
        lines.append(f"| `{c.name}` | {c.detail} | {v} |")
    lines += ["", "| sigma schedule | check | verdict |", "|---|---|---|"]
    for c in sched:
        lines.append(f"| `{c.name}` | {c.detail} | {'PASS' if c.passed else 'FAIL'} |")
    return "\n".join(lines) + "\n", rows + [("wrappers", wraps), ("schedules", sched)]


# ---------------------------------------------------------------------------- model wrappers
# float64 wrappers: the sigma -> t -> sigma round trip (a log, a linear interpolation weight, an
# exp) costs ~10 ulps of log sigma, and the denoiser of narrow modes (std 0.05) amplifies a
# relative sigma error by |d D / d log sigma| ~ |x - mu|^2 / std^2 <~ 10^3 of the data scale:
# 1e-12; 1e-9 leaves a margin for the float32 interpolation index that get_sigmas uses
WRAPPER_RTOL_F64 = 1e-9
# wrappers that hold the noise levels in float32 (OpenAIDenoiser casts alphas_cumprod): a level
# is off by ~2^-24 relative, amplified as above by up to ~10^3
WRAPPER_RTOL_F32 = 1e3 * 2.0**-24
# the levels sigma_k = sqrt((1 - alpha_bar_k) / alpha_bar_k) against the reference's: in float64
# from float64 alpha_bar the subtraction has condition alpha_bar / (2 (1 - alpha_bar)) ~ 5e3 at
# the first level of linear(1000): 5e3 x 2^-53 = 5.6e-13, so 1e-12; in float32 the best a
# wrapper can hold is the float64 value rounded once (plus the interpolation): 16 ulps
LEVELS_RTOL = {"float64": 1e-12, "float32": 16 * 2.0**-24}


class _DiscreteLevels:
    """A network's own discrete noise levels (float64, from the reference schedule): level k
    (k = 0..T-1) is sigma_EDM at the reference node n = k + 1. Between levels the time t is
    read with k-diffusion's documented convention (log sigma linear in t), so that the exact
    inner model answers the question the wrapper asks: the wrapper's t names that sigma."""

    def __init__(self, schedule):
        n = np.arange(1, schedule.T + 1)
        self.log_sigmas = 0.5 * -np.asarray(schedule.log_snr_at(n), dtype=np.float64)

    def sigma(self, t):
        t = np.asarray(t, dtype=np.float64)
        lo = np.clip(np.floor(t).astype(np.int64), 0, len(self.log_sigmas) - 1)
        hi = np.clip(lo + 1, 0, len(self.log_sigmas) - 1)
        w = t - lo
        return np.exp((1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi])


class _ExactInner:
    """The exact network behind a k-diffusion wrapper: called with the wrapper's scaled input
    x_in = x / sqrt(sigma^2 + 1) (= x_VP) and time t, returns eps or v of the target at the
    (alpha, sigma) that t names (``sigma_of_t``: the network's levels, or VDenoiser's
    tan(pi t / 2)); ``learned_sigmas`` appends a second half (improved-diffusion's variance
    output, which OpenAIDenoiser drops); ``apply_model`` is CompVis' entry point."""

    def __init__(self, target, sigma_of_t, output, *, learned_sigmas=False, alphas_cumprod=None):
        self.target, self.sigma_of_t, self.output = target, sigma_of_t, output
        self.learned_sigmas = learned_sigmas
        self.alphas_cumprod = alphas_cumprod  # CompVis models carry it

    def __call__(self, x_in, t, cond=None):
        import torch

        x = x_in.detach().cpu().numpy().astype(np.float64)
        s_ve = self.sigma_of_t(t.detach().cpu().numpy().astype(np.float64))
        a = 1.0 / np.sqrt(1.0 + s_ve * s_ve)
        s = s_ve * a
        out = getattr(self.target, self.output)(x, a, s)  # "eps" or "v"
        if self.learned_sigmas:
            out = np.concatenate([out, np.zeros_like(out)], axis=1)
        return torch.from_numpy(out)

    def apply_model(self, x_in, t, cond=None):
        return self(x_in, t, cond)


def _exact_denoiser(target, x_ve, sigma):
    """D(x, sigma) = E[x_0 | x_0 + sigma eps = x] (Karras et al. 2022, eq. 2), from the target."""
    a = 1.0 / np.sqrt(1.0 + sigma * sigma)
    return target.denoise(x_ve * a[:, None], a, sigma * a)


def check_wrappers(target="ring8", *, seed: int = 0):
    """k-diffusion's model wrappers (``external.py``) around the exact network: each wrapper's
    D(x, sigma) against the exact denoiser at the discrete levels, half-way between them (in
    log sigma) and on a Karras grid; the wrapper's ``sigmas`` and ``get_sigmas`` against the
    reference schedule; ``quantize=True`` measured (nearest level: a documented convention, not
    judged); and samplers run end to end on a wrapper against the reference sampler on the same
    grid. The discrete wrappers use the reference's DiscreteSchedule.linear(1000) levels
    (float64, except OpenAIDenoiser, which casts them to float32)."""
    import torch

    from diffusion_oracle import DPMSolverPP2M, Euler
    from diffusion_oracle.reference import ExactModel, get_target, karras_sigmas
    from diffusion_oracle.reference.grids import Grid
    from diffusion_oracle.reference.schedules import DiscreteSchedule

    from .conformance import CheckResult

    ext, ks = load_module("external"), load_sampling()
    tgt = get_target(target) if isinstance(target, str) else target
    sch = DiscreteSchedule.linear(1000)
    levels = _DiscreteLevels(sch)
    ab = torch.from_numpy(np.exp(np.asarray(sch.log_alpha_bar[1:], dtype=np.float64)))
    g = np.random.default_rng(seed)

    def sample_at(sig):  # x = x_0 + sigma eps (VE frame), one point per sigma
        return tgt.sample(len(sig), rng=g) + sig[:, None] * g.standard_normal((len(sig), tgt.d))

    def vtan(t):
        return np.tan(np.asarray(t, dtype=np.float64) * math.pi / 2)

    disc = np.exp(levels.log_sigmas)
    mid = np.exp(0.5 * (levels.log_sigmas[:-1] + levels.log_sigmas[1:]))
    kar = karras_sigmas(40, float(disc[0]), float(disc[-1]), 7.0)
    wrappers = [
        ("DiscreteEpsDDPMDenoiser", lambda: ext.DiscreteEpsDDPMDenoiser(
            _ExactInner(tgt, levels.sigma, "eps"), ab, quantize=False), WRAPPER_RTOL_F64),
        ("DiscreteVDDPMDenoiser", lambda: ext.DiscreteVDDPMDenoiser(
            _ExactInner(tgt, levels.sigma, "v"), ab, quantize=False), WRAPPER_RTOL_F64),
        ("CompVisDenoiser", lambda: ext.CompVisDenoiser(
            _ExactInner(tgt, levels.sigma, "eps", alphas_cumprod=ab)), WRAPPER_RTOL_F64),
        ("CompVisVDenoiser", lambda: ext.CompVisVDenoiser(
            _ExactInner(tgt, levels.sigma, "v", alphas_cumprod=ab)), WRAPPER_RTOL_F64),
        ("OpenAIDenoiser(has_learned_sigmas=True)", lambda: ext.OpenAIDenoiser(
            _ExactInner(tgt, levels.sigma, "eps", learned_sigmas=True),
            types.SimpleNamespace(alphas_cumprod=ab.numpy())), WRAPPER_RTOL_F32),
        ("VDenoiser", lambda: ext.VDenoiser(_ExactInner(tgt, vtan, "v")), WRAPPER_RTOL_F64),
    ]  # fmt: skip
    out = []
    for name, make, tol in wrappers:
        w = make()
        kw = {"cond": None} if name == "CompVisVDenoiser" else {}
        sets = {"levels": disc[::37], "half-way": mid[::37], "Karras": kar}
        if name == "VDenoiser":  # continuous: no levels; a wide log-spaced range instead
            sets = {"log-spaced": np.geomspace(1e-3, 1e3, 40), "Karras": kar}
        worst, parts = 0.0, []
        for label, sig in sets.items():
            x = sample_at(sig)
            with torch.no_grad():
                got = w(torch.from_numpy(x), torch.from_numpy(sig), **kw).double().numpy()
            want = _exact_denoiser(tgt, x, sig)
            err = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
            worst = max(worst, err)
            parts.append(f"{label} {err:.1e}")
        detail = f"max |D - D_exact|/scale: {', '.join(parts)} (tolerance {tol:.0e})"
        ok = worst <= tol
        if hasattr(w, "sigmas"):
            ref = np.exp(levels.log_sigmas)
            dt = str(w.sigmas.dtype).replace("torch.", "")
            lev = float(np.max(np.abs(w.sigmas.double().numpy() / ref - 1.0)))
            # get_sigmas(n) at n - 1 dividing T - 1 = 999 samples the levels themselves
            gs = w.get_sigmas(28).double().numpy()
            gerr = float(np.max(np.abs(gs[:-1] / ref[::-1][::37] - 1.0)))
            ltol = LEVELS_RTOL[dt]
            detail += (
                f"; {dt} levels vs reference {lev:.1e}, get_sigmas(28) {gerr:.1e} (tolerance "
                f"{ltol:.0e}), ends with 0: {gs[-1] == 0.0}"
            )
            ok = ok and max(lev, gerr) <= ltol and gs[-1] == 0.0
            worst = max(worst, lev, gerr)
        out.append(CheckResult(f"wrapper {name}", bool(ok), worst, detail))
    # quantize=True: the network is asked at the nearest level, the scalings use sigma itself
    wq = ext.DiscreteEpsDDPMDenoiser(_ExactInner(tgt, levels.sigma, "eps"), ab, quantize=True)
    x = sample_at(mid[::37])
    with torch.no_grad():
        got = wq(torch.from_numpy(x), torch.from_numpy(mid[::37])).double().numpy()
    want = _exact_denoiser(tgt, x, mid[::37])
    q = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
    out.append(
        CheckResult(
            "wrapper quantize=True (measured, not judged)",
            None,
            q,
            f"half-way between levels: max |D - D_exact|/scale {q:.1e} (the nearest-level "
            "convention)",
        )
    )
    # end to end: a sampler on a wrapper's own get_sigmas grid vs the reference sampler
    model = ExactModel(tgt, sch)
    w = ext.CompVisDenoiser(_ExactInner(tgt, levels.sigma, "eps", alphas_cumprod=ab))
    sig = w.get_sigmas(28).double().numpy()
    t = np.asarray(sch.t_from_log_snr(-2.0 * np.log(sig[:-1])), dtype=np.float64)
    t = np.round(t * sch.T) / sch.T  # the levels are the nodes n = k + 1 (k = 999, 962, ...)
    grid = Grid(sch, t, final_zero=True)
    x_vp = grid.alpha[0] * tgt.sample(64, rng=g) + grid.sigma[0] * g.standard_normal((64, tgt.d))
    worst, parts = 0.0, []
    for fn, ref in (("sample_euler", Euler()), ("sample_dpmpp_2m", DPMSolverPP2M())):
        with torch.no_grad():
            y = getattr(ks, fn)(w, torch.from_numpy(x_vp / grid.alpha[0]), torch.from_numpy(sig),
                                disable=True).double().numpy()  # fmt: skip
        yr = ref(model, x_vp, grid, rng=0)
        err = float(np.abs(y - yr).max()) / max(1.0, float(np.abs(yr).max()))
        worst = max(worst, err)
        parts.append(f"{fn} {err:.1e}")
    out.append(
        CheckResult(
            "CompVisDenoiser + samplers on get_sigmas(28) vs the reference",
            worst <= WRAPPER_RTOL_F64,
            worst,
            f"max diff/scale: {', '.join(parts)} (tolerance {WRAPPER_RTOL_F64:.0e})",
        )
    )
    return out
