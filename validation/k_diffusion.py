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

import contextlib
import functools
import importlib
import importlib.util
import math
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .pipeline import MeasuredSampler

__all__ = [
    "NOT_CATALOGUED",
    "exported_samplers",
    "check_sampler",
    "check_schedules",
    "check_sampler_law",
    "check_wrappers",
    "drive_wrapper",
    "probe_wrapper_levels",
    "WrapperPipeline",
    "WrapperSampler",
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
        ("sample_dpm_2_ancestral", "sample_dpm_2_ancestral", {}, None, True),
        ("sample_dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", {}, None, True),
        ("sample_dpmpp_sde", "sample_dpmpp_sde", {}, None, True),
    )  # fmt: skip


# the k-diffusion samplers conformance_cases does not catalogue, with the reason
NOT_CATALOGUED = {
    "sample_dpm_fast": "takes (sigma_min, sigma_max, n), not a sigma grid: DPM-Solver's own "
                       "time discretisation, not driven by the grid-based checks",
    "sample_dpm_adaptive": "adaptive step size (rtol / atol): no fixed N to converge in, not "
                           "driven by the grid-based checks",
}


def exported_samplers() -> list:
    """The ``sample_*`` functions of the installed k_diffusion.sampling."""
    return sorted(n for n in dir(load_sampling()) if n.startswith("sample_"))


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


# open upstream issues the as-shipped check reports: a last step into sigma = 0 that leaves h
# unassigned before h_last = h (N = 1: the only step is the last)
UPSTREAM = {"sample_dpmpp_2m_sde": "crowsonkb/k-diffusion#72", "sample_dpmpp_3m_sde":
            "crowsonkb/k-diffusion#88"}  # fmt: skip


def check_wrapper_shipped(name, fn_name, kwargs, *, wrapper="CompVisDenoiser", steps=None,
                          target="ring8", seed=0):  # fmt: skip
    """The as-shipped check (issue 21) of a k-diffusion sampler: run as CompVis front ends run
    it (``wrapper`` around the exact network of Stable Diffusion's scaled-linear table,
    ``quantize=True``, Karras sigmas on the wrapper's range, float32) for every N in ``steps``
    (default 1..50, 100, 250, 1000 as diffusers' check 8); every N that raises (who raised) or
    returns non-finite values is named. k-diffusion's samplers make the calls their algorithm
    makes on the grid they are given; the grid and the labels are judged by verify's label
    check (``from_k_diffusion``)."""
    from diffusion_oracle.reference.model import ExactModel
    from diffusion_oracle.reference.schedules import DiscreteSchedule
    from diffusion_oracle.reference.targets import get_target

    from .checks.common import CheckResult, step_counts
    from .checks.shipped import SHIPPED_STEPS
    from .pipeline import ExactNetwork, PipelineError

    steps = SHIPPED_STEPS if steps is None else step_counts(steps)
    fn = getattr(load_sampling(), fn_name)
    sch = DiscreteSchedule.scaled_linear(1000)
    tgt = get_target(target) if isinstance(target, str) else target
    pipe = WrapperPipeline(wrapper=wrapper, kwargs=dict(kwargs))
    conv = wrapper_convention(pipe, sch)
    g = np.random.default_rng(seed)
    x0 = tgt.sample(2, rng=g)
    eps = g.standard_normal(x0.shape)
    crash, nonfinite = [], []
    for N in steps:
        net = ExactNetwork(ExactModel(tgt, sch), conv, dtype="float32")
        try:
            run = drive_wrapper(fn, pipe, net, lambda s0: x0 + s0 * eps, int(N), sch)
        except PipelineError as exc:
            crash.append((int(N), str(exc)))
            continue
        if not np.isfinite(run.sample).all():
            nonfinite.append(int(N))
    found = []
    if crash:
        found.append(f"raises at N = {[n for n, _ in crash]}, first: {crash[0][1][:200]}")
        if "UnboundLocalError" in crash[0][1] and fn_name in UPSTREAM:
            found[-1] += f" (open upstream: {UPSTREAM[fn_name]})"
    if nonfinite:
        found.append(f"non-finite output at N = {nonfinite}")
    detail = (f"{name} on {wrapper} (float32, quantize, Karras sigmas), N = 1..50, 100, 250, "
              "1000: " + ("; ".join(found) if found else f"{len(steps)} step counts clean"))
    data = {"float32": {"crash": crash, "non_finite": nonfinite, "repeated": [], "calls": []}}
    return CheckResult("as shipped (float32 on a CompVis wrapper)", not found,
                       float(len(crash) + len(nonfinite)), detail, data)  # fmt: skip


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


