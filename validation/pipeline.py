"""The pipeline-faithful driver: run a diffusers scheduler the way its pipelines do (issue 20).

A diffusers pipeline runs

    sched.set_timesteps(N, **set_timesteps_kwargs)     # or timesteps= / sigmas= / mu=
    latents = randn * sched.init_noise_sigma           # img2img: strength -> set_begin_index
    for t in sched.timesteps[begin:]:
        out = network(sched.scale_model_input(latents, t), t)
        latents = sched.step(out, t, latents, **step_kwargs).prev_sample

and the network knows nothing but its input and the **label** ``t``. :func:`drive` is that loop,
in the dtype the user runs (float32 as shipped, or float64), with the exact network of
:class:`ExactNetwork` in place of the trained one: it answers at the noise level the label names,
through the documented label -> level map of the configuration (:class:`Convention`):

- **discrete** (the DDPM training table, Ho et al. 2020): label k (fractional between
  entries) names log sigma_VE(k), linear in k between the table's entries, sigma_VE = sqrt((1 -
  alpha_bar_k) / alpha_bar_k); the inverse is diffusers' ``_sigma_to_t``. The network's input is
  x_t = alpha x_0 + sigma eps (VP).
- **flow** (rectified flow, Liu et al. 2023; Esser et al. 2024): label = T sigma (T =
  num_train_timesteps), x_t = (1 - sigma) x_0 + sigma eps.
- **edm** (Karras et al. 2022, Table 1): label c_noise = log(sigma) / 4, input c_in (x_0 + sigma
  eps) with c_in = 1 / sqrt(sigma^2 + sigma_data^2); output F with D = c_skip x + c_out F.

The sample's true level is measured, not read from the scheduler: :func:`probe_levels` runs the
same loop on a point mass with one coordinate per term (the data, the start's noise, each noise
draw), so that every coordinate of the network's input is one coefficient of its law
N(a c, s^2 I) (the schedulers are elementwise and, on a point mass, affine in the noise).
:func:`judge_labels` compares the label with that level, call by call; it is the only place
that verdict is reached.

Where the scheduler, the configuration or this driver raises, a :class:`PipelineError` says who.
"""

from __future__ import annotations

import contextlib
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Convention",
    "ExactNetwork",
    "LevelTrace",
    "MeasuredSampler",
    "Pipeline",
    "PipelineError",
    "PointMassNetwork",
    "drive",
    "judge_labels",
    "distinct_levels",
    "measured_grid",
    "network_convention",
    "probe_levels",
    "sample_frame",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow_prediction")


class PipelineError(RuntimeError):
    """A failure of a pipeline run, with who raised: ``who`` is "scheduler" (a diffusers
    scheduler's constructor, set_timesteps, scale_model_input or step raised, or it produced
    non-finite values), "sampler" (a k-diffusion sampler, its model wrapper or its sigma
    schedule raised), "configuration" (the configuration names a combination with no defined
    meaning, e.g. flow_prediction on a discrete VP schedule) or "diffusion-oracle" (this
    driver: a bug here, never charged to the scheduler or the sampler)."""

    def __init__(self, who: str, message: str, *, where: str = "", call: int | None = None):
        self.who, self.where, self.call = who, where, call
        super().__init__(message)


