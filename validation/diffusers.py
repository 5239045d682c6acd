"""Drive diffusers schedulers with the exact model (issue 6: validation adapters).

:func:`run_scheduler` runs one scheduler the way a diffusers pipeline does (``set_timesteps``,
``init_noise_sigma``, ``scale_model_input``, the model, ``step``) with the exact model of a
target in place of the network, and records every model call. Four things make it a
measurement rather than a demo:

- **The model answers the scheduler's own question.** At each call the time is read from the
  scheduler's state, not guessed from the loop: for the VP schedulers (DDPM, DDIM, PNDM,
  DPM-Solver, UniPC, DEIS) timestep k is alpha_bar[k] of the training schedule, our node
  n = k + 1; for the sigma (VE-frame) schedulers (Euler, Heun, LMS, KDPM2, EDM) the sigma of
  the current (sub)step is read back from ``scale_model_input`` (1/sqrt(sigma^2 + 1)), which
  is what the scheduler scales the network's input with; flow matching gives t = sigma. The
  exact model then predicts in the scheduler's ``prediction_type`` (epsilon, sample,
  v_prediction, flow velocity; EDM's preconditioned F solved from ``precondition_outputs``).
- **Noise is the harness's.** Every ``randn_tensor`` the scheduler's module draws (DDPM, the
  ancestral and SDE samplers) is answered from the caller's NumPy generator, so the affine
  probe of tier 1 and the same-noise comparisons work.
- **float64 on request.** ``upcast=True`` converts every floating tensor the scheduler holds
  (betas, alphas_cumprod, sigmas, timesteps) to float64 after ``set_timesteps``, so what is
  left of a difference to the reference is the algorithm, not float32 rounding (diffusers
  stores its schedules in float32, relative error ~6e-8).
- **Everything is recorded**: the timesteps and sigmas of each call, so schedule invariants
  (check 1) are measured on what the scheduler did.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from diffusion_oracle.reference._checks import positive_int
from diffusion_oracle.reference.parameterization import model_prediction, to_x0_eps
from diffusion_oracle.reference.schedules import EDM, DiscreteSchedule, Flow, Schedule

from .pipeline import MeasuredSampler

__all__ = [
    "AlgorithmSampler",
    "ConsistencyModel",
    "RunResult",
    "SchedulerSampler",
    "frame_of",
    "run_pipeline",
    "run_scheduler",
    "training_schedule",
]


def _np(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy().astype(np.float64)
    return np.asarray(a, dtype=np.float64)


def frame_of(scheduler) -> str:
    """'vp' (sample = x_t, integer timesteps on alphas_cumprod), 'sigma' (sample = x_t/alpha in
    the VE frame, sigma from the timestep), 'edm' (VE frame, EDM preconditioning) or 'flow'
    (x_t = (1 - sigma) x_0 + sigma eps)."""
    from .pipeline import diffusers_name

    name = diffusers_name(scheduler)
    if name.startswith("FlowMatch") or scheduler.config.get("use_flow_sigmas", False):
        return "flow"
    if name.startswith("EDM"):
        return "edm"
    ins = float(_np(getattr(scheduler, "init_noise_sigma", 1.0)))
    return "vp" if ins == 1.0 else "sigma"


def training_schedule(scheduler) -> Schedule:
    """The reference schedule the scheduler was configured with: the DiscreteSchedule of its
    betas (float64, from the config, not from its float32 tensors), EDM(sigma_min, sigma_max,
    rho) for the EDM schedulers, Flow() for flow matching."""
    frame = frame_of(scheduler)
    cfg = scheduler.config
    if frame == "flow":
        return Flow()
    if frame == "edm":
        return EDM(cfg["sigma_min"], cfg["sigma_max"], cfg["rho"])
    T = int(cfg["num_train_timesteps"])
    kind = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if cfg.get("trained_betas") is not None:
        sch = DiscreteSchedule(np.asarray(cfg["trained_betas"], dtype=np.float64))
    elif kind == "linear":
        sch = DiscreteSchedule.linear(T, b0, b1)
    elif kind == "scaled_linear":
        sch = DiscreteSchedule.scaled_linear(T, b0, b1)
    elif kind == "squaredcos_cap_v2":
        sch = DiscreteSchedule.cosine(T)
    elif kind == "sigmoid":  # GeoDiff (DDPM, DDPMParallel): sigmoid(linspace(-6, 6)) scaled
        sch = DiscreteSchedule.sigmoid(T, b0, b1)
    else:
        raise ValueError(f"beta_schedule {kind!r} has no reference counterpart yet")
    if cfg.get("rescale_betas_zero_snr", False):
        from diffusion_oracle.reference.schedules import rescale_zero_terminal_snr

        sch = rescale_zero_terminal_snr(sch)
    return sch


@dataclass
class RunResult:
    """One scheduler run: the final ``sample`` mapped to x (the data frame), and per model call
    the ``timesteps`` passed, the times ``t`` on the reference schedule, (alpha, sigma)."""

    sample: np.ndarray
    timesteps: list = field(default_factory=list)
    t: list = field(default_factory=list)
    alpha: list = field(default_factory=list)
    sigma: list = field(default_factory=list)
    calls: int = 0
    input_error: float = 0.0  # unused since the pipeline driver (the level probe measures it)
    norms: list = field(default_factory=list)  # |x_t| at each call (the landing check)
    labels: list = field(default_factory=list)  # the timestep label of each call
    dtype: str = "float64"


def _noise_from(rng, scheduler, dtype):
    """Answer the scheduler module's ``randn_tensor`` from ``rng`` (NumPy), in float64."""
    import torch

    from .pipeline import _noise

    return _noise(
        scheduler, lambda shape, _dt: torch.from_numpy(rng.standard_normal(shape)).to(torch.float64)
    )