def _sampler_row(i, target, law, shipped):
    """Row i of :func:`conformance_cases` (a worker process's unit: indices pickle, the
    reference factories do not)."""
    name, fn_name, kwargs, ref, stoch = conformance_cases()[i]
    res = check_sampler(name, fn_name, kwargs, ref, stoch, target=target)
    if law:
        res += check_sampler_law(name, fn_name, kwargs, ref, stoch, target=target)
    if shipped:
        res.append(check_wrapper_shipped(name, fn_name, kwargs, target=target))
    return name, res


def conformance_report(target="ring8", *, progress: bool = True, checks=(1, 2, 3, 4, 5, 6, 7),
                       jobs: int = 1):  # fmt: skip
    """Markdown report of the k-diffusion checks: one row per sampler (finiteness, same grid as
    the reference, with checks 4/5 the order and narrow-mode statistics, with check 8 the
    as-shipped runs), then the model wrappers and the sigma schedules; ``jobs`` worker
    processes, one sampler each at a time."""
    cases = conformance_cases()
    law = bool(set(checks) & {4, 5})
    shipped = 8 in set(checks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases), desc="k-diffusion conformance", unit="sampler")
    from .checks.common import parallel_rows

    rows = parallel_rows(_sampler_row, [(i, target, law, shipped) for i in range(len(cases))],
                         jobs=jobs, bar=bar)  # fmt: skip
    if bar is not None:
        bar.close()
    sched = check_schedules()
    wraps = check_wrappers(target)
    head = ["finite", "same grid as the reference"] + (
        ["order (tier 1)", "tier 3 on narrow modes"] if law else []
    ) + (["as shipped"] if shipped else [])
    from .checks.common import markdown_table, row_verdict

    def cell(c):
        if c.passed is None:
            return f"n/a ({c.detail})" if c.value is not None else "n/a"
        return ("PASS" if c.passed else "FAIL") + f": {c.detail}"

    def verdict(res):
        return row_verdict(res)

    lines = [f"# k-diffusion {version()} conformance (target {target}, exact model, float64)", ""]
    lines += markdown_table(["sampler", *head, "verdict"],
                            [[f"`{name}`", *(cell(c) for c in res), verdict(res)]
                             for name, res in rows])  # fmt: skip
    lines.append("")
    lines += markdown_table(["model wrapper (external.py)", "check", "verdict"],
                            [[f"`{c.name}`", c.detail, "n/a" if c.passed is None else
                              verdict([c])] for c in wraps])  # fmt: skip
    lines.append("")
    lines += markdown_table(["sigma schedule", "check", "verdict"],
                            [[f"`{c.name}`", c.detail, verdict([c])] for c in sched])
    have = {fn for _, fn, _, _, _ in cases}
    missing = [n for n in exported_samplers() if n not in have]
    if missing:
        lines.append("")
        lines += markdown_table(["not catalogued", "why"],
                                [[f"`{n}`", NOT_CATALOGUED.get(n, "no reason recorded")]
                                 for n in missing])  # fmt: skip
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


# --------------------------------------------------------------- the pipeline-faithful route
# A k-diffusion pipeline (CompVis/Stable Diffusion front ends) runs
#
#     wrapped = CompVisDenoiser(network, quantize=True)          # or another wrapper
#     sigmas = get_sigmas_karras(N, wrapped.sigma_min.item(), wrapped.sigma_max.item())
#     x = randn * sigmas[0]
#     x = sample_euler(wrapped, x, sigmas, extra_args=...)
#
# and the network sees only x * c_in and the label t = wrapped.sigma_to_t(sigma): the nearest
# training step with quantize=True, else the fractional step, linear in log sigma between the
# training table's entries. :class:`WrapperSampler` is that loop with the exact network of
# :class:`validation.pipeline.ExactNetwork` behind the wrapper (answering at the level the label
# names), and :func:`probe_wrapper_levels` measures the true level of every network input with
# the point-mass probe of :mod:`validation.pipeline`, so that verify judges whether the labels
# name the sample's level (:func:`validation.pipeline.judge_labels`).

