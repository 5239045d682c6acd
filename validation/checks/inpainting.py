"""Check 11, **inpainting loops** (issue 21, usage loops): the scheduler driven as inpainting
pipelines drive it, judged on the levels its network inputs are at and on the exact conditional
law.

**Mask-based blending** (diffusers' StableDiffusionInpaintPipeline with a 4-channel UNet, SDXL,
Flux and SD3 inpainting: ``scale_noise`` for flow schedulers). After step i of the loop

    proper = image_latents if i == last else scheduler.add_noise(image_latents, noise,
                                                                 timesteps[i + 1])
    latents = (1 - mask) * proper + mask * latents          # mask = 1: the region to repaint

so the known region must enter call i + 1 at the level the scheduler's state is at for that
call: x_known = alpha x0 + sigma eps with the (alpha, sigma) of the unknown region (the
replacement method, Song et al. 2021b, arXiv:2011.13456, App. I.2; Lugmayr et al. 2022,
arXiv:2201.09865, eq. 8). **RePaint** (RePaintScheduler, Lugmayr et al. 2022, Algorithm 1):
``step(model_output, t, sample, original_image, mask)`` blends the known part at the previous
timestep's level (mask = 1: known) and ``undo_step`` re-noises by the forward process for the
resampling jumps; the network must be told a label whose level both parts are at.

**Levels** (exact, every call): the block point-mass probe. The latents are two copies of the
probe of :class:`validation.pipeline.PointMassProbe` (coordinate 0 the data x0 = c, 1 the start's
noise, 2 + j the j-th noise draw): the first block is the region to repaint, the second the
known region (image latents c, the pipeline's noise the start's). The network is the exact
point-mass network told the unknown block's true level, so each block's level is read off its
own coordinates at every call. Judged: at every call after the first, the known block's
log-SNR equals the unknown block's (RePaint: and the label's) within the rounding model of
:func:`validation.pipeline.level_tolerance` (the unknown block's history) plus one float32
``add_noise`` (table and arithmetic); the final known block is the image (relative 4 u32).
The catalogue's check runs the probe in float64 (the pipeline upcast of
:class:`validation.pipeline.Pipeline`): what it judges is the blend's algorithm. A sampler whose
own state drifts off its sigma table in float32 (DPM-Solver++ on the cosine schedule with Karras
sigmas converts eps to x0 dividing by alpha ~ 5e-5 at sigma_max, amplifying float32 rounding
2e4-fold: 0.58 in log-SNR at the last of 10 calls; docs/findings.md 17) is the label check's
finding, not the blend's; the law runs as shipped (float32).

**Law** (tier 3): a target whose known and unknown coordinates are independent (a product of
two-dimensional mixtures), the exact (unconditional) network, n samples: the repainted
coordinates against the exact conditional law ``GaussianMixture.condition(A, y)`` (A selects the
known coordinates), two-sample Kolmogorov-Smirnov tests on both coordinates and a fixed
projection (Bonferroni, family false alarm LAW_ALPHA), and the known coordinates equal to y.
The image's region to repaint is a constant far outside the law (OFF_LAW), so a loop that keeps
the (noised) image there, or inverts the mask, fails. On a product target the replacement
method and RePaint are exact (the score is separable), so the law guards the mask's
orientation, the final overwrite and the sampler under the blend; the level the known region
is blended at cannot move this law (the separable score never reads it): the level probe above
judges that. On correlated targets both methods only approximate the conditional law (Lugmayr
et al. 2022, Sec. 4; docs/findings.md 2), so they are not judged there.
"""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np

from diffusion_oracle.validation.checks.common import noise_method, step_counts

__all__ = [
    "INPAINT_STEPS",
    "LAW_N",
    "LAW_STEPS",
    "InpaintTrace",
    "check_inpainting",
    "diffusers_blend",
    "inpaint_law",
    "probe_inpaint_levels",
    "probe_repaint_levels",
    "product_target",
    "repaint_law",
]