def _np64(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().to(dtype=_torch().float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _torch():
    import torch

    return torch


# ---------------------------------------------------------------------------------- convention
@dataclass(frozen=True)
class Convention:
    """What a label means to the network of one configuration (module docstring).

    ``path`` "discrete", "flow" or "edm"; ``prediction_type`` what the network returns;
    ``T`` num_train_timesteps; ``log_sigmas`` the training table's log sigma_VE (discrete,
    float64 from the configured betas); ``sigma_data`` (edm); ``integer_labels`` whether the
    scheduler hands the network integer labels (then the best a label can do is the nearest
    integer: half a unit)."""

    path: str
    prediction_type: str
    T: int
    log_sigmas: tuple | None = None
    sigma_data: float | None = None
    integer_labels: bool = False

    @property
    def unit(self) -> str:
        return {"discrete": "training steps", "flow": "units of T sigma",
                "edm": "units of c_noise"}[self.path]  # fmt: skip

    def label_name(self) -> str:
        return {"discrete": "t", "flow": "t", "edm": "c_noise"}[self.path]

    def log_snr(self, label) -> np.ndarray:
        """lambda = log(alpha^2 / sigma^2) of the level the label names (module docstring)."""
        tau = np.asarray(label, dtype=np.float64)
        if self.path == "discrete":
            ls = np.asarray(self.log_sigmas)
            k = np.arange(len(ls), dtype=np.float64)
            # linear in the label between the entries; beyond the ends, the end segments' slope
            log_sig = np.interp(tau, k, ls)
            lo_slope, hi_slope = ls[1] - ls[0], ls[-1] - ls[-2]
            log_sig = np.where(tau < 0, ls[0] + tau * lo_slope, log_sig)
            log_sig = np.where(tau > k[-1], ls[-1] + (tau - k[-1]) * hi_slope, log_sig)
            return -2.0 * log_sig
        if self.path == "flow":
            t = tau / self.T
            with np.errstate(divide="ignore", invalid="ignore"):
                return 2.0 * (np.log1p(-t) - np.log(t))
        return -8.0 * tau  # edm: c_noise = log(sigma) / 4, lambda = -2 log sigma

    def label_of(self, log_snr) -> np.ndarray:
        """The exact (fractional) label naming log-SNR ``log_snr``: the inverse of
        :meth:`log_snr` (diffusers' ``_sigma_to_t`` for the discrete table)."""
        lam = np.asarray(log_snr, dtype=np.float64)
        if self.path == "discrete":
            ls = np.asarray(self.log_sigmas)
            k = np.arange(len(ls), dtype=np.float64)
            log_sig = -0.5 * lam
            tau = np.interp(log_sig, ls, k)
            lo_slope, hi_slope = ls[1] - ls[0], ls[-1] - ls[-2]
            tau = np.where(log_sig < ls[0], (log_sig - ls[0]) / lo_slope, tau)
            return np.where(log_sig > ls[-1], k[-1] + (log_sig - ls[-1]) / hi_slope, tau)
        if self.path == "flow":
            return self.T / (1.0 + np.exp(lam / 2.0))  # T sigma, sigma = 1 / (1 + e^(lam/2))
        return -lam / 8.0

    def ambiguity(self, label) -> float:
        """How far apart (in label units) the two interpolations diffusers uses for a
        fractional label of the discrete table put its level: linear in sigma (the sigma
        schedulers' ``set_timesteps``) and linear in log sigma (``_sigma_to_t``); 0 for integer
        labels and for the continuous paths."""
        if self.path != "discrete":
            return 0.0
        ls = np.asarray(self.log_sigmas)
        tau = float(label)
        k = int(math.floor(tau))
        w = tau - k
        if w == 0.0 or k < 0 or k + 1 >= len(ls):
            return 0.0
        lin = math.log((1 - w) * math.exp(ls[k]) + w * math.exp(ls[k + 1]))
        return abs(lin - ((1 - w) * ls[k] + w * ls[k + 1])) / abs(ls[k + 1] - ls[k])

    def in_range(self, label) -> bool:
        """Whether the label lies in the range the network was trained on."""
        tau = float(label)
        if self.path == "discrete":
            return -1e-6 <= tau <= self.T - 1 + 1e-6
        if self.path == "flow":
            return 0.0 <= tau <= self.T * (1 + 1e-6)
        return True

    def scales(self, log_snr):
        """(a, s) of the network's input frame at log-SNR lambda: x_in = a x_0 + s eps."""
        lam = np.asarray(log_snr, dtype=np.float64)
        if self.path == "discrete":  # VP: a^2 = sigmoid(lambda), s^2 = sigmoid(-lambda)
            return np.exp(-0.5 * np.logaddexp(0.0, -lam)), np.exp(-0.5 * np.logaddexp(0.0, lam))
        if self.path == "flow":  # a = 1 - sigma, s = sigma, sigma = 1 / (1 + e^(lam/2))
            return 1.0 / (1.0 + np.exp(-lam / 2.0)), 1.0 / (1.0 + np.exp(lam / 2.0))
        sig = np.exp(-0.5 * lam)
        c_in = 1.0 / np.sqrt(sig * sig + self.sigma_data**2)
        return c_in, c_in * sig

    def encode(self, x0, eps, u, log_snr):
        """The network's output for the exact (x0, eps) at its input ``u``, believed to be at
        log-SNR ``log_snr``: eps; x0 (sample); v = a eps - s x0 (Salimans & Ho 2022, VP); the
        flow velocity eps - x0 (flow_prediction, d x_t / d sigma); for EDM the raw F with
        D = c_skip x + c_out F (Karras et al. 2022, Table 1; c_out negated for v_prediction)."""
        p = self.prediction_type
        if self.path == "edm":
            sig = float(np.exp(-0.5 * log_snr))
            sd2 = self.sigma_data**2
            x = u * math.sqrt(sig * sig + sd2)  # the VE-frame sample the network believes in
            c_skip = sd2 / (sig * sig + sd2)
            c_out = sig * self.sigma_data / math.sqrt(sig * sig + sd2)
            if p == "v_prediction":
                c_out = -c_out
            return (x0 - c_skip * x) / c_out
        if p == "epsilon":
            return eps
        if p == "sample":
            return x0
        if p == "flow_prediction":
            return eps - x0
        a, s = self.scales(log_snr)
        return float(a) * eps - float(s) * x0

    def describe(self, label) -> str:
        """'t=750 (sigma 5.1)' style name of a label and its level."""
        lam = float(self.log_snr(label))
        if self.path == "flow":
            return f"t={float(label):.4g} (sigma {float(label) / self.T:.4g})"
        sig = math.exp(-0.5 * lam)
        return f"{self.label_name()}={float(label):.4g} (sigma {sig:.4g})"


def diffusers_name(scheduler) -> str:
    """The name of the diffusers class ``scheduler`` is or subclasses (a user's patched
    scheduler keeps its family: FlowMatch, EDM, LCM ...)."""
    for c in type(scheduler).__mro__:
        if c.__module__.startswith("diffusers."):
            return c.__name__
    return type(scheduler).__name__


def _is_flow(scheduler) -> bool:
    name = diffusers_name(scheduler)
    return name.startswith("FlowMatch") or bool(scheduler.config.get("use_flow_sigmas", False))


# configurations that round their float labels to integers by construction (diffusers 0.42:
# KDPM2's Karras timesteps are ``np.array([self._sigma_to_t(sigma, log_sigmas) ...]).round()``
# while its sigmas stay the Karras ones): the quantized-network convention, half a unit
ROUNDED_LABELS = {
    "KDPM2DiscreteScheduler": "use_karras_sigmas",
    "KDPM2AncestralDiscreteScheduler": "use_karras_sigmas",
}


def network_convention(scheduler, reference=None) -> Convention:
    """The :class:`Convention` of ``scheduler``'s configuration: never guessed from its state.
    ``reference`` is its training schedule (:func:`validation.diffusers.training_schedule`),
    whose float64 betas give the discrete table. Raises :class:`PipelineError` (who =
    "configuration") for a prediction_type the path does not define."""
    from diffusion_oracle.reference.schedules import DiscreteSchedule

    from .diffusers import training_schedule

    cfg = scheduler.config
    name = diffusers_name(scheduler)
    ts = getattr(scheduler, "timesteps", None)
    integer = ts is not None and hasattr(ts, "is_floating_point") and not ts.is_floating_point()
    if name in ROUNDED_LABELS and cfg.get(ROUNDED_LABELS[name], False):
        integer = True
    pred = cfg.get("prediction_type", None)
    T = int(cfg.get("num_train_timesteps", 1000))
    if name.startswith("FlowMatch"):
        pred = pred or "flow_prediction"
    pred = pred or "epsilon"
    if pred not in PREDICTION_TYPES:
        raise PipelineError(
            "configuration",
            f"prediction_type must be one of {PREDICTION_TYPES}, got {pred!r}",
            where="config",
        )
    if name.startswith("EDM"):
        if pred not in ("epsilon", "v_prediction"):
            raise PipelineError("configuration", f"EDM preconditioning defines epsilon and "
                                f"v_prediction outputs, not {pred!r}", where="config")  # fmt: skip
        return Convention("edm", pred, T, sigma_data=float(cfg["sigma_data"]),
                          integer_labels=integer)  # fmt: skip
    if _is_flow(scheduler):
        if pred == "v_prediction":
            raise PipelineError(
                "configuration",
                "prediction_type='v_prediction' is defined on variance-preserving paths "
                "(alpha^2 + sigma^2 = 1), not on flow sigmas (alpha = 1 - sigma)",
                where="config",
            )
        return Convention("flow", pred, T, integer_labels=integer)
    if pred == "flow_prediction":
        raise PipelineError(
            "configuration",
            "prediction_type='flow_prediction' needs a flow path (use_flow_sigmas=True or a "
            "FlowMatch scheduler); on a discrete VP schedule the velocity is not defined",
            where="config",
        )
    ref = reference if isinstance(reference, DiscreteSchedule) else training_schedule(scheduler)
    return discrete_convention(ref, pred, integer_labels=integer)


def discrete_convention(schedule, prediction_type: str, *, integer_labels: bool = False):
    """The :class:`Convention` of a network trained on the discrete ``schedule`` (a
    DiscreteSchedule: label k is its node n = k + 1), in ``prediction_type``; the table is
    log sigma_VE = 0.5 log((1 - alpha_bar) / alpha_bar), computed stably as
    0.5 log(expm1(-log alpha_bar)) from the float64 log alpha_bar."""
    lab = np.asarray(schedule.log_alpha_bar[1:], dtype=np.float64)  # node n = k + 1
    with np.errstate(divide="ignore"):
        log_sig = 0.5 * np.log(np.expm1(-lab))
    return Convention("discrete", prediction_type, int(schedule.T), log_sigmas=tuple(log_sig),
                      integer_labels=integer_labels)  # fmt: skip


def sample_frame(scheduler) -> str:
    """The frame of the scheduler's sample: "flow" (x = (1 - sigma) x0 + sigma eps), "ve"
    (x = x0 + sigma eps: the sigma schedulers and EDM) or "vp" (x = alpha x0 + sigma eps)."""
    if _is_flow(scheduler):
        return "flow"
    if diffusers_name(scheduler).startswith("EDM"):
        return "ve"
    ins = float(_np64(getattr(scheduler, "init_noise_sigma", 1.0)))
    return "vp" if ins == 1.0 else "ve"


def frame_scales(frame: str, log_snr: float) -> tuple:
    """(a, s) of x = a x0 + s eps in ``frame`` at log-SNR lambda (+-inf allowed)."""
    lam = float(log_snr)
    if frame == "ve":
        return 1.0, math.exp(-0.5 * lam) if lam > -1400 else math.inf
    if frame == "flow":
        if lam == -math.inf:
            return 0.0, 1.0
        if lam == math.inf:
            return 1.0, 0.0
        return 1.0 / (1.0 + math.exp(-lam / 2.0)), 1.0 / (1.0 + math.exp(lam / 2.0))
    return (math.exp(-0.5 * float(np.logaddexp(0.0, -lam))),
            math.exp(-0.5 * float(np.logaddexp(0.0, lam))))  # fmt: skip


def frame_scale(frame: str, log_snr: float) -> float:
    """a of x = a x0 + s eps in ``frame`` at log-SNR lambda."""
    return frame_scales(frame, log_snr)[0]


def _level_of_sigma(frame: str, sigma: float) -> float:
    """lambda of the scheduler's own sigma (VE sigma, or the flow sigma in the flow frame)."""
    if sigma <= 0:
        return math.inf
    if frame == "flow":
        return 2.0 * (math.log1p(-sigma) - math.log(sigma)) if sigma < 1 else -math.inf
    return -2.0 * math.log(sigma)


# ------------------------------------------------------------------------------------ networks
class ExactNetwork:
    """The Bayes-optimal network in a pipeline: ``net(u, label)`` returns, in the
    configuration's prediction_type, the exact prediction at the level the label names
    (``levels=None``), or at the true level of call i given in ``levels`` (a list of log-SNR:
    the network told the truth, which isolates the algorithm from its labels).

    ``model`` is a sampler-protocol model (``model(x, t)`` in ``model.prediction`` at time t of
    ``model.schedule``, e.g. ExactModel or verify's traced model): the input is rescaled to the
    model's schedule at the same log-SNR (clamped to the schedule's range) and its prediction
    converted exactly to (x0, eps)."""

    def __init__(self, model, convention: Convention, *, levels=None, dtype="float64"):
        from diffusion_oracle.reference.parameterization import model_prediction

        self.model, self.conv, self.levels = model, convention, levels
        self.schedule = model.schedule
        self.pred = model_prediction(model)
        # the model sees its input in the run's dtype; half precisions (no NumPy bfloat16) as
        # float32, their rounding already in the values the scheduler handed over
        self.dtype = np.dtype(dtype if dtype in ("float32", "float64") else "float32")
        self.lo, self.hi = self.schedule.log_snr_range()
        self.times: list = []

    def __call__(self, u, label, i):
        from diffusion_oracle.reference.parameterization import to_x0_eps

        sch, conv = self.schedule, self.conv
        lam = float(conv.log_snr(label)) if self.levels is None else float(self.levels[i])
        a_net, _ = conv.scales(lam)
        lam_c = min(max(lam, self.lo), self.hi)
        t = float(sch.t_from_log_snr(lam_c))
        a_r, s_r = float(sch.alpha(t)), float(sch.sigma(t))
        x = u * (a_r / float(a_net)) if a_net > 0 else u
        if a_r == 0.0:
            # pure noise (flow sigma = 1, zero terminal SNR): x carries no information on x0,
            # E[x0 | x] is the data mean and eps = x / sigma; the model is still called (counted)
            self.model(x.astype(self.dtype, copy=False), t)
            target = self.model.target
            mean = target.mean() if callable(getattr(target, "mean", None)) else target.mean_vec
            x0 = np.broadcast_to(np.asarray(mean, dtype=np.float64), u.shape)
            self.times.append(t)
            return conv.encode(x0, x / s_r, u, lam)
        # the model sees the input in the run's dtype (what verify's tracing reads as the
        # sampler's precision); its arithmetic is the model's own (float64)
        x_in = x.astype(self.dtype, copy=False)
        kw = {}
        if self.pred == "velocity":
            kw = {"d_alpha": sch.d_alpha(t), "d_sigma": sch.d_sigma(t)}
        pred = np.asarray(self.model(x_in, t), dtype=np.float64)
        x0, eps = to_x0_eps(pred, source=self.pred, x_t=np.asarray(x_in, np.float64), alpha=a_r,
                            sigma=s_r, **kw)  # fmt: skip
        self.times.append(t)
        return conv.encode(x0, eps, u, lam)


class PointMassNetwork:
    """The exact network of the point mass at ``c`` for :func:`probe_levels`: x0_hat = c and
    eps_hat = (u - a c) / s, elementwise. With ``oracle=True`` (a, s) is the true level of the
    input, read off the probe's coordinates (a = u_0 / c_0, s = |u_1..|): a network that is
    told the truth whatever the label, so that the levels the scheduler's algorithm produces
    are measured independently of its labels; otherwise (a, s) is the label's level."""

    def __init__(self, convention: Convention, c, *, oracle: bool = True):
        self.conv, self.c, self.oracle = convention, np.asarray(c, dtype=np.float64), oracle

    def __call__(self, u, label, i):
        conv = self.conv
        if self.oracle:
            a = float(u[..., 0].ravel()[0]) / float(self.c[0])
            s = float(np.sqrt(np.sum(u[..., 1:] ** 2)))
            with np.errstate(divide="ignore"):
                lam = 2.0 * (math.log(a) if a > 0 else -math.inf) - 2.0 * (
                    math.log(s) if s > 0 else -math.inf)  # fmt: skip
        else:
            lam = float(conv.log_snr(label))
            a, s = (float(v) for v in conv.scales(lam))
        x0 = np.broadcast_to(self.c, u.shape)
        eps = (u - a * x0) / s if s > 0 else np.zeros_like(u)
        return conv.encode(x0, eps, u, lam)


# ------------------------------------------------------------------------------------ the loop
# float32 as shipped; float64 upcast (a diagnostic); float16 / bfloat16: the latents and the
# network's output in half precision, as half-precision pipelines run them (the scheduler's
# tables stay as shipped)
RUN_DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclass(frozen=True)
class Pipeline:
    """What a pipeline passes a scheduler: ``set_timesteps`` keyword arguments (custom
    ``timesteps``/``sigmas``, ``mu`` for dynamic shifting; with custom timesteps or sigmas the
    step count comes from them), ``step`` keyword arguments (``eta``, ``s_churn``, ...;
    ``generator`` is replaced by the driver's noise), ``strength`` (img2img: the run starts at
    ``timesteps[N - int(N strength)]`` and ``set_begin_index`` is called, as in diffusers'
    img2img pipelines), ``begin_index`` (a start index directly) and ``dtype`` ("float32" as
    shipped, or "float64": every floating tensor of the scheduler upcast, its betas replaced by
    the float64 reference's; "float16" / "bfloat16": half-precision latents and outputs)."""

    set_timesteps: dict = field(default_factory=dict)
    step: dict = field(default_factory=dict)
    strength: float | None = None
    begin_index: int | None = None
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in RUN_DTYPES:
            raise ValueError(f"dtype must be one of {RUN_DTYPES}, got {self.dtype!r}")
        if self.strength is not None and not 0.0 < float(self.strength) <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {self.strength!r}")
        if self.begin_index is not None and (
            not isinstance(self.begin_index, int) or self.begin_index < 0
        ):
            raise ValueError(f"begin_index must be an int >= 0, got {self.begin_index!r}")
        if self.strength is not None and self.begin_index is not None:
            raise ValueError("pass strength or begin_index, not both")
        for k in ("set_timesteps", "step"):
            if not isinstance(getattr(self, k), dict):
                raise TypeError(f"{k} must be a dict of keyword arguments")

    def key(self):
        return (repr(sorted(self.set_timesteps.items())), repr(sorted(self.step.items())),
                self.strength, self.begin_index, self.dtype)  # fmt: skip


@contextmanager
def _noise(scheduler, draw):
    """Answer the scheduler module's ``randn_tensor`` with ``draw(shape, dtype)``."""
    # the module of the diffusers class the scheduler is (or subclasses): its step draws there
    mods = [c.__module__ for c in type(scheduler).__mro__ if c.__module__.startswith("diffusers.")]
    mod = sys.modules[mods[0] if mods else type(scheduler).__module__]
    saved = getattr(mod, "randn_tensor", None)

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return draw(tuple(shape), dtype)

    if saved is not None:
        mod.randn_tensor = randn_tensor
    try:
        yield
    finally:
        if saved is not None:
            mod.randn_tensor = saved


def _scheduler_call(what, fn, *args, call=None, label=None, dtype="", **kwargs):
    try:
        return fn(*args, **kwargs)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - the scheduler's fault, named
        at = "" if call is None else f" at call {call}"
        lab = "" if label is None else f", label {label:g}"
        raise PipelineError(
            "scheduler", f"the scheduler raised {type(exc).__name__} in {what}{at}{lab} "
            f"({dtype}): {exc}"[:400], where=what, call=call,
        ) from exc  # fmt: skip


def prepare(factory, steps, pipe: Pipeline, reference=None):
    """A fresh scheduler with set_timesteps done in ``pipe.dtype`` (float64: every floating
    tensor upcast before and after, the discrete betas replaced by the reference's), and the
    labels of the run (from the begin index on)."""
    from .diffusers import _keep_float64, _upcast

    sched = _scheduler_call("the constructor", factory, dtype=pipe.dtype)
    name = type(sched).__name__
    kw = dict(pipe.set_timesteps)
    custom = any(kw.get(k) is not None for k in ("timesteps", "sigmas"))
    args = () if custom else (int(steps),)

    def st():
        return sched.set_timesteps(*args, **kw)

    if pipe.dtype == "float64":
        _upcast(sched, reference)
        with _keep_float64():
            _scheduler_call(f"{name}.set_timesteps", st, dtype=pipe.dtype)
        _upcast(sched)
    else:
        _scheduler_call(f"{name}.set_timesteps", st, dtype=pipe.dtype)
    ts = list(sched.timesteps)
    begin = 0
    order = int(getattr(sched, "order", 1) or 1)
    if pipe.strength is not None:
        # diffusers' get_timesteps: num_inference_steps (the requested N; with custom
        # timesteps or sigmas retrieve_timesteps sets it to len(scheduler.timesteps))
        n = len(ts) if custom else int(steps)
        init = min(int(n * float(pipe.strength)), n)
        begin = max(n - init, 0) * order
    elif pipe.begin_index is not None:
        begin = pipe.begin_index
    if begin or pipe.strength is not None or pipe.begin_index is not None:
        # img2img / inpainting get_timesteps call set_begin_index whatever the start (0 too)
        if begin >= len(ts):
            raise ValueError(f"begin_index must be below the {len(ts)} timesteps, got {begin}")
        if hasattr(sched, "set_begin_index"):
            _scheduler_call(f"{name}.set_begin_index", sched.set_begin_index, begin,
                            dtype=pipe.dtype)  # fmt: skip
    return sched, ts[begin:], begin


def start_level(sched, labels, begin, conv: Convention) -> float:
    """lambda where the run starts: the scheduler's sigma at the begin index where it keeps a
    sigma table (the level its init_noise_sigma and first step assume), else the level the
    first label names (DDIM, DDPM, PNDM: the integer timestep is the level)."""
    sig = getattr(sched, "sigmas", None)
    frame = sample_frame(sched)
    if hasattr(sched, "initial_alpha_cumprod") and begin == 0:
        # DDIM inversion: its first step starts where initial_alpha_cumprod says (1: the data)
        ab = float(_np64(sched.initial_alpha_cumprod))
        return math.inf if ab >= 1.0 else math.log(ab) - math.log1p(-ab)
    if inference_sigmas(sched) and len(sig) > begin:
        return _level_of_sigma(frame, float(_np64(sig[begin])))
    return float(conv.log_snr(float(_np64(labels[0]))))


def inference_sigmas(sched) -> bool:
    """Whether ``sched.sigmas`` is the table of the inference run (a level per timestep and
    the final one; two-stage schedulers interleave theirs: up to 2 per timestep and 2 more)
    rather than the training table: diffusers before 0.22 kept all T training sigmas in the
    multistep solvers' ``sigmas`` and read the run's levels from alphas_cumprod at the integer
    timesteps."""
    sig = getattr(sched, "sigmas", None)
    ts = getattr(sched, "timesteps", None)
    if sig is None or ts is None:
        return False
    return len(sig) <= 2 * len(ts) + 2


@dataclass
class Drive:
    """One run of the loop: the final ``sample`` (the scheduler's frame, float64 copy, and
    ``raw`` in the run's dtype), per call the ``labels`` and the network ``inputs`` (float64),
    ``calls``, the run's ``dtype``, and the prepared scheduler."""

    sample: np.ndarray
    raw: object
    labels: list
    inputs: list
    calls: int
    dtype: str
    scheduler: object
    begin: int


def drive(factory, network, sample0, steps, pipe: Pipeline, *, draw=None, reference=None,
          keep_inputs=False, prepared=None, after_step=None) -> Drive:  # fmt: skip
    """The pipeline loop (module docstring) from ``sample0`` (the scheduler's frame, NumPy),
    with ``network(u, label, i)`` answering each call and ``draw(shape, dtype)`` every noise
    draw of the scheduler's module. ``after_step(i, scheduler, labels, sample)``, when given,
    returns the latents the loop continues with after step i (an inpainting pipeline's blend
    with the known region, :mod:`validation.checks.inpainting`). Raises
    :class:`PipelineError` naming who failed."""
    torch = _torch()
    tdt = getattr(torch, pipe.dtype)
    sched, labels, begin = prepared or prepare(factory, steps, pipe, reference)
    name = type(sched).__name__
    x0 = np.asarray(sample0, dtype=np.float64)
    flat = x0.shape
    # latents as pipelines hand them over: (batch, channels, height, width); a point of R^d is
    # d channels of a 1 x 1 image (diffusers before 0.22 einsum over 'bchw' in UniPC)
    sample = torch.from_numpy(x0.reshape(flat + (1, 1))).to(tdt)
    inputs = []
    from .diffusers import _keep_float64

    precision = _keep_float64() if pipe.dtype == "float64" else contextlib.nullcontext()
    noise = _noise(sched, draw) if draw is not None else contextlib.nullcontext()
    # the driver's draws replace the generator; without them a given generator is passed on
    step_kw = {k: v for k, v in pipe.step.items() if k != "generator" or draw is None}
    with noise, precision:
        for i, t in enumerate(labels):
            label = float(_np64(t))
            u = sample
            if hasattr(sched, "scale_model_input"):
                u = _scheduler_call(f"{name}.scale_model_input", sched.scale_model_input, sample,
                                    t, call=i, label=label, dtype=pipe.dtype)  # fmt: skip
            u64 = _np64(u).reshape(flat)
            if not np.isfinite(u64).all():
                raise PipelineError(
                    "scheduler", f"the scheduler handed the network non-finite values at call "
                    f"{i}, label {label:g} ({pipe.dtype})", where="sample", call=i,
                )  # fmt: skip
            if keep_inputs:
                inputs.append(u64)
            try:
                out = network(u64, label, i)
            except PipelineError:
                raise
            except Exception as exc:  # noqa: BLE001 - ours, never the scheduler's
                raise PipelineError(
                    "diffusion-oracle", f"the exact network of diffusion-oracle raised "
                    f"{type(exc).__name__} at call {i}, label {label:g}: {exc}"[:400],
                    where="network", call=i,
                ) from exc  # fmt: skip
            out_t = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float64).reshape(
                flat + (1, 1))).to(u.dtype)  # fmt: skip
            res = _scheduler_call(f"{name}.step", sched.step, out_t, t, sample, call=i,
                                  label=label, dtype=pipe.dtype, **step_kw)  # fmt: skip
            sample = res.prev_sample if hasattr(res, "prev_sample") else res[0]
            if after_step is not None:
                sample = after_step(i, sched, labels, sample)
    out = _np64(sample).reshape(flat)  # non-finite values are returned: the callers report them
    return Drive(out, sample, [float(_np64(t)) for t in labels], inputs, len(labels),
                 pipe.dtype, sched, begin)  # fmt: skip