WRAPPER_OUTPUT = {
    "CompVisDenoiser": "epsilon",
    "DiscreteEpsDDPMDenoiser": "epsilon",
    "CompVisVDenoiser": "v_prediction",
    "DiscreteVDDPMDenoiser": "v_prediction",
}
SIGMA_SCHEDULES = ("karras", "exponential", "wrapper")


class _LabelledInner:
    """The network behind a k-diffusion wrapper in a pipeline run: called as
    ``inner(x_in, t, ...)`` or, by the CompVis wrappers, ``inner.apply_model(x_in, t, cond)``;
    hands ``network(u, label, i)`` the input (float64) and the label of each row, and returns
    the answer in the input's dtype. Records the labels (and with ``keep`` the inputs)."""

    def __init__(self, network, alphas_cumprod=None, *, keep=False):
        self.network, self.alphas_cumprod, self.keep = network, alphas_cumprod, keep
        self.labels, self.inputs = [], []

    def __call__(self, x_in, t, *args, **kwargs):
        import torch

        from .pipeline import PipelineError

        i = len(self.labels)
        u = x_in.detach().cpu().to(torch.float64).numpy()
        lab = np.broadcast_to(t.detach().cpu().to(torch.float64).numpy().reshape(-1), (len(u),))
        out = np.empty_like(u)
        try:
            for val in np.unique(lab):
                rows = lab == val
                out[rows] = self.network(u[rows], float(val), i)
        except PipelineError:
            raise
        except Exception as exc:  # noqa: BLE001 - ours, never the sampler's
            raise PipelineError(
                "diffusion-oracle", f"the exact network of diffusion-oracle raised "
                f"{type(exc).__name__} at call {i}, label {float(lab[0]):g}: {exc}"[:400],
                where="network", call=i,
            ) from exc  # fmt: skip
        self.labels.append(float(lab[0]) if len(lab) else math.nan)
        if self.keep:
            self.inputs.append(u)
        return torch.from_numpy(out).to(x_in.dtype)

    def apply_model(self, x_in, t, cond=None, *args, **kwargs):
        return self(x_in, t)



@dataclass(frozen=True)
class WrapperPipeline:
    """What a k-diffusion pipeline chooses: the model ``wrapper`` (a key of
    :data:`WRAPPER_OUTPUT`, or a subclass of one of those classes), ``quantize`` (labels
    rounded to the nearest training step, as CompVis front ends run it), the ``sigmas``
    (``"karras"``: ``get_sigmas_karras(N, sigma_min, sigma_max, rho)`` on the wrapper's range,
    ``"exponential"``, ``"wrapper"``: its ``get_sigmas(N)``, or a callable
    ``(N, wrapper) -> sigmas``), ``rho``, the run's ``dtype`` ("float32": the wrapper's
    alphas_cumprod buffer, the sample and the sigmas in float32, as shipped; "float64") and
    the sampler's keyword arguments ``kwargs`` (``eta``, ``s_churn``, ``order`` ...;
    ``extra_args`` defaults to ``{"cond": None}`` for the CompVis v wrapper, which takes a
    positional cond)."""

    wrapper: object = "CompVisDenoiser"
    quantize: bool = True
    sigmas: object = "karras"
    rho: float = 7.0
    dtype: str = "float32"
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if wrapper_family(self.wrapper) is None:
            raise ValueError(f"wrapper must be one of {tuple(WRAPPER_OUTPUT)} or a subclass of "
                             f"one of those classes, got {self.wrapper!r}")  # fmt: skip
        if not callable(self.sigmas) and self.sigmas not in SIGMA_SCHEDULES:
            raise ValueError(f"sigmas must be one of {SIGMA_SCHEDULES} or a callable "
                             f"(N, wrapper) -> sigmas, got {self.sigmas!r}")  # fmt: skip
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.quantize, bool):
            raise TypeError(f"quantize must be a bool, got {type(self.quantize).__name__}")
        if not (isinstance(self.rho, (int, float)) and self.rho > 0):
            raise ValueError(f"rho must be a number > 0, got {self.rho!r}")
        if not isinstance(self.kwargs, dict):
            raise TypeError(f"kwargs must be a dict, got {type(self.kwargs).__name__}")

    def key(self):
        return (self.wrapper, self.quantize, repr(self.sigmas), self.rho, self.dtype,
                repr(sorted(self.kwargs.items())))  # fmt: skip