INPAINT_STEPS = (10, 25)
# N = 250: an order-1 sampler's discretisation on the product target sits below what n = 2000
# samples resolve (DDIM at N = 50 reaches p = 0.005 on the projection, at N = 200 p = 0.11);
# family false alarm 0.001 per configuration: ~50 configurations in a catalogue run
LAW_STEPS = 250
LAW_N = 2000
LAW_ALPHA = 0.001
REPAINT_JUMPS = {"jump_length": 10, "jump_n_sample": 10}  # RePaintPipeline's defaults
# RePaint's law at N = 100 (with its jumps, ~900 calls): at N = 25 its DDIM steps (eta = 0)
# leave a discretisation the law test resolves (the corrected undo_step reaches p = 0.0036)
REPAINT_LAW_STEPS = 100
OFF_LAW = 5.0  # the image's value in the region to repaint: 17 component stds off the law


def _inpaint_pipe(pipe):
    """``pipe`` as an inpainting pipeline runs it: ``strength`` 1.0 unless a strength or a
    begin index is given (its get_timesteps then calls ``set_begin_index(0)``)."""
    if pipe.strength is None and pipe.begin_index is None:
        return dataclasses.replace(pipe, strength=1.0)
    return pipe


def diffusers_blend(image, noise, mask):
    """The blend of diffusers' inpainting pipelines (module docstring) as an ``after_step``
    hook of :func:`validation.pipeline.drive`: ``image``, ``noise`` (the pipeline's start
    noise) and ``mask`` (1 on the region to repaint) as NumPy arrays of the latents' shape."""
    import torch

    def blend(i, sched, labels, sample):
        shape = sample.shape
        img = torch.from_numpy(np.asarray(image, np.float64).reshape(shape)).to(sample.dtype)
        eps = torch.from_numpy(np.asarray(noise, np.float64).reshape(shape)).to(sample.dtype)
        m = torch.from_numpy(np.asarray(mask, np.float64).reshape(shape)).to(sample.dtype)
        proper = img
        if i < len(labels) - 1:
            t = torch.as_tensor(labels[i + 1]).reshape(1)
            if noise_method(sched) == "add_noise":
                proper = sched.add_noise(img, eps, t)
            else:
                proper = sched.scale_noise(img, t, eps)
        return (1 - m) * proper + m * sample

    return blend


class _BlockPointMass:
    """The exact network of the point mass at ``c`` on the two-block probe: x0_hat = c,
    eps_hat = (u - a c) / s, with (a, s) the true level of the first (unknown) block."""

    def __init__(self, convention, c, slots):
        self.conv, self.c, self.slots = convention, np.asarray(c, np.float64), int(slots)

    def __call__(self, u, label, i):
        from diffusion_oracle.validation.pipeline import PROBE_C

        ub = u.reshape(u.shape[0], -1)[0, : self.slots]
        a = float(ub[0]) / PROBE_C
        s = float(np.sqrt(np.sum(ub[1:] ** 2)))
        lam = 2.0 * ((math.log(a) if a > 0 else -math.inf) - (math.log(s) if s > 0 else -math.inf))
        x0 = np.broadcast_to(self.c, u.shape)
        eps = (u - a * x0) / s if s > 0 else np.zeros_like(u)
        return self.conv.encode(x0, eps, u, lam)


class InpaintTrace:
    """The measured levels of one two-block probe run: ``unknown`` the
    :class:`validation.pipeline.LevelTrace` of the region to repaint (the scheduler's state),
    ``a_known``/``s_known`` the known region's level at each call, ``known_end`` its final
    coordinates over c (the image: 1 on coordinate 0, 0 elsewhere)."""

    def __init__(self, unknown, a_known, s_known, known_end, model_labels=None):
        self.unknown = unknown
        self.a_known, self.s_known = np.asarray(a_known), np.asarray(s_known)
        self.known_end = np.asarray(known_end)
        self.model_labels = model_labels

    @property
    def lam_known(self):
        with np.errstate(divide="ignore"):
            return 2.0 * (np.log(self.a_known) - np.log(self.s_known))


def _block_draw(probe, slots):
    def draw(shape, dtype):
        z = probe.draw(shape, dtype)
        flat = z.view(shape[0], -1)
        j = probe.used - 1
        if slots + 2 + j < flat.shape[-1]:
            flat[..., slots + 2 + j] = 1.0
        return z

    return draw


def _split(runs, slots):
    """The runs restricted to each block, as PointMassProbe.trace reads them."""
    out = []
    for lo in (0, slots):
        out.append([types.SimpleNamespace(
            inputs=[u[:, lo:lo + slots] for u in r.inputs], labels=r.labels,
            sample=r.sample[:, lo:lo + slots]) for r in runs])  # fmt: skip
    return out