# ----------------------------------------------------------------------------- the level probe
@dataclass
class LevelTrace:
    """The measured levels of one probe run: per call the ``labels``, the network input's true
    (a_in, s_in) and its log-SNR ``lam_in``; the output's (a_end, s_end); ``frame``;
    ``available`` False with ``why`` when the probe cannot measure (noise it cannot intercept,
    more noise draws than slots)."""

    steps: int
    labels: list
    a_in: np.ndarray
    s_in: np.ndarray
    a_end: float
    s_end: float
    dtype: str
    convention: Convention
    integer_labels: bool
    available: bool = True
    why: str = ""
    sigma_table: bool = False  # the scheduler keeps a float32 sigma table
    frame: str = "vp"
    consistency: bool = False  # LCM / TCD: a consistency-model step
    stochastic: bool = False  # the run adds noise (ancestral / SDE steps): measured
    ancestral_dtype: str = "float32"  # where sigma_up / sigma_down are formed (diffusers: float32)
    table_rel: float = 2.0**-24  # relative rounding of each level of the sigma table

    @property
    def lam_in(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 2.0 * (np.log(self.a_in) - np.log(self.s_in))

    @property
    def lam_end(self) -> float:
        if self.s_end <= 0:
            return math.inf
        if self.a_end <= 0:  # pure noise (flow sigma = 1)
            return -math.inf
        return 2.0 * (math.log(self.a_end) - math.log(self.s_end))


PROBE_C = 0.5  # the point mass's coordinate: inside every clip_sample range
PROBE_TINY = 1e-30  # the start's noise coefficient at a start on the data (float32-normal)
CONSISTENCY = ("LCMScheduler", "TCDScheduler")


class PointMassProbe:
    """The coordinates of the point-mass probe of a run of ``calls`` network calls: 0 the data
    (x0 = PROBE_C), 1 the start's noise, 2 + j the j-th noise draw (``draw(shape, dtype)``
    hands out one-hot draws and counts them in ``used``); :meth:`trace` reads the levels off
    the runs (each a result with ``inputs``, ``labels``, ``sample``)."""

    def __init__(self, calls: int):
        self.slots = 2 + 4 * int(calls) + 8
        self.c = np.zeros(self.slots)
        self.c[0] = PROBE_C
        self.used = 0

    def draw(self, shape, dtype):
        """A one-hot draw of ``shape`` ((1, slots) or the latents' (1, slots, 1, 1))."""
        torch = _torch()
        j = self.used
        self.used += 1
        z = torch.zeros(shape, dtype=dtype or torch.float32)
        flat = z.view(shape[0], -1)
        if 2 + j < flat.shape[-1]:
            flat[..., 2 + j] = 1.0
        return z

    def trace(self, runs, steps, dtype, conv, who, noise_where, **kw) -> LevelTrace:
        """The :class:`LevelTrace` of ``runs`` (the same run under two torch seeds: if they
        differ, ``who`` draws noise outside ``noise_where`` and the levels are not read)."""
        r = runs[0]
        ins = np.stack([u[0] for u in r.inputs]) if r.inputs else np.zeros((0, self.slots))
        a_end = float(r.sample[0, 0] / PROBE_C)
        s_end = float(np.sqrt(np.sum(r.sample[0, 1:] ** 2)))
        trace = LevelTrace(int(steps), list(r.labels), ins[:, 0] / PROBE_C,
                           np.sqrt(np.sum(ins[:, 1:] ** 2, axis=1)), a_end, s_end, dtype, conv,
                           conv.integer_labels, **kw)  # fmt: skip
        # noise that reaches the sample (a draw that is multiplied by zero, as k-diffusion's
        # sample_euler without churn does, is not a stochastic step)
        weight = max(float(np.abs(ins[:, 2:]).max(initial=0.0)),
                     float(np.abs(r.sample[0, 2:]).max(initial=0.0)))  # fmt: skip
        trace.stochastic = weight > 0.0
        if self.used + 2 > self.slots:
            trace.available = False
            trace.why = f"{self.used} noise draws, more than the probe's slots"
        elif not np.array_equal(runs[0].sample, runs[1].sample, equal_nan=True):
            trace.available = False
            trace.why = (f"{who} draws noise outside {noise_where} (e.g. a Brownian tree): its "
                         "levels cannot be read from one probe run")  # fmt: skip
        return trace


def probe_levels(factory, steps, pipe: Pipeline, *, reference=None) -> LevelTrace:
    """Measure the true level of every network input of a run of ``steps`` (module docstring).
    Coordinates: 0 the data (x0 = PROBE_C), 1 the start's noise, 2 + j the j-th noise draw.
    Run twice under different torch seeds: noise not drawn through the module's randn_tensor
    (torchsde's Brownian tree) makes the runs differ, and the probe says it cannot measure."""
    torch = _torch()
    sched, labels, begin = prepare(factory, steps, pipe, reference)
    conv = network_convention(sched, reference)
    frame = sample_frame(sched)
    lam0 = start_level(sched, labels, begin, conv)
    a0, s0 = frame_scales(frame, lam0)
    # a start at the data keeps a trace of noise, so that the oracle network reads the noise
    # direction (eps = e) and the levels of an inversion are observable from the first step
    s0 = max(s0, PROBE_TINY)
    probe = PointMassProbe(len(labels))
    x = np.zeros((1, probe.slots))
    x[0, 0], x[0, 1] = a0 * PROBE_C, s0
    runs = []
    for seed in (0, 1):
        probe.used = 0
        torch.manual_seed(seed)
        runs.append(drive(factory, PointMassNetwork(conv, probe.c), x, steps, pipe,
                          draw=probe.draw, reference=reference, keep_inputs=True,
                          prepared=prepare(factory, steps, pipe, reference)))  # fmt: skip
    return probe.trace(runs, steps, pipe.dtype, conv, "the scheduler", "its module's randn_tensor",
                       sigma_table=inference_sigmas(sched), frame=frame,
                       consistency=diffusers_name(sched) in CONSISTENCY)  # fmt: skip


def measured_grid(trace: LevelTrace, schedule, family: str):
    """The reference grid of the levels a traced run really goes through: the first input's
    level, then each later input that lies further along beyond :func:`probe_tolerance`
    (second stages and ancestral re-noising are not nodes), then where the output lands: the
    data (``final_zero``: sigma = 0, or a level above the schedule's range, what a float32
    table leaves of sigma = 0) or a last node. The labels are rounded integers or interpolated
    sigmas, not a smooth function of i/N, so the grid does not refine (orders on it are judged
    with the rough-grid rule)."""
    from diffusion_oracle.reference.grids import Grid

    lo, hi = schedule.log_snr_range()

    def t_of(lam):
        return float(schedule.t_from_log_snr(min(max(float(lam), lo), hi)))

    lams = [float(v) for v in trace.lam_in]
    times, last = [t_of(lams[0])], lams[0]
    for i, lam in enumerate(lams[1:], start=1):
        # a level is a new node only beyond the probe's rounding of the last one: a two-stage
        # method's second stage and the next step's first stage are the same level
        if lam > last + probe_tolerance(trace, i) and t_of(lam) < times[-1]:
            times.append(t_of(lam))
            last = lam
    s_path = max((frame_scales(trace.frame, float(v))[1] for v in trace.lam_in), default=1.0)
    u = np.finfo(np.float32 if trace.dtype == "float32" else np.float64).eps / 2
    s_floor = 64.0 * u * (len(trace.labels) + 1) * min(s_path, 1e30)  # rounding of sigma = 0
    final_zero = trace.s_end <= s_floor or trace.lam_end >= hi
    if not final_zero:
        t_land = t_of(trace.lam_end)
        if t_land < times[-1]:
            times.append(t_land)
    return Grid(schedule, np.asarray(times), final_zero=final_zero, family=family,
                refines=False)  # fmt: skip


class MeasuredSampler:
    """What the pipeline samplers (:class:`validation.diffusers.SchedulerSampler`,
    :class:`validation.k_diffusion.WrapperSampler`) share around their level probe: a subclass
    gives ``trace(schedule, steps)`` (the cached :class:`LevelTrace`), ``grid_family``,
    ``inverse`` and ``_stochastic`` (declared, or None), ``stochastic_schedule()`` (the schedule a
    4-step probe runs on) and ``_steps = {}``; this class turns the traces into verify's grid,
    distinct-level count, label check and measured stochasticity."""

    inverse = False

    @property
    def stochastic(self) -> bool:
        """Whether a run adds noise: as declared, or (``stochastic=None``) measured by the
        level probe (noise that reaches the sample) in a 4-step run."""
        if self._stochastic is None:
            try:
                self._stochastic = self.trace(self.stochastic_schedule(), 4).stochastic
            except Exception:  # noqa: BLE001 - a sampler that raises is reported by verify
                return False
        return bool(self._stochastic)

    def make_grid(self, schedule, steps: int):
        """The grid of the levels a run of ``steps`` really goes through (:func:`measured_grid`)."""
        grid = measured_grid(self.trace(schedule, steps), schedule, self.grid_family)
        self._steps[tuple(np.round(grid.t, 15))] = int(steps)
        return grid

    def steps_of(self, grid) -> int:
        """The step count that produced ``grid`` (ValueError for any other grid)."""
        key = tuple(np.round(grid.t, 15))
        if key not in self._steps:
            raise ValueError("grid must come from this sampler's make_grid (the scheduler or "
                             "the sampler's sigmas pick its times)")  # fmt: skip
        return self._steps[key]

    def distinct_levels(self, schedule, steps: int) -> int:
        """The distinct levels the network's input is at in a run of ``steps`` (measured):
        what verify's model-calls check counts for a pipeline sampler."""
        return distinct_levels(self.trace(schedule, steps))

    def checks(self, schedule, steps) -> list:
        """The judged pipeline checks verify adds: the label/level check over ``steps``."""
        return [judge_labels([self.trace(schedule, n) for n in steps], inverse=self.inverse)]


# ------------------------------------------------------------------------------ the judgement
def probe_tolerance(trace: LevelTrace, i: int) -> float:
    """How far (in log-SNR) two measurements of the same level may differ at call i: the
    probe's coordinates evolve multiplicatively (a point mass keeps the data and each noise
    term on its own coordinate, so no term cancels against another), relative LAMBDA u per
    operation, four per call, on a and s."""
    from diffusion_oracle.verification.tolerances import LAMBDA, unit_roundoff

    return LAMBDA * 4.0 * unit_roundoff(trace.dtype) * (i + 3)


def distinct_levels(trace: LevelTrace) -> int:
    """The number of distinct levels the network's input was at (levels equal within
    :func:`probe_tolerance` counted once)."""
    lams = sorted(float(v) for v in trace.lam_in)
    tol = probe_tolerance(trace, len(lams))
    count, last = 0, None
    for lam in lams:  # -inf (pure noise) and +inf (the data) are levels too
        if last is None or (lam > last + tol if math.isfinite(last) else lam != last):
            count, last = count + 1, lam
    return count


def level_tolerance(trace: LevelTrace, i: int) -> float:
    """How far (in log-SNR) the measured level of call i may sit from the level of a correct
    label through rounding alone. Each term is a probabilistic rounding bound (independent
    roundings add in quadrature, LAMBDA times: Higham & Mary 2019, SIAM J. Sci. Comput. 41(5),
    Thm. 2.4, as :mod:`verification.tolerances`), on the probe's coordinates (a point mass keeps
    the data and each noise term on its own coordinate, so each is rounded relative to its own
    history, never against another term):

    - the run's arithmetic, u per operation, four per call: the data coordinate known to
      u sqrt(4 sum_j a_j^2 + 12 a_i^2) and the noise to u sqrt(4 sum_j s_j^2 + 12 s_i^2)
      (absolute: an epsilon-type update x + eps (sigma' - sigma) carries an absolute error
      down to smaller sigmas), lambda = 2 log(a / s) to twice their relative sizes;
    - the step coefficients, formed in the run's dtype: relative u / h on a step of h in
      half-log-SNR (e^-h - 1 and the multistep divided differences), on the whole state (an
      implementation whose weights are worse conditioned, as DEIS's differences of O(rho log
      rho / h) terms in float32, drifts beyond it: a finding, not covered);
    - the scheduler's float32 sigma table: each level rounded once (``table_rel``: u32 for
      diffusers' float64-built tables; k-diffusion builds Karras sigmas in float32, 4 rho u32),
      twice that in lambda (divided by 1 - sigma for flow sigmas): a level off the training
      table's end by that much has its label clamped;
    - a run that adds noise (ancestral, SDE): each re-noising lands at sqrt(sigma_down^2 +
      sigma_up^2) of rounded values, an absolute offset of 2 u_anc sigma_to that later
      epsilon-type moves carry (u_anc the precision sigma_up / sigma_down are formed in:
      float32 tables in diffusers, the run's dtype in k-diffusion);
    - run in float32 on a discrete table, its float32 alpha_bar (a cumulative product of k + 1
      factors: relative sqrt(k + 2) u32 in alpha_bar, divided by 1 - alpha_bar in lambda)."""
    from diffusion_oracle.verification.tolerances import LAMBDA, unit_roundoff

    conv = trace.convention
    u, u32 = unit_roundoff(trace.dtype), unit_roundoff("float32")
    lam = float(trace.lam_in[i]) if i < len(trace.labels) else trace.lam_end
    path = [float(v) for v in trace.lam_in[: i + 1]]
    if i >= len(trace.labels):
        path.append(lam)
    scales = [frame_scales(trace.frame, v) if math.isfinite(v) else (1.0, 1.0) for v in path]
    a_i, s_i = scales[-1]
    tol = 0.0
    if a_i > 0 and s_i > 0:
        da = u * math.sqrt(4.0 * sum(a * a for a, _ in scales) + 12.0 * a_i * a_i)
        ds = u * math.sqrt(4.0 * sum(s * s for _, s in scales) + 12.0 * s_i * s_i)
        tol += 2.0 * (da / a_i + ds / s_i)
    # the step coefficients, formed in the run's dtype: exponential-integrator and multistep
    # weights (e^-h - 1, their divided differences) know themselves to ~u / h on a step of
    # h in half-log-SNR, and they multiply the whole state: relative u sqrt(sum (2 / h_j)^2)
    fin = [v for v in path if math.isfinite(v)]
    steps_h = [max(abs(b - a) / 2.0, math.sqrt(u)) for a, b in zip(fin[:-1], fin[1:])
               if abs(b - a) > 0.0]  # fmt: skip
    if steps_h:
        tol += 2.0 * u * math.sqrt(sum((2.0 / h) ** 2 for h in steps_h))
    if trace.sigma_table:
        rel = trace.table_rel
        if conv.path == "flow" and math.isfinite(lam):
            tol += 2.0 * rel / max(1.0 / (1.0 + math.exp(-lam / 2.0)), u32)
        else:
            tol += 2.0 * rel
    if trace.stochastic and s_i > 0 and len(scales) > 1:
        u_anc = unit_roundoff(trace.ancestral_dtype)
        tol += 2.0 * 2.0 * u_anc * math.sqrt(sum(s * s for _, s in scales[:-1])) / s_i
    if conv.path == "discrete" and trace.dtype == "float32" and math.isfinite(lam):
        one_minus_ab = math.exp(-float(np.logaddexp(0.0, lam)))  # sigmoid(-lambda)
        k = max(float(trace.labels[min(i, len(trace.labels) - 1)]), 0.0)
        tol += u32 * math.sqrt(k + 2.0) / max(one_minus_ab, u32)
    return LAMBDA * tol


def label_tolerance(trace: LevelTrace, i: int, lam: float | None = None) -> float:
    """How far (in label units) the label of call i may sit from the exact label of the
    level ``lam`` (default: the measured level of call i): :func:`level_tolerance` through
    d label / d lambda, the label's own rounding (stored float32), and half a unit where the
    scheduler hands the network integer labels, or rounds them by construction
    (:data:`ROUNDED_LABELS`) (the nearest integer is the best an integer label can say; a
    truncated label is off by up to one unit and fails). Within that, the
    effect of the rounded label on the output is what verify's tiers judge, since the exact
    network answers at the label's level."""
    from diffusion_oracle.verification.tolerances import LAMBDA, unit_roundoff

    conv = trace.convention
    lam = float(trace.lam_in[i]) if lam is None else float(lam)
    h = 1e-4
    if math.isfinite(lam):
        slope = abs(float(conv.label_of(lam + h) - conv.label_of(lam - h))) / (2 * h)
    else:
        slope = 0.0
    tol = slope * level_tolerance(trace, i)
    tol += LAMBDA * unit_roundoff("float32") * abs(float(trace.labels[i])) + 1e-9
    tol += conv.ambiguity(trace.labels[i])
    if trace.integer_labels:
        tol += 0.5
    return tol


def judge_labels(traces, *, inverse: bool = False):
    """The label/level check (the one place its verdict is reached): at every call of every
    traced run, the label must name the true level of the network's input (within
    :func:`label_tolerance`) and the input must be scaled as the network expects at that level
    (relative LAMBDA u per operation). Inversion schedulers may instead label every call with
    the level the step goes to (DDIM inversion's convention: "model at the destination level");
    the verdict says which convention the runs follow. Returns a verify ``Check``."""
    from diffusion_oracle.verification.report import Check, Verdict
    from diffusion_oracle.verification.tolerances import LAMBDA, unit_roundoff

    name = "labels name the sample's level"
    traces = list(traces)
    missing = [t for t in traces if not t.available]
    traces = [t for t in traces if t.available]
    if not traces:
        why = missing[0].why if missing else "no run"
        return Check(name, Verdict.SKIPPED, f"levels not measurable: {why}")
    conventions = ("current",) + (("destination",) if inverse else ())
    worst = {}
    first_bad = {}
    for conv_name in conventions:
        worst[conv_name], first_bad[conv_name] = 0.0, None
        for tr in traces:
            conv = tr.convention
            lam_in = tr.lam_in
            for i, label in enumerate(tr.labels):
                if conv_name == "current":
                    lam_true = lam_in[i]
                else:  # the level after the step: the next call's input, or the output's
                    lam_true = lam_in[i + 1] if i + 1 < len(tr.labels) else tr.lam_end
                exact = float(conv.label_of(lam_true))
                diff = float(label) - exact
                tol = label_tolerance(tr, i, lam_true)
                worst[conv_name] = max(worst[conv_name], abs(diff) / tol)
                if abs(diff) > tol and first_bad[conv_name] is None:
                    first_bad[conv_name] = (tr, i, label, exact, diff, tol, lam_true)
    # the input's scale at its own level (scale_model_input): a_in against a(lambda_in)
    scale_bad = None
    for tr in traces:
        if tr.consistency:  # the step mixes c_skip x into the next sample: off any marginal
            continue
        if tr.frame == "vp":
            # the network's input is the sample itself (scale_model_input is the identity):
            # nothing scales it, and its drift off alpha^2 + sigma^2 = 1 is the step's float32
            # arithmetic (DEIS forms its weights as differences of O(rho log rho / h) terms)
            continue
        a_exp, s_exp = tr.convention.scales(tr.lam_in)
        u = unit_roundoff(tr.dtype)
        for i in range(len(tr.labels)):
            size = math.hypot(float(a_exp[i]), float(s_exp[i]))
            rel = abs(tr.a_in[i] - float(a_exp[i])) / size
            if rel > LAMBDA * u * (2 * (i + 1) + 4) + level_tolerance(tr, i) / 2:
                scale_bad = scale_bad or (tr, i, rel)
    # an inversion goes from the data to the noise: its levels must fall in log-SNR
    wrong_way = None
    if inverse:
        for tr in traces:
            lams = np.append(tr.lam_in, tr.lam_end)
            if np.any(np.diff(lams) > 0):
                wrong_way = wrong_way or tr
    ok = [c for c in conventions if first_bad[c] is None]
    ev = {
        "steps": [t.steps for t in traces],
        "worst_over_tolerance": {c: worst[c] for c in conventions},
        "integer_labels": any(t.integer_labels for t in traces),
    }
    label_first = first_bad["current"]
    if inverse and any(first_bad[c] is None for c in conventions):
        label_first = None
    if scale_bad is not None and label_first is not None and (
        label_first[0].steps, label_first[1]) <= (scale_bad[0].steps, scale_bad[1]):  # fmt: skip
        scale_bad = None  # the label fault comes first; the scale follows from it
    if scale_bad is not None:
        tr, i, rel = scale_bad
        return Check(
            name, Verdict.FAIL,
            f"N = {tr.steps}, call {i}: the network's input is scaled {rel:.2e} (relative) off "
            f"what the network expects at the sample's level (label "
            f"{tr.convention.describe(tr.labels[i])}): scale_model_input does not match the "
            "level", evidence=ev,
        )  # fmt: skip
    if wrong_way is not None:
        tr = wrong_way
        sig = [tr.convention.describe(x) for x in (tr.labels[0], tr.labels[-1])]
        return Check(
            name, Verdict.FAIL,
            f"N = {tr.steps}: an inversion must move the sample from the data towards the "
            f"noise, but its levels rise in log-SNR (calls from {sig[0]} to {sig[1]}; output "
            f"at log-SNR {tr.lam_end:.3g}): it runs towards the data", evidence=ev,
        )  # fmt: skip
    if ok:
        quant = " (integer labels: within half a unit)" if ev["integer_labels"] else ""
        conv_txt = ""
        if inverse:
            conv_txt = ("; inversion convention: model at the " + ok[0] + " level"
                        + (" (also the other)" if len(ok) > 1 else ""))  # fmt: skip
        ev["convention"] = ok[0]
        return Check(
            name, Verdict.PASS,
            f"at every call of N = {', '.join(str(t.steps) for t in traces)} the label names "
            f"the measured level of the network's input{quant}; worst "
            f"{worst[ok[0]]:.2g} of the tolerance{conv_txt}", evidence=ev,
        )  # fmt: skip
    tr, i, label, exact, diff, tol, lam_true = first_bad["current"]
    conv = tr.convention
    sig_true = math.exp(-0.5 * lam_true) if conv.path != "flow" else float(
        1.0 / (1.0 + math.exp(lam_true / 2.0)))  # fmt: skip
    rep = [j for j in range(1, len(tr.labels)) if tr.labels[j] == tr.labels[j - 1]]
    hint = f"; label repeated at calls {rep[:4]}" if rep and not inverse else ""
    if not conv.in_range(exact):
        hint += ("; that level lies outside the network's training range (the label is "
                 "clamped to it)")  # fmt: skip
    ev["first"] = {"steps": tr.steps, "call": i, "label": float(label), "exact_label": exact}
    return Check(
        name, Verdict.FAIL,
        f"N = {tr.steps}, call {i}: the network is told {conv.describe(label)} while the "
        f"sample is at sigma {sig_true:.4g} (label {exact:.4g}): off by {abs(diff):.3g} "
        f"{conv.unit}, tolerance {tol:.2g}{hint}", evidence=ev,
    )  # fmt: skip