def wrapper_family(wrapper) -> str | None:
    """The k-diffusion wrapper ``wrapper`` is (a name of :data:`WRAPPER_OUTPUT`) or subclasses
    (a user's patched wrapper keeps its family); None when neither."""
    if isinstance(wrapper, str):
        return wrapper if wrapper in WRAPPER_OUTPUT else None
    for c in getattr(wrapper, "__mro__", ()):
        if c.__name__ in WRAPPER_OUTPUT:
            return c.__name__
    return None


def wrapper_convention(pipe: WrapperPipeline, schedule):
    """The :class:`validation.pipeline.Convention` of the network behind ``pipe.wrapper``:
    trained on ``schedule`` (a DiscreteSchedule; label k names its node k + 1), in the
    wrapper's output type, integer labels when the wrapper quantizes."""
    from diffusion_oracle.reference.schedules import DiscreteSchedule

    from .pipeline import discrete_convention

    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(
            f"schedule must be a DiscreteSchedule (the network's training table), got "
            f"{type(schedule).__name__}"
        )
    return discrete_convention(schedule, WRAPPER_OUTPUT[wrapper_family(pipe.wrapper)],
                               integer_labels=pipe.quantize)  # fmt: skip


def _sampler_error(what, exc, dtype):
    from .pipeline import PipelineError

    return PipelineError(
        "sampler", f"k-diffusion raised {type(exc).__name__} in {what} ({dtype}): {exc}"[:400],
        where=what,
    )  # fmt: skip


def build_wrapper(pipe: WrapperPipeline, inner, schedule):
    """``pipe.wrapper`` around ``inner``, its alphas_cumprod the float64 table of
    ``schedule`` held in the run's dtype (a CompVis model's buffer is float32)."""
    import torch

    ext = load_module("external")
    tdt = torch.float64 if pipe.dtype == "float64" else torch.float32
    ab = torch.from_numpy(np.exp(np.asarray(schedule.log_alpha_bar[1:], dtype=np.float64)))
    ab = ab.to(tdt)
    family = wrapper_family(pipe.wrapper)
    cls = getattr(ext, pipe.wrapper) if isinstance(pipe.wrapper, str) else pipe.wrapper
    try:
        if family.startswith("CompVis"):
            inner.alphas_cumprod = ab
            return cls(inner, quantize=pipe.quantize)
        return cls(inner, ab, quantize=pipe.quantize)
    except Exception as exc:  # noqa: BLE001 - the wrapper's constructor
        raise _sampler_error(_wrapper_name(pipe), exc, pipe.dtype) from exc


def _wrapper_name(pipe) -> str:
    return pipe.wrapper if isinstance(pipe.wrapper, str) else pipe.wrapper.__name__


def wrapper_sigmas(pipe: WrapperPipeline, wrapper, steps: int):
    """The sigmas of an ``steps``-step run (``steps + 1`` values ending in 0), in the run's
    dtype (k-diffusion builds them in float32: ``torch.linspace``'s default)."""
    import torch

    ks = load_sampling()
    tdt = torch.float64 if pipe.dtype == "float64" else torch.float32
    lo, hi = float(wrapper.sigma_min), float(wrapper.sigma_max)
    what = pipe.sigmas if isinstance(pipe.sigmas, str) else "the sigmas callable"
    try:
        if pipe.sigmas == "karras":
            sig = ks.get_sigmas_karras(steps, lo, hi, rho=pipe.rho)
        elif pipe.sigmas == "exponential":
            sig = ks.get_sigmas_exponential(steps, lo, hi)
        elif pipe.sigmas == "wrapper":
            sig = wrapper.get_sigmas(steps)
        else:
            sig = pipe.sigmas(steps, wrapper)
    except Exception as exc:  # noqa: BLE001 - k-diffusion's (or the user's) schedule
        raise _sampler_error(f"sigmas {what!r}", exc, pipe.dtype) from exc
    return torch.as_tensor(sig).to(tdt)


@contextmanager
def _randn_like(draw):
    """Answer ``torch.randn_like`` (the churn of sample_euler/heun/dpm_2, k-diffusion's
    default noise sampler) with ``draw(shape, dtype)``."""
    import torch

    saved = torch.randn_like

    def randn_like(x, *args, **kwargs):
        return draw(tuple(x.shape), kwargs.get("dtype") or x.dtype)

    torch.randn_like = randn_like
    try:
        yield
    finally:
        torch.randn_like = saved