def _known_levels(runs_k):
    from diffusion_oracle.validation.pipeline import PROBE_C

    r = runs_k[0]
    ins = np.stack([u[0] for u in r.inputs]) if r.inputs else np.zeros((0, 1))
    a = ins[:, 0] / PROBE_C
    s = np.sqrt(np.sum(ins[:, 1:] ** 2, axis=1))
    end = r.sample[0] / PROBE_C
    return a, s, end


def probe_inpaint_levels(factory, steps, pipe, *, reference=None, blend=diffusers_blend):
    """The :class:`InpaintTrace` of the mask-based inpainting loop (module docstring) of
    ``steps`` calls, run as ``pipe`` (:class:`validation.pipeline.Pipeline`) says; ``blend``
    builds the loop's after-step hook from (image, noise, mask) (default: diffusers' blend; a
    user passes their own loop's)."""
    import torch

    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import (
        CONSISTENCY,
        PROBE_C,
        PROBE_TINY,
        PointMassProbe,
        diffusers_name,
        drive,
        frame_scales,
        inference_sigmas,
        network_convention,
        prepare,
        sample_frame,
        start_level,
    )

    steps = step_counts([steps])[0]
    ref = reference or training_schedule(factory())
    pipe = _inpaint_pipe(pipe)
    sched, labels, begin = prepare(factory, steps, pipe, ref)
    conv = network_convention(sched, ref)
    frame = sample_frame(sched)
    a0, s0 = frame_scales(frame, start_level(sched, labels, begin, conv))
    s0 = max(s0, PROBE_TINY)
    probe = PointMassProbe(len(labels))
    slots = probe.slots
    c = np.zeros((1, 2 * slots))
    c[0, 0] = c[0, slots] = PROBE_C
    noise = np.zeros((1, 2 * slots))
    noise[0, 1] = noise[0, slots + 1] = 1.0
    mask = np.zeros((1, 2 * slots))
    mask[0, :slots] = 1.0
    x = a0 * c + s0 * noise
    runs = []
    for seed in (0, 1):
        probe.used = 0
        torch.manual_seed(seed)
        runs.append(drive(factory, _BlockPointMass(conv, c, slots), x, steps, pipe,
                          draw=_block_draw(probe, slots), reference=ref, keep_inputs=True,
                          prepared=prepare(factory, steps, pipe, ref),
                          after_step=blend(c, noise, mask)))  # fmt: skip
    runs_u, runs_k = _split(runs, slots)
    trace = probe.trace(runs_u, steps, pipe.dtype, conv, "the scheduler",
                        "its module's randn_tensor", sigma_table=inference_sigmas(sched),
                        frame=frame, consistency=diffusers_name(sched) in CONSISTENCY)  # fmt: skip
    a_k, s_k, end = _known_levels(runs_k)
    return InpaintTrace(trace, a_k, s_k, end)