@contextmanager
def _keep_float64():
    """Within set_timesteps: a float64 tensor asked to become float32 (``.to(torch.float32)``,
    ``.float()``) stays float64, so that sigmas and timesteps computed in float64 NumPy are not
    rounded on their way into the scheduler."""
    import torch

    to, flt = torch.Tensor.to, torch.Tensor.float

    def to64(self, *args, **kwargs):
        want = kwargs.get("dtype", next((a for a in args if isinstance(a, torch.dtype)), None))
        if want == torch.float32 and self.dtype == torch.float64:
            kwargs.pop("dtype", None)
            args = tuple(a for a in args if not isinstance(a, torch.dtype))
        return to(self, *args, **kwargs)

    def float64(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else flt(self, *args, **kwargs)

    torch.Tensor.to, torch.Tensor.float = to64, float64
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.float = to, flt


def _upcast(scheduler, ref=None):
    """Every floating tensor of the scheduler to float64; with the reference DiscreteSchedule
    ``ref``, betas, alphas and alphas_cumprod are replaced by its float64 values (the float32
    tensors would otherwise carry their rounding, ~6e-8 relative, into every step)."""
    import torch

    for k, v in list(vars(scheduler).items()):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            setattr(scheduler, k, v.to(torch.float64))
    if isinstance(ref, DiscreteSchedule) and hasattr(scheduler, "alphas_cumprod"):
        if len(scheduler.alphas_cumprod) == ref.T:
            scheduler.betas = torch.from_numpy(np.array(ref.betas))
            scheduler.alphas = 1.0 - scheduler.betas
            scheduler.alphas_cumprod = torch.from_numpy(np.exp(ref.log_alpha_bar[1:]))


def _prepared(factory, steps, ref, upcast):
    """A fresh scheduler with ``set_timesteps(steps)`` done, in float64 mode with ``upcast``."""
    sched = factory()
    if not upcast:
        sched.set_timesteps(int(steps))
        return sched
    _upcast(sched, ref)  # before set_timesteps, so that sigmas come from float64 tensors
    with _keep_float64():
        sched.set_timesteps(int(steps))
    _upcast(sched)
    return sched


def run_scheduler(
    factory,
    model,
    x_init,
    steps: int,
    *,
    rng=None,
    upcast: bool = True,
) -> RunResult:
    """Run the scheduler ``factory()`` for ``steps`` inference steps from ``x_init`` (shape
    (n, d), in the data frame: x_t = alpha x_0 + sigma eps at the first step; divided by alpha
    for the VE frames), with ``model`` the sampler protocol's model: ``model(x, t)`` returns its
    ``prediction`` (eps, x0, v, score or velocity) at time t of ``model.schedule``, a reference
    schedule matching :func:`training_schedule` (an ExactModel, or the harness's).
    Returns :class:`RunResult` with the final sample in the data frame."""
    import torch

    from diffusion_oracle.reference.forward import _rng

    rng = _rng(rng)
    steps = positive_int(steps, "steps")
    ref = getattr(model, "schedule", None)
    if not isinstance(ref, Schedule):
        raise TypeError(
            f"model must carry its reference schedule as model.schedule, got {type(ref).__name__}"
        )
    sched = _prepared(factory, steps, ref, upcast)
    frame = frame_of(sched)
    pred_type = sched.config.get("prediction_type", "epsilon")
    x0_init = np.asarray(x_init, dtype=np.float64)
    res = RunResult(sample=None)
    ts = list(sched.timesteps)

    lo, hi = ref.log_snr_range()

    def t_of_sigma(sig):
        """(t, clamped): the scheduler's sigma may sit outside the schedule's range by its
        float32 rounding (diffusers rounds its sigmas with numpy's astype(float32))."""
        lam = -2.0 * math.log(sig) if sig > 0 else math.inf
        return float(ref.t_from_log_snr(min(max(lam, lo), hi))), not lo <= lam <= hi

    def time_of(sc, k, i, sample):
        """(t, alpha, sigma) on the reference schedule at this call of scheduler ``sc``: the
        scheduler's own sigma, read back from ``scale_model_input`` of a tensor of ones
        (1/sqrt(sigma^2 + 1), or 1/sqrt(sigma^2 + sigma_data^2) for EDM), which every sigma
        scheduler computes from the sigma of the current (sub)step; integer timesteps index
        alphas_cumprod for VP."""
        kf = float(_np(k))
        sig = getattr(sc, "sigmas", None)
        sig_ve, clamped = None, False
        if frame == "vp" and sig is not None:
            # multistep VP solvers keep VE sigmas (Karras / exponential options make them
            # differ from the integer timesteps' alpha_bar): the update uses sigmas[step_index]
            idx = sc.step_index if getattr(sc, "step_index", None) is not None else i
            sig_ve = float(_np(sig[idx]))
            t, clamped = t_of_sigma(sig_ve)
        elif frame == "vp":
            t = (round(kf) + 1) / ref.T
        elif frame in ("sigma", "edm"):
            c = float(_np(sc.scale_model_input(torch.ones_like(sample[:1]), k)).ravel()[0])
            extra = 1.0 if frame == "sigma" else float(sc.config["sigma_data"]) ** 2
            sig_ve = math.sqrt(max(1.0 / (c * c) - extra, 0.0))
            t, clamped = t_of_sigma(sig_ve)
        else:
            idx = sc.step_index if getattr(sc, "step_index", None) is not None else i
            t = min(max(float(_np(sc.sigmas[idx])), 0.0), 1.0)
        if clamped and frame in ("vp", "sigma"):
            # the model answers at the range's end; its prediction is converted at the
            # scheduler's own level (VP: alpha = 1/sqrt(1 + sigma^2), sigma_VP = sigma alpha),
            # so that a float32-rounded sigma_max does not become an inconsistent model output
            # (amplified by cancellation in a long first step: 6.8e-4 for Euler at N = 2)
            a = 1.0 / math.sqrt(1.0 + sig_ve * sig_ve)
            return t, a, sig_ve * a
        if clamped and isinstance(ref, EDM):
            return t, 1.0, sig_ve
        return t, float(ref.alpha(t)), float(ref.sigma(t))

    # the first time, read from a fresh scheduler (scale_model_input may start its state)
    probe = _prepared(factory, steps, ref, upcast)
    _, a0, _ = time_of(probe, ts[0], 0, torch.from_numpy(x0_init[:1] + 1.0))
    if frame in ("sigma", "edm"):
        sample = torch.from_numpy(x0_init / a0)
    else:
        sample = torch.from_numpy(x0_init.copy())
    # float64 mode also inside step(): several schedulers cast the sample to float32 there
    # ("upcast" for fp16 models), which for float64 input is a downcast
    precision = _keep_float64() if upcast else contextlib.nullcontext()
    with _noise_from(rng, sched, torch.float64), precision:
        for i, k in enumerate(ts):
            t, a, s = time_of(sched, k, i, sample)
            x_vp = _np(sample) * (a if frame in ("sigma", "edm") else 1.0)
            if hasattr(sched, "scale_model_input"):
                # what a pipeline feeds the network; for the sigma schedulers it must be x_t
                # (= alpha x_VE), for the VP ones the sample itself (check 7)
                scaled = _np(sched.scale_model_input(sample, k))
                if frame in ("vp", "sigma"):
                    with np.errstate(invalid="ignore"):  # a non-finite run is check 6's
                        err = float(np.abs(scaled - x_vp).max())
                    res.input_error = max(res.input_error, err)
            # one call of the model in its own parameterization (the sampler protocol), then
            # the exact conversion to (x0, eps)
            pred = model_prediction(model)
            kw = {}
            if pred == "velocity":
                kw = {"d_alpha": ref.d_alpha(t), "d_sigma": ref.d_sigma(t)}
            x0, eps = to_x0_eps(
                np.asarray(model(x_vp, t), dtype=np.float64), source=pred, x_t=x_vp, alpha=a,
                sigma=s, **kw,
            )  # fmt: skip
            if frame == "flow":
                out = eps - x0  # the flow-matching velocity d x_t / d t for alpha = 1 - t
            elif frame == "edm":
                D = torch.from_numpy(x0)
                base = sched.precondition_outputs(sample, torch.zeros_like(sample), s / a)
                unit = sched.precondition_outputs(sample, torch.ones_like(sample), s / a) - base
                out = _np((D - base) / unit)
            else:
                out = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[pred_type]
            res.norms.append(float(np.linalg.norm(x_vp)))
            res.timesteps.append(float(_np(k)))
            res.t.append(t)
            res.alpha.append(a)
            res.sigma.append(s)
            res.calls += 1
            step = sched.step(torch.from_numpy(np.ascontiguousarray(out)), k, sample)
            sample = step.prev_sample if hasattr(step, "prev_sample") else step[0]
    out = _np(sample)
    if frame in ("sigma", "edm"):
        last = sched.sigmas[-1] if hasattr(sched, "sigmas") else 0.0
        s_end = float(_np(last))
        out = out / math.sqrt(1.0 + s_end * s_end) if frame == "sigma" else out
    res.sample = out
    return res




def _ref_frame(schedule) -> str:
    """The frame of a reference schedule: "vp" (alpha^2 + sigma^2 = 1), "flow" (alpha + sigma
    = 1) or "ve" (alpha = 1)."""
    t = 0.5 * (schedule.t_min + schedule.t_max)
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    if abs(a * a + s * s - 1.0) < 1e-9:
        return "vp"
    if abs(a + s - 1.0) < 1e-9:
        return "flow"
    return "ve"


def run_pipeline(
    factory,
    model,
    x_init,
    steps: int,
    *,
    rng=None,
    upcast: bool = True,
    pipeline=None,
    at: str = "label",
    levels=None,
) -> RunResult:
    """Run the scheduler ``factory()`` for ``steps`` inference steps from ``x_init`` the way a
    diffusers pipeline does (:func:`validation.pipeline.drive`): the exact network answers at
    the level each timestep *label* names (``at="label"``, what a trained network does), or at
    the true level of each call (``at="level"``: measured by
    :func:`validation.pipeline.probe_levels`, or the per-call log-SNR ``levels``), which
    isolates the scheduler's algorithm from its labels. ``x_init`` has shape (n, d), in the
    frame of ``model.schedule`` (a reference schedule matching :func:`training_schedule`) at
    the level the run starts at (the scheduler's sigma at its begin index, else its first
    label's level); ``model`` is the sampler protocol's model. ``pipeline``
    (:class:`validation.pipeline.Pipeline`) carries set_timesteps / step keyword arguments,
    strength / begin index and the dtype; without it, ``upcast`` picks float64 (True) or
    float32 as shipped. Returns :class:`RunResult` with the
    final sample in the model's frame; raises :class:`validation.pipeline.PipelineError`
    naming who failed."""
    from diffusion_oracle.reference.forward import _rng

    from .pipeline import (
        ExactNetwork,
        Pipeline,
        drive,
        frame_scale,
        network_convention,
        prepare,
        sample_frame,
        start_level,
    )  # fmt: skip

    rng = _rng(rng)
    steps = positive_int(steps, "steps")
    if at not in ("label", "level"):
        raise ValueError(f"at must be 'label' or 'level', got {at!r}")
    ref = getattr(model, "schedule", None)
    if not isinstance(ref, Schedule):
        raise TypeError(
            f"model must carry its reference schedule as model.schedule, got {type(ref).__name__}"
        )
    pipe = pipeline if pipeline is not None else Pipeline(dtype="float64" if upcast else "float32")
    prepared = prepare(factory, steps, pipe, ref)
    sched, labels, begin = prepared
    conv = network_convention(sched, ref)
    frame, rframe = sample_frame(sched), _ref_frame(ref)
    lam0 = start_level(sched, labels, begin, conv)
    x0_init = np.asarray(x_init, dtype=np.float64)
    sample0 = x0_init if frame == rframe else x0_init * (
        frame_scale(frame, lam0) / frame_scale(rframe, lam0))  # fmt: skip
    if at == "level" and levels is None:
        from .pipeline import PipelineError, probe_levels

        tr = probe_levels(factory, steps, pipe, reference=ref)
        if not tr.available:
            raise PipelineError("diffusion-oracle", f"at='level' needs the level probe: {tr.why}")
        levels = list(tr.lam_in)
    net = ExactNetwork(model, conv, levels=levels, dtype=pipe.dtype)
    np_dtype = np.float64 if pipe.dtype == "float64" else np.float32

    def draw(shape, dtype):
        import torch

        # the latents are (n, d, 1, 1): drawn as the state's (n, d), as verify's probe of the
        # noise expects, then shaped
        flat = (shape[0], int(np.prod(shape[1:]))) if len(shape) > 1 else tuple(shape)
        z = rng.standard_normal(flat).reshape(shape)
        return torch.from_numpy(z).to(dtype or torch.float32)

    d = drive(factory, net, sample0, steps, pipe, draw=draw, reference=ref, keep_inputs=True,
              prepared=prepared)  # fmt: skip
    out = d.sample
    if frame != rframe:
        sig = getattr(sched, "sigmas", None)
        from .pipeline import _level_of_sigma

        lam_end = _level_of_sigma(frame, float(_np(sig[-1]))) if sig is not None else math.inf
        out = out * (frame_scale(rframe, lam_end) / frame_scale(frame, lam_end))
    res = RunResult(sample=out.astype(np_dtype).astype(np.float64) if pipe.dtype != "float64"
                    else out)  # fmt: skip
    res.dtype = pipe.dtype
    res.labels = d.labels
    for t, u in zip(net.times, d.inputs, strict=False):
        a, s = float(ref.alpha(t)), float(ref.sigma(t))
        res.t.append(t)
        res.alpha.append(a)
        res.sigma.append(s)
        res.timesteps.append(d.labels[len(res.timesteps)])
        lam = float(ref.log_snr(t))
        a_net = float(conv.scales(lam)[0])
        res.norms.append(float(np.linalg.norm(u * (a / a_net if a_net > 0 else 1.0))))
    res.calls = d.calls
    return res


def scheduler_class(name: str):
    """The diffusers scheduler class ``name`` (ImportError when diffusers is missing)."""
    mod = importlib.import_module("diffusers")
    return getattr(mod, name)


class SchedulerSampler(MeasuredSampler):
    """A diffusers scheduler as a sampler for :func:`diffusion_oracle.verify`, run the way its
    pipelines run it (:mod:`validation.pipeline`): ``sampler(model, x_init, grid, *, rng)``
    runs the pipeline loop for the number of inference steps that produced ``grid``, the exact
    network answering at the level each timestep label names, in ``dtype`` ("float32" as
    shipped, the default, or "float64"), with the ``set_timesteps`` / ``step`` keyword
    arguments, ``strength`` and ``begin_index`` of the user's pipeline.

    ``make_grid(schedule, steps)`` returns the levels the sample really goes through, measured
    by the level probe (second stages and ancestral re-noising dropped; the last node where the
    output lands), which is what tier 1 compares against; ``checks(schedule, steps)`` gives
    verify the judged label/level check. ``order`` is the declared convergence order;
    ``stochastic=None`` measures whether a run draws noise;
    ``at="level"`` has the exact network answer at each call's true level instead of the
    label's (the algorithm isolated from its labels: the conformance checks' mode)."""

    default_grid = "uniform"

    def __init__(self, factory, *, name=None, order=None, stochastic=False, dtype="float32",
                 set_timesteps=None, step=None, strength=None, begin_index=None,
                 inverse=False, at="label"):  # fmt: skip
        from .pipeline import Pipeline

        self.factory = factory
        self.pipeline = Pipeline(
            set_timesteps=dict(set_timesteps or {}), step=dict(step or {}), strength=strength,
            begin_index=begin_index, dtype=dtype,
        )  # fmt: skip
        self._name = name
        self.order = order
        self._stochastic = stochastic
        self.inverse = inverse
        if at not in ("label", "level"):
            raise ValueError(f"at must be 'label' or 'level', got {at!r}")
        self.at = at
        self._steps = {}
        self._traces = {}

    @property
    def name(self) -> str:
        if self._name is None:
            try:
                self._name = type(self.factory()).__name__
            except Exception:  # noqa: BLE001 - a constructor that raises is reported by verify
                self._name = "diffusers scheduler"
        return self._name

    def __repr__(self):
        return self.name

    def stochastic_schedule(self):
        return training_schedule(self.factory())

    @property
    def grid_family(self) -> str:
        return f"{self.name} timesteps"

    @property
    def table_dtype(self) -> str | None:
        """The precision of the scheduler's noise-level table, for verify's rounding bound:
        "float32" when it keeps a sigma table (diffusers builds it through
        ``astype(np.float32)`` in ``set_timesteps``, so even in float64 mode each level carries
        one float32 rounding: measured 2e-10 against a 50-digit first step of
        DPMSolverMultistep), else None."""
        try:
            return "float32" if hasattr(self.factory(), "sigmas") else None
        except Exception:  # noqa: BLE001 - reported by the runs
            return None

    def trace(self, schedule: Schedule, steps: int):
        """The level probe of a run of ``steps`` (cached)."""
        from .pipeline import probe_levels

        key = (int(steps), self.pipeline.key())
        if key not in self._traces:
            self._traces[key] = probe_levels(self.factory, int(steps), self.pipeline,
                                             reference=schedule)  # fmt: skip
        return self._traces[key]

    def __call__(self, model, x_init, grid, *, rng=None):
        n = self.steps_of(grid)
        levels = None
        if self.at == "level":
            levels = list(self.trace(model.schedule, n).lam_in)
        r = run_pipeline(self.factory, model, x_init, n, rng=rng, pipeline=self.pipeline,
                          at=self.at, levels=levels)  # fmt: skip
        return r.sample.astype(np.float32) if r.dtype == "float32" else r.sample


class AlgorithmSampler:
    """A diffusers scheduler as a sampler for the conformance checks' tier 1 and 3 (the
    driver of :func:`run_scheduler`: the model answers the scheduler's own question, float64;
    the pipeline-faithful sampler is :class:`SchedulerSampler`):
    ``sampler(model, x_init, grid, *, rng)`` runs :func:`run_scheduler` for the number of
    inference steps that produced ``grid``, and ``make_grid(schedule, steps)`` returns the grid
    the scheduler really runs (its model-call times, without the repeated second stages,
    ending with the jump to the data when its last sigma is 0), which is what tier 1 compares
    against. ``order`` is the declared convergence order (None: measured, not judged)."""

    default_grid = "uniform"

    def __init__(self, factory, *, name=None, order=None, stochastic=False):
        self.factory = factory
        self.name = name or type(factory()).__name__
        self.order = order
        self.stochastic = stochastic
        self._steps = {}

    def __repr__(self):
        return self.name

    @property
    def table_dtype(self) -> str | None:
        """The precision of the scheduler's noise-level table, for verify's rounding bound:
        "float32" when it keeps a sigma table (diffusers builds it through
        ``astype(np.float32)`` in ``set_timesteps``, so even in the driver's float64 mode each
        level, and the coefficients mixed from it and the float64 alpha_bar, carries one float32
        rounding: measured 2e-10 against a 50-digit first step of DPMSolverMultistep), else
        None (its updates run in float64)."""
        return "float32" if hasattr(self.factory(), "sigmas") else None

    def make_grid(self, schedule: Schedule, steps: int):
        from diffusion_oracle.reference.grids import Grid
        from diffusion_oracle.reference.model import ExactModel
        from diffusion_oracle.reference.targets import Gaussian

        probe = ExactModel(Gaussian(np.zeros(1), np.eye(1)), schedule, prediction="v")
        r = run_scheduler(self.factory, probe, np.ones((1, 1)), int(steps), rng=0)
        times = [r.t[0]]
        for t in r.t[1:]:
            if t < times[-1]:  # second stages and ancestral re-noising are not grid nodes
                times.append(t)
        sched = self.factory()
        sched.set_timesteps(int(steps))
        sig = getattr(sched, "sigmas", None)
        if sig is not None and frame_of(sched) != "flow":
            land = float(_np(sig[-1]))  # sigma_EDM where the last step lands
            lam_land = math.inf if land == 0.0 else -2.0 * math.log(land)
        elif sig is not None:
            land = float(_np(sig[-1]))  # flow: t = sigma
            lam_land = math.inf if land == 0.0 else 2.0 * math.log((1.0 - land) / land)
        elif sched.config.get("set_alpha_to_one", True) or not hasattr(
            sched, "final_alpha_cumprod"
        ):
            lam_land = math.inf  # DDIM / DDPM / PNDM: the last step lands on the data
        else:  # final_alpha_cumprod = alphas_cumprod[0]: the last step lands on node n = 1
            lam_land = float(schedule.log_snr(1.0 / schedule.T))
        final_zero = lam_land == math.inf
        if not final_zero:
            t_land = float(schedule.t_from_log_snr(lam_land))
            if t_land < times[-1]:
                times.append(t_land)
        # the scheduler's own timesteps (rounded integers, or interpolated sigmas): not a
        # smooth function of i/N, so orders on it are judged with the rough-grid rule
        grid = Grid(schedule, np.asarray(times), final_zero=final_zero,
                    family=f"{type(sched).__name__} timesteps", refines=False)  # fmt: skip
        self._steps[tuple(np.round(grid.t, 15))] = int(steps)
        return grid

    def __call__(self, model, x_init, grid, *, rng=None):
        key = tuple(np.round(grid.t, 15))
        if key not in self._steps:
            raise ValueError(
                "grid must come from this sampler's make_grid (the scheduler picks its times)"
            )
        return run_scheduler(self.factory, model, x_init, self._steps[key], rng=rng).sample


class ConsistencyModel:
    """The exact consistency model of ``target`` for diffusers' LCMScheduler or TCDScheduler,
    running ``steps`` inference steps of ``factory()``: a model in the sampler protocol
    (x0 prediction, so the driver hands the scheduler the matching epsilon) whose output makes
    the scheduler's denoised value the exact probability-flow map:

    - LCM (Luo et al. 2023, arXiv:2310.04378, Sec. 4, the epsilon parameterization of the
      consistency function; Song et al. 2023, arXiv:2303.01469, Sec. 3, its boundary condition):
      c_skip(k) x_t + c_out(k) x0_hat = F(x_t, t -> 0), the consistency function, with the
      boundary scalings c_skip = sigma_data^2 / ((s k)^2 + sigma_data^2),
      c_out = s k / sqrt((s k)^2 + sigma_data^2), sigma_data = 0.5, s = timestep_scaling;
    - TCD (Zheng et al. 2024, arXiv:2402.19159, Sec. 4, trajectory consistency function and
      strategic stochastic sampling): the trajectory consistency function
      alpha_s x0_hat + sigma_s eps_hat = F(x_t, t -> s), with s = floor((1 - gamma) k_prev)
      the scheduler's intermediate timestep (k_prev the next scheduled timestep, 0 after the
      last) and x_t = alpha_t x0_hat + sigma_t eps_hat.

    F is the exact flow map: closed form for a Gaussian (``exact_flow_gaussian``, so that the
    whole run stays affine for tier 1), ``reference.flow_map`` (DOP853 at ``rtol``) for a
    mixture. With it an exact sampler's output is the data law at every step count."""

    prediction = "x0"

    def __init__(self, target, schedule, factory, steps: int, *, gamma=None, rtol=1e-10):
        import inspect

        sched = factory()
        sched.set_timesteps(positive_int(steps, "steps"))
        kinds = [
            c.__name__
            for c in type(sched).__mro__
            if c.__name__ in ("LCMScheduler", "TCDScheduler")
        ]
        if not kinds:
            raise TypeError(
                f"factory must build an LCMScheduler or TCDScheduler, got {type(sched).__name__}"
            )
        name = kinds[0]
        if not isinstance(schedule, DiscreteSchedule):
            raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
        self.target, self.schedule, self.kind = target, schedule, name[:3].lower()
        self.timesteps = [int(k) for k in sched.timesteps]
        self.scaling = float(sched.config["timestep_scaling"])
        self.gamma = None
        if self.kind == "tcd":  # TCD's step(eta=...) default is the paper's gamma
            default = inspect.signature(type(sched).step).parameters["eta"].default
            self.gamma = float(default if gamma is None else gamma)
        self.rtol = rtol

    def flow(self, x, t, s):
        """The exact PF-ODE map of the target from time t to time s."""
        from diffusion_oracle.reference.exact import exact_flow_gaussian
        from diffusion_oracle.reference.likelihood import flow_map
        from diffusion_oracle.reference.targets import Gaussian

        sch = self.schedule
        if isinstance(self.target, Gaussian):
            A, b = exact_flow_gaussian(self.target, sch.alpha(t), sch.sigma(t), sch.alpha(s),
                                       sch.sigma(s))  # fmt: skip
            return x @ A.T + b
        return flow_map(self.target, sch, x, t, s, rtol=self.rtol, atol=self.rtol)

    def __call__(self, x, t):
        sch = self.schedule
        k = int(round(t * sch.T)) - 1
        a, sg = float(sch.alpha(t)), float(sch.sigma(t))
        if self.kind == "lcm":
            sd, z = 0.5, k * self.scaling
            c_skip, c_out = sd * sd / (z * z + sd * sd), z / math.sqrt(z * z + sd * sd)
            return (self.flow(x, t, 0.0) - c_skip * x) / c_out
        i = self.timesteps.index(k)
        k_prev = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else 0
        t_s = (math.floor((1.0 - self.gamma) * k_prev) + 1) / sch.T
        a_s, s_s = float(sch.alpha(t_s)), float(sch.sigma(t_s))
        F = self.flow(x, t, t_s)
        eps = (a * F - a_s * x) / (a * s_s - a_s * sg)
        return (x - sg * eps) / a