@dataclass
class WrapperRun:
    """One run: the final ``sample`` (VE frame, float64 copy), the ``sigmas`` (float64), the
    ``labels`` and, when kept, the network ``inputs`` of every call."""

    sample: np.ndarray
    sigmas: np.ndarray
    labels: list
    inputs: list


def drive_wrapper(fn, pipe: WrapperPipeline, network, sample0, steps: int, schedule, *,
                  draw=None, keep_inputs=False) -> WrapperRun:  # fmt: skip
    """The k-diffusion pipeline (comment above) from ``sample0`` (VE frame, NumPy, or a
    callable ``sigma_0 -> sample0``), ``network(u, label, i)`` behind the wrapper and
    ``draw(shape, dtype)`` for every noise draw (``noise_sampler`` where ``fn`` takes one, and
    ``torch.randn_like``). Raises :class:`validation.pipeline.PipelineError` naming who."""
    import inspect

    import torch

    tdt = torch.float64 if pipe.dtype == "float64" else torch.float32
    inner = _LabelledInner(network, keep=keep_inputs)
    wrapper = build_wrapper(pipe, inner, schedule)
    sigmas = wrapper_sigmas(pipe, wrapper, steps)
    sig64 = sigmas.to(torch.float64).numpy()
    x0 = sample0(float(sig64[0])) if callable(sample0) else sample0
    x = torch.from_numpy(np.asarray(x0, dtype=np.float64)).to(tdt)
    kw = dict(pipe.kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "extra_args" in params and wrapper_family(pipe.wrapper) == "CompVisVDenoiser":
        kw.setdefault("extra_args", {"cond": None})
    if "disable" in params:
        kw.setdefault("disable", True)
    noise = contextlib.nullcontext()
    if draw is not None:
        if "noise_sampler" in params:
            kw.setdefault("noise_sampler", lambda s, s_next: draw(tuple(x.shape), x.dtype))
        noise = _randn_like(draw)
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "fn")
    from .pipeline import PipelineError

    with noise, torch.no_grad():
        try:
            out = fn(wrapper, x, sigmas, **kw)
        except PipelineError:
            raise
        except Exception as exc:  # noqa: BLE001 - the sampler's (or its wrapper's) fault
            raise _sampler_error(f"{name} on {_wrapper_name(pipe)}", exc, pipe.dtype) from exc
    return WrapperRun(out.detach().cpu().to(torch.float64).numpy(), sig64, inner.labels,
                      inner.inputs)  # fmt: skip


def probe_wrapper_levels(fn, pipe: WrapperPipeline, steps: int, schedule):
    """The true level of every network input of a run (the point-mass probe of
    :func:`validation.pipeline.probe_levels`: coordinate 0 the data, 1 the start's noise,
    2 + j the j-th noise draw), run under two torch seeds to detect noise not drawn through
    ``noise_sampler`` / ``torch.randn_like``. Returns a
    :class:`validation.pipeline.LevelTrace` (frame "ve", the float32 sigma table)."""
    import torch

    from .pipeline import PROBE_C, PointMassNetwork, PointMassProbe

    conv = wrapper_convention(pipe, schedule)
    probe = PointMassProbe(int(steps))

    def start(sigma0):
        x = np.zeros((1, probe.slots))
        x[0, 0], x[0, 1] = PROBE_C, sigma0
        return x

    runs = []
    for seed in (0, 1):
        probe.used = 0
        torch.manual_seed(seed)
        runs.append(drive_wrapper(fn, pipe, PointMassNetwork(conv, probe.c), start, steps,
                                  schedule, draw=probe.draw, keep_inputs=True))  # fmt: skip
    return probe.trace(runs, steps, pipe.dtype, conv, "the sampler",
                       "noise_sampler and torch.randn_like", sigma_table=True, frame="ve",
                       ancestral_dtype=pipe.dtype,
                       table_rel=sigmas_rounding(pipe, schedule))  # fmt: skip


def sigmas_rounding(pipe: WrapperPipeline, schedule) -> float:
    """Relative rounding of each sigma k-diffusion builds (in float32, ``torch.linspace``'s
    default): (a + i b)^rho amplifies the base's rounding by rho (Karras: 4 rho u32, as
    :func:`check_schedules`); exp(linspace(log)) by |log sigma| (exponential, and the wrapper's
    ``get_sigmas``, which interpolates log sigma at float32 t); a callable by the larger."""
    conv = wrapper_convention(pipe, schedule)
    log_range = max(abs(conv.log_sigmas[0]), abs(conv.log_sigmas[-1]),
                    conv.log_sigmas[-1] - conv.log_sigmas[0])  # fmt: skip
    u32 = 2.0**-24
    if pipe.sigmas == "karras":
        return 4.0 * pipe.rho * u32
    if pipe.sigmas in ("exponential", "wrapper"):
        return 4.0 * log_range * u32
    return 4.0 * max(pipe.rho, log_range) * u32