# ------------------------------------------------------------------------------------ RePaint
def repaint_loop(factory, network, sample0, image, mask, steps, *, draw=None, dtype="float32",
                 jumps=None, keep_inputs=False):  # fmt: skip
    """RePaintPipeline's loop (diffusers, Lugmayr et al. 2022 Algorithm 1): ``set_timesteps(N,
    jump_length, jump_n_sample)``; for each timestep t, the network and ``step(out, t, x,
    original_image, mask)`` when t is below the previous one, else ``undo_step(x, t_prev)``
    (re-noise by the forward process). ``mask`` 1 on the known region. Returns a
    :class:`validation.pipeline.Drive` (inputs and labels of the network calls)."""
    import torch

    from diffusion_oracle.validation.pipeline import (
        Drive,
        PipelineError,
        _noise,
        _np64,
        _scheduler_call,
    )

    jumps = dict(REPAINT_JUMPS if jumps is None else jumps)
    tdt = getattr(torch, dtype)
    sched = _scheduler_call("the constructor", factory, dtype=dtype)
    if dtype == "float64":  # the pipeline upcast: its tables from the float64 reference
        from diffusion_oracle.validation.diffusers import _upcast, training_schedule

        _upcast(sched, training_schedule(sched))
    _scheduler_call("RePaintScheduler.set_timesteps", sched.set_timesteps, int(steps), **jumps,
                    dtype=dtype)  # fmt: skip
    flat = np.asarray(sample0).shape
    shape = flat + (1, 1)

    def t_(a):
        return torch.from_numpy(np.asarray(a, np.float64).reshape(shape)).to(tdt)

    x, img, m = t_(sample0), t_(image), t_(mask)
    labels, inputs = [], []
    t_last = sched.timesteps[0] + 1
    ctx = _noise(sched, draw) if draw is not None else torch.no_grad()
    with ctx:
        for t in sched.timesteps:
            if t < t_last:
                i = len(labels)
                u64 = _np64(x).reshape(flat)
                if keep_inputs:
                    inputs.append(u64)
                labels.append(float(t))
                try:
                    out = network(u64, float(t), i)
                except Exception as exc:  # noqa: BLE001 - ours, never the scheduler's
                    raise PipelineError("diffusion-oracle", f"the exact network raised "
                                        f"{type(exc).__name__}: {exc}"[:300],
                                        where="network", call=i) from exc  # fmt: skip
                res = _scheduler_call("RePaintScheduler.step", sched.step, t_(out), t, x, img, m,
                                      call=i, label=float(t), dtype=dtype)  # fmt: skip
                x = res.prev_sample
            else:
                x = _scheduler_call("RePaintScheduler.undo_step", sched.undo_step, x, t_last,
                                    dtype=dtype)  # fmt: skip
            t_last = t
    return Drive(_np64(x).reshape(flat), x, labels, inputs, len(labels), dtype, sched, 0)


def probe_repaint_levels(factory, steps, *, dtype="float32", jumps=None):
    """The :class:`InpaintTrace` of RePaint's loop on the two-block probe (module docstring);
    ``model_labels`` the labels of the network calls."""
    import torch

    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import (
        PROBE_C,
        PointMassProbe,
        discrete_convention,
        frame_scales,
    )

    steps = step_counts([steps])[0]
    ref = training_schedule(factory())
    conv = discrete_convention(ref, "epsilon", integer_labels=True)
    sched = factory()
    sched.set_timesteps(int(steps), **dict(REPAINT_JUMPS if jumps is None else jumps))
    calls = int(len(sched.timesteps))
    probe = PointMassProbe(calls)
    # every undo_step draws T // N times (one forward step each), every step once
    T = int(sched.config.num_train_timesteps)
    probe.slots = slots = 2 + calls * (T // int(steps) + 1) + 8
    probe.c = np.zeros(slots)
    probe.c[0] = PROBE_C
    c = np.zeros((1, 2 * slots))
    c[0, 0] = c[0, slots] = PROBE_C
    noise = np.zeros((1, 2 * slots))
    noise[0, 1] = noise[0, slots + 1] = 1.0
    mask = np.zeros((1, 2 * slots))
    mask[0, slots:] = 1.0  # RePaint: 1 on the known region
    a0, s0 = frame_scales("vp", float(conv.log_snr(float(sched.timesteps[0]))))
    x = a0 * c + s0 * noise
    runs = []
    for seed in (0, 1):
        probe.used = 0
        torch.manual_seed(seed)
        runs.append(repaint_loop(factory, _BlockPointMass(conv, c, slots), x, c, mask, steps,
                                 draw=_block_draw(probe, slots), dtype=dtype, jumps=jumps,
                                 keep_inputs=True))  # fmt: skip
    runs_u, runs_k = _split(runs, slots)
    trace = probe.trace(runs_u, steps, dtype, conv, "RePaintScheduler",
                        "its module's randn_tensor", frame="vp")  # fmt: skip
    a_k, s_k, end = _known_levels(runs_k)
    return InpaintTrace(trace, a_k, s_k, end, model_labels=runs[0].labels)


# ------------------------------------------------------------------------------------ judging
def _known_tolerance(trace, i) -> float:
    """log-SNR rounding of one float32 add_noise at call i's level: the float32 alpha_bar
    (cumulative product, relative sqrt(k + 2) u32, over 1 - alpha_bar) or sigma table entry
    (2 u32), and its arithmetic (4 u32 on each coordinate, twice in lambda); LAMBDA times."""
    from diffusion_oracle.verification.tolerances import LAMBDA

    u32 = 2.0**-24
    lam = float(trace.lam_in[i])
    tol = 2.0 * (4 * u32 + 4 * u32) + 2.0 * trace.table_rel
    if trace.convention.path == "discrete" and math.isfinite(lam):
        one_minus_ab = math.exp(-float(np.logaddexp(0.0, lam)))
        k = max(float(trace.labels[min(i, len(trace.labels) - 1)]), 0.0)
        tol += u32 * math.sqrt(k + 2.0) / max(one_minus_ab, u32)
    return LAMBDA * tol


def judge_inpaint_levels(it: InpaintTrace, *, repaint=False):
    """(passed, worst ratio to the tolerance, the first failing call's text or "") of an
    :class:`InpaintTrace` (module docstring)."""
    from diffusion_oracle.validation.pipeline import level_tolerance
    from diffusion_oracle.verification.tolerances import LAMBDA

    tr = it.unknown
    if not tr.available:
        return None, 0.0, f"levels not measurable: {tr.why}"
    worst, first = 0.0, ""
    lam_u, lam_k = tr.lam_in, it.lam_known
    for i in range(len(tr.labels)):
        checks = []
        if i > 0 or repaint:  # the first call's known region is the start, not a blend
            checks.append(("the known region", float(lam_k[i])))
        if repaint:
            checks.append(("the label", float(tr.convention.log_snr(tr.labels[i]))))
        tol = level_tolerance(tr, i) + _known_tolerance(tr, i)
        for what, lam in checks:
            a, b = float(lam_u[i]), lam
            if not (math.isfinite(a) and math.isfinite(b)):
                if a != b and not first:
                    first = (f"call {i} (label {tr.labels[i]:g}): the state is at log-SNR {a:.6g}"
                             f", {what} at {b:.6g}")  # fmt: skip
                continue
            r = abs(a - b) / tol
            worst = max(worst, r)
            if r > 1.0 and not first:
                first = (f"call {i} (label {tr.labels[i]:g}): the region to repaint is at "
                         f"log-SNR {a:.6g}, {what} at {b:.6g} (off by {abs(a - b):.3g}, "
                         f"tolerance {tol:.2g})")  # fmt: skip
    u32 = 2.0**-24
    end = it.known_end
    want = np.zeros_like(end)
    want[0] = 1.0
    end_err = float(np.abs(end - want).max())
    if end_err > LAMBDA * 4 * u32 and not first:
        a, s = float(end[0]), float(np.sqrt(np.sum(end[1:] ** 2)))
        first = (f"the known region ends at {a:.6g} x0 + noise of std {s:.3g}, not at the "
                 "image")  # fmt: skip
    return not first, worst, first


def _levels_plot(it: InpaintTrace, why: str, N: int, repaint: bool) -> dict:
    """The failure plot of check 11: the log-SNR of the region to repaint (the state), of the
    known region and (RePaint) of the label at every call, the first failing call marked."""
    tr = it.unknown
    calls = list(range(len(tr.labels)))
    series = {"region to repaint (state)": [calls, [float(v) for v in tr.lam_in]],
              "known region": [calls, [float(v) for v in it.lam_known]]}  # fmt: skip
    if repaint:
        series["label"] = [calls, [float(tr.convention.log_snr(t)) for t in tr.labels]]
    mark = int(why.split()[1]) if why.startswith("call ") else None
    return {"series": series, "mark": mark, "xlabel": f"network call (N = {N})",
            "ylabel": "log-SNR of the network input", "log": False}  # fmt: skip


def product_target():
    """A four-dimensional GaussianMixture whose coordinates (0, 1) (known) and (2, 3) (to
    repaint) are independent: the product of a two-component and a four-component planar
    mixture (component std 0.3 and 0.25), eight components with block-diagonal covariances."""
    from diffusion_oracle.reference.targets import GaussianMixture

    wk, mk, sk = [0.4, 0.6], [[-0.8, 0.3], [0.7, -0.4]], [0.3, 0.3]
    ang = np.arange(4) * np.pi / 2 + 0.3
    wu, mu, su = [0.1, 0.2, 0.3, 0.4], np.stack([np.cos(ang), np.sin(ang)], 1), [0.25] * 4
    w, m, cov = [], [], []
    for a in range(2):
        for b in range(4):
            w.append(wk[a] * wu[b])
            m.append(np.concatenate([mk[a], mu[b]]))
            cov.append(np.diag([sk[a] ** 2] * 2 + [su[b] ** 2] * 2))
    return GaussianMixture(w, np.asarray(m), np.asarray(cov))


def _law_verdict(out, tgt, y, rng, what):
    """Two-sample KS tests of the repainted coordinates against the exact conditional law and
    the known coordinates against y (module docstring)."""
    from scipy import stats as st

    from diffusion_oracle.verification.tolerances import LAMBDA

    A = np.zeros((2, 4))
    A[0, 0] = A[1, 1] = 1.0
    cond = tgt.condition(A, y)
    ideal = cond.sample(5 * len(out), rng=rng)[:, 2:]
    got = out[:, 2:]
    u = np.array([0.6, 0.8])
    ps = {"coordinate 2": float(st.ks_2samp(got[:, 0], ideal[:, 0]).pvalue),
          "coordinate 3": float(st.ks_2samp(got[:, 1], ideal[:, 1]).pvalue),
          "projection": float(st.ks_2samp(got @ u, ideal @ u).pvalue)}  # fmt: skip
    known = float(np.abs(out[:, :2] - y).max())
    known_tol = LAMBDA * 8 * 2.0**-24 * max(1.0, float(np.abs(y).max()))
    ok = all(p > LAW_ALPHA / 3 for p in ps.values()) and known <= known_tol
    detail = (f"{what}; repainted vs GaussianMixture.condition: "
              + ", ".join(f"{k} p={v:.2g}" for k, v in ps.items())
              + f" (each at {LAW_ALPHA / 3:.1e}; family {LAW_ALPHA}); known region off y by "
              f"{known:.1e} (tolerance {known_tol:.0e})")  # fmt: skip
    return ok, min(ps.values()), detail


def inpaint_law(factory, pipe, *, steps=LAW_STEPS, n=LAW_N, seed=0, blend=diffusers_blend):
    """(passed, smallest p-value, detail) of the mask-based loop's law (module docstring)."""
    from diffusion_oracle.reference._checks import positive_int
    from diffusion_oracle.reference.model import ExactModel
    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import (
        ExactNetwork,
        drive,
        frame_scales,
        network_convention,
        prepare,
        sample_frame,
        start_level,
    )

    steps, n = positive_int(steps, "steps"), positive_int(n, "n", minimum=10)
    tgt = product_target()
    ref = training_schedule(factory())
    g = np.random.default_rng(seed)
    y = tgt.sample(1, rng=g)[0, :2]
    pipe = _inpaint_pipe(pipe)
    sched, labels, begin = prepare(factory, steps, pipe, ref)
    conv = network_convention(sched, ref)
    a0, s0 = frame_scales(sample_frame(sched), start_level(sched, labels, begin, conv))
    x_data = tgt.sample(n, rng=g)
    x_data[:, :2] = y  # the known region is the image
    noise = g.standard_normal(x_data.shape)
    x = a0 * x_data + s0 * noise
    image = x_data.copy()
    image[:, 2:] = OFF_LAW  # what the image holds where it is repainted: off the law
    mask = np.zeros_like(x)
    mask[:, 2:] = 1.0
    net = ExactNetwork(ExactModel(tgt, ref, prediction="v"), conv)
    r = drive(factory, net, x, steps, pipe, reference=ref, after_step=blend(image, noise, mask))
    if not np.isfinite(r.sample).all():
        return False, 0.0, f"N = {steps}: non-finite output"
    return _law_verdict(r.sample, tgt, y, g, f"N = {steps}, n = {n}, mask-based blend")


def repaint_law(factory, *, steps=REPAINT_LAW_STEPS, n=LAW_N, seed=0, jumps=None):
    """(passed, smallest p-value, detail) of RePaint's law (module docstring)."""
    from diffusion_oracle.reference.model import ExactModel
    from diffusion_oracle.validation.diffusers import training_schedule
    from diffusion_oracle.validation.pipeline import ExactNetwork, discrete_convention, frame_scales

    steps, n = step_counts([steps])[0], step_counts([n], "n")[0]
    tgt = product_target()
    ref = training_schedule(factory())
    conv = discrete_convention(ref, "epsilon", integer_labels=True)
    sched = factory()
    sched.set_timesteps(int(steps), **dict(REPAINT_JUMPS if jumps is None else jumps))
    g = np.random.default_rng(seed)
    y = tgt.sample(1, rng=g)[0, :2]
    a0, s0 = frame_scales("vp", float(conv.log_snr(float(sched.timesteps[0]))))
    x_data = tgt.sample(n, rng=g)
    x_data[:, :2] = y
    x = a0 * x_data + s0 * g.standard_normal(x_data.shape)
    image = x_data.copy()
    image[:, 2:] = OFF_LAW
    mask = np.zeros_like(x)
    mask[:, :2] = 1.0  # RePaint: 1 on the known region
    import torch

    torch.manual_seed(seed)
    net = ExactNetwork(ExactModel(tgt, ref, prediction="v"), conv)
    r = repaint_loop(factory, net, x, image, mask, steps, jumps=jumps)
    if not np.isfinite(r.sample).all():
        return False, 0.0, f"N = {steps}: non-finite output"
    return _law_verdict(r.sample, tgt, y, g, f"N = {steps} ({r.calls} calls with the jumps), "
                        f"n = {n}, RePaint")  # fmt: skip


def _is_repaint(sched) -> bool:
    """A RePaintScheduler or a subclass: driven through RePaint's own loop."""
    try:
        from diffusers import RePaintScheduler
    except ImportError:  # pragma: no cover - diffusers missing
        return False
    return isinstance(sched, RePaintScheduler)


def check_inpainting(case, *, steps=INPAINT_STEPS, law=True):
    """Check 11 of ``case`` (module docstring): levels at N = ``steps``, then (``law``) the
    conditional law at N = LAW_STEPS (RePaint: 25 with its jumps)."""
    from diffusion_oracle.validation.checks.common import CheckResult
    from diffusion_oracle.validation.pipeline import CONSISTENCY, Pipeline, PipelineError

    name = "inpainting (blend levels, conditional law)"
    steps = step_counts(steps)
    if case.inverse:
        return CheckResult(name, None, None, "an inversion: no inpainting loop")
    factory = case.factory()
    repaint = _is_repaint(factory())
    if not repaint and noise_method(factory()) is None:
        return CheckResult(name, None, None, "no add_noise / scale_noise to blend with")
    pipe = Pipeline(set_timesteps=dict(case.set_timesteps), step=dict(case.step),
                    strength=case.strength, begin_index=case.begin_index)  # fmt: skip
    # the levels in float64 (the pipeline upcast): the blend's algorithm; a sampler's own
    # float32 level drift is the label check's finding (module docstring)
    pipe64 = dataclasses.replace(pipe, dtype="float64")
    worst, parts = 0.0, []
    for N in steps:
        try:
            it = (probe_repaint_levels(factory, N, dtype="float64") if repaint
                  else probe_inpaint_levels(factory, N, pipe64))  # fmt: skip
        except PipelineError as exc:
            if exc.who == "scheduler":
                return CheckResult(name, None, None, f"N = {N}: {exc} (the as-shipped check "
                                   "reports crashes)")  # fmt: skip
            return CheckResult(name, None, None, f"N = {N}: not measured: {exc}")
        ok, w, why = judge_inpaint_levels(it, repaint=repaint)
        if ok is None:
            return CheckResult(name, None, None, why)
        if not ok:
            return CheckResult(name, False, None, f"N = {N}: {why}",
                               {"steps": N, "plot": _levels_plot(it, why, N, repaint)})
        worst = max(worst, w)
    parts.append(f"the known region enters every call at the state's level{' and the label' if repaint else ''} (worst {worst:.2g} of the tolerance) and ends at the image, N = {list(steps)}")  # noqa: E501
    if law and case.scheduler not in CONSISTENCY:
        try:
            ok, p, detail = repaint_law(factory) if repaint else inpaint_law(factory, pipe)
        except PipelineError as exc:
            return CheckResult(name, False, None, f"law: {exc}")
        if not ok:
            return CheckResult(name, False, p, f"{parts[0]}; but the law fails: {detail}")
        parts.append(detail)
    elif law:
        parts.append("law not judged: a consistency sampler needs the exact consistency model")
    return CheckResult(name, True, worst, "; ".join(parts))