class WrapperSampler(MeasuredSampler):
    """A k-diffusion sampler as a sampler for :func:`diffusion_oracle.verify`, run the way a
    k-diffusion pipeline runs it (comment above): ``fn(wrapper, x, sigmas, **kwargs)`` with
    the exact network behind ``pipe.wrapper`` answering at the level each label names
    (``at="label"``, what a trained network does) or at each call's measured level
    (``at="level"``: the sampler's algorithm isolated from its labels).

    ``schedule`` is the network's training table (a DiscreteSchedule; default
    ``DiscreteSchedule.linear(1000)``): verify must run on it (``sampler.schedule``).
    ``make_grid`` returns the levels the sample really goes through (the level probe), and
    ``checks`` the judged label/level check; ``stochastic=None`` measures whether a run draws
    noise (the probe counts its draws)."""

    default_grid = "karras"
    table_dtype = "float32"  # k-diffusion builds its sigmas in float32

    def __init__(self, fn, pipe: WrapperPipeline | None = None, *, schedule=None, name=None,
                 order=None, stochastic=False, at="label"):  # fmt: skip
        from diffusion_oracle.reference.schedules import DiscreteSchedule

        if not callable(fn):
            raise TypeError(f"fn must be a k-diffusion sampling function, got {type(fn).__name__}")
        if at not in ("label", "level"):
            raise ValueError(f"at must be 'label' or 'level', got {at!r}")
        self.fn, self.pipe = fn, pipe or WrapperPipeline()
        self.schedule = DiscreteSchedule.linear(1000) if schedule is None else schedule
        wrapper_convention(self.pipe, self.schedule)  # the schedule's type, checked now
        base = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "")
        self.name = name or f"{base or 'k-diffusion sampler'} on {_wrapper_name(self.pipe)}" + (
            "(quantize=True)" if self.pipe.quantize else "")  # fmt: skip
        self.order, self._stochastic, self.at = order, stochastic, at
        self._steps, self._traces = {}, {}

    def stochastic_schedule(self):
        return self.schedule

    @property
    def grid_family(self) -> str:
        return f"{self.pipe.sigmas} sigmas"

    def __repr__(self):
        return self.name

    def check_schedule(self, schedule):
        """ValueError unless verify runs on the network's training table (verify calls it
        before anything runs: a wrong schedule is the caller's error, not a verdict)."""
        from diffusion_oracle.adapters import _same_schedule

        if not _same_schedule(schedule, self.schedule):
            raise ValueError(
                f"schedule must be the network's training table {self.schedule!r} "
                f"(sampler.schedule), got {schedule!r}"
            )

    def trace(self, schedule, steps: int):
        """The level probe of a run of ``steps`` (cached)."""
        self.check_schedule(schedule)
        key = (int(steps), self.pipe.key())
        if key not in self._traces:
            self._traces[key] = probe_wrapper_levels(self.fn, self.pipe, int(steps), schedule)
        return self._traces[key]

    def __call__(self, model, x_init, grid, *, rng=None):
        import torch

        from diffusion_oracle.reference.forward import _rng

        from .pipeline import ExactNetwork

        n = self.steps_of(grid)
        rng = _rng(rng)
        conv = wrapper_convention(self.pipe, model.schedule)
        levels = list(self.trace(model.schedule, n).lam_in) if self.at == "level" else None
        net = ExactNetwork(model, conv, levels=levels, dtype=self.pipe.dtype)
        x_ve = np.asarray(x_init, dtype=np.float64) / grid.alpha[0]

        def draw(shape, dtype):
            return torch.from_numpy(rng.standard_normal(shape)).to(dtype or torch.float32)

        r = drive_wrapper(self.fn, self.pipe, net, x_ve, n, model.schedule, draw=draw)
        s_end = float(r.sigmas[-1])
        out = r.sample / math.sqrt(1.0 + s_end * s_end)  # the VP frame at the last sigma
        return out.astype(np.float32) if self.pipe.dtype == "float32" else out
