"""Adapters that turn other libraries' sampler conventions into the plain callable
``sampler(model, x_init, grid, *, rng)`` that :func:`~diffusion_oracle.verify` takes.

- :func:`from_k_diffusion`: a k-diffusion-style function ``sample(model, x, sigmas, **kw)`` that
  works in the variance-exploding frame (x_VE = x / alpha, sigma = sigma_EDM) with a denoiser
  ``model(x_VE, sigma) -> x0``. Arrays are NumPy or torch (``framework="torch"``, float64).
  Noise is supplied through k-diffusion's ``noise_sampler(sigma, sigma_next)`` argument so that
  the harness controls it; samplers that call the global RNG directly cannot be probed (tier 1
  then says so).
- :func:`from_diffusers`: a diffusers-style scheduler object (``set_timesteps``, ``timesteps``,
  ``step(model_output, timestep, sample, ...).prev_sample``, ``init_noise_sigma``,
  ``scale_model_input``) for a discrete schedule of T training steps. Timestep k (0-based) is our
  n = k + 1, t = (k + 1)/T. The scheduler chooses its own times, so the adapter also tells the
  harness which grid it actually ran (``make_grid``), which is what tier 1 compares against.
"""

from __future__ import annotations

import numpy as np

from diffusion_oracle.reference.grids import Grid
from diffusion_oracle.reference.parameterization import model_prediction, to_x0_eps
from diffusion_oracle.reference.schedules import DiscreteSchedule, Schedule

__all__ = ["from_k_diffusion", "from_diffusers"]


def _check_common(name, order, stochastic):
    """The adapters' shared arguments: ``name`` a str or None, ``order`` None or a finite number
    > 0, ``stochastic`` a bool (or None: measured, on the pipeline routes)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
    if order is not None:
        if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, float, np.integer,
                                                                         np.floating)):  # fmt: skip
            raise TypeError(f"order must be a number > 0 or None, got {type(order).__name__} "
                            f"{order!r}")  # fmt: skip
        if not (np.isfinite(order) and order > 0):
            raise ValueError(f"order must be a finite number > 0 or None, got {order!r}")
    # None: the pipeline routes (diffusers schedulers, k-diffusion wrappers) measure it
    if stochastic is not None and not isinstance(stochastic, (bool, np.bool_)):
        raise TypeError(f"stochastic must be a bool or None, got {type(stochastic).__name__} "
                        f"{stochastic!r}")  # fmt: skip


def _to_numpy(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy().astype(np.float64)
    return np.asarray(a, dtype=np.float64)


def _wrapper(framework):
    """Array constructor for the wrapped library: torch float64 tensors or NumPy arrays."""
    if framework == "torch":
        import torch

        return lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    return lambda a: np.asarray(a, dtype=np.float64)


def _x0(model, x, t, schedule):
    pred = model_prediction(model)
    a, s = schedule.alpha(t), schedule.sigma(t)
    kw = {}
    if pred == "velocity":
        kw = dict(d_alpha=schedule.d_alpha(t), d_sigma=schedule.d_sigma(t))
    out = np.asarray(model(x, t), dtype=np.float64)
    return to_x0_eps(out, source=pred, x_t=x, alpha=a, sigma=s, **kw)


class _KDiffusionSampler:
    def __init__(self, fn, framework, name, order, stochastic, kwargs):
        self.fn, self.framework, self.kwargs = fn, framework, kwargs
        self.name = name or getattr(fn, "__name__", "k-diffusion sampler")
        self.order, self.stochastic = order, stochastic
        self.default_grid = "karras"

    def __repr__(self):
        return self.name

    def __call__(self, model, x_init, grid: Grid, *, rng=None):
        from diffusion_oracle.reference.forward import _rng

        rng = _rng(rng)
        sch = grid.schedule
        sig = grid.sigma_edm.copy()
        x_ve = np.asarray(x_init, dtype=np.float64) / grid.alpha[0]
        wrap = _wrapper(self.framework)

        def denoiser(xv, sigma, **_):
            xv_np = _to_numpy(xv)
            s = np.atleast_1d(_to_numpy(sigma))
            if not np.all(s == s[0]):
                raise ValueError("the adapter needs one sigma per call (all rows equal)")
            t = float(sch.t_from_log_snr(-2.0 * np.log(s[0])))
            a = sch.alpha(t)
            x0, _ = _x0(model, a * xv_np, t, sch)
            return wrap(x0)

        def noise_sampler(sigma, sigma_next):
            return wrap(rng.standard_normal(x_ve.shape))

        kw = dict(self.kwargs)
        if self.stochastic:
            kw.setdefault("noise_sampler", noise_sampler)
        out = self.fn(denoiser, wrap(x_ve), wrap(sig), **kw)
        return _to_numpy(out) * grid.alpha[-1]


def from_k_diffusion(
    fn,
    *,
    framework: str = "numpy",
    name: str | None = None,
    order=None,
    stochastic: bool = False,
    wrapper=None,
    quantize: bool = True,
    sigmas="karras",
    rho: float = 7.0,
    dtype: str = "float32",
    schedule: DiscreteSchedule | None = None,
    **kwargs,
):
    """Wrap a k-diffusion-style ``fn(model, x, sigmas, **kwargs)`` (Crowson's k-diffusion
    conventions; Karras et al. 2022 VE frame).

    With ``wrapper`` (k-diffusion's ``"CompVisDenoiser"``, ``"DiscreteEpsDDPMDenoiser"``,
    ``"CompVisVDenoiser"``, ``"DiscreteVDDPMDenoiser"``, or a subclass of one): the pipeline a
    k-diffusion front end runs (:class:`diffusion_oracle.validation.k_diffusion.WrapperSampler`):
    the exact network behind that wrapper, trained on ``schedule`` (a DiscreteSchedule, default
    linear(1000); ``sampler.schedule``), answering at the level each label ``t =
    wrapper.sigma_to_t(sigma)`` names (``quantize=True``: the nearest training step, as CompVis
    front ends run it); ``sigmas`` "karras" (``get_sigmas_karras`` on the wrapper's range,
    ``rho``), "exponential", "wrapper" (its ``get_sigmas``) or a callable ``(N, wrapper)``;
    ``dtype`` "float32" as shipped or "float64"; ``kwargs`` go to ``fn``. verify then also
    judges whether the labels name the sample's level.

    Without ``wrapper``: the algorithm alone, in float64: the harness's model becomes a denoiser
    ``D(x_VE, sigma)``, the grid becomes ``sigmas = grid.sigma_edm`` (ending in 0 after the final
    jump), x_init is divided by alpha_0. ``order`` declares the convergence order;
    ``stochastic=True`` passes a ``noise_sampler`` drawing from the harness's rng.

    Example (k-diffusion installed)::

        from k_diffusion.sampling import sample_heun
        report = verify(from_k_diffusion(sample_heun, framework="torch", order=2,
                                         disable=True), "ring8")
    """
    if framework not in ("numpy", "torch"):
        raise ValueError(f"framework must be 'numpy' or 'torch', got {framework!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    _check_common(name, order, stochastic)
    from diffusion_oracle.reference._checks import positive_scalar

    positive_scalar(rho, "rho")
    if not isinstance(dtype, str) or dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be one of ['float32', 'float64'], got {dtype!r}")
    if wrapper is not None:
        from diffusion_oracle.validation.k_diffusion import WrapperPipeline, WrapperSampler

        pipe = WrapperPipeline(wrapper, quantize, sigmas, rho, dtype, dict(kwargs))
        return WrapperSampler(fn, pipe, schedule=schedule, name=name, order=order,
                              stochastic=stochastic)  # fmt: skip
    return _KDiffusionSampler(fn, framework, name, order, stochastic, kwargs)


class _DiffusersSampler:
    def __init__(self, factory, schedule, name, order, stochastic, prediction_type, framework):
        self.factory, self.schedule = factory, schedule
        self.name, self.order, self.stochastic = name, order, stochastic
        self.prediction_type, self.framework = prediction_type, framework
        self.default_grid = "uniform"

    def __repr__(self):
        return self.name

    def _timesteps(self, scheduler):
        return [int(k) for k in _to_numpy(scheduler.timesteps).round().astype(int)]

    def make_grid(self, schedule: Schedule, steps: int) -> Grid:
        """The grid the scheduler really runs for ``steps`` inference steps: t = (k + 1)/T for
        its timesteps k, then the final jump to sigma = 0."""
        sch = self.factory()
        sch.set_timesteps(steps)
        ks = self._timesteps(sch)
        T = self.schedule.T
        return Grid(self.schedule, np.array([(k + 1) / T for k in ks]), final_zero=True,
                    family=f"{type(sch).__name__} timesteps", refines=False)  # fmt: skip

    def __call__(self, model, x_init, grid: Grid, *, rng=None):
        from diffusion_oracle.reference.forward import _rng

        rng = _rng(rng)
        scheduler = self.factory()
        scheduler.set_timesteps(grid.steps)
        ks = self._timesteps(scheduler)
        T = self.schedule.T
        wrap = _wrapper(self.framework)

        # diffusers' sample lives in the scheduler's frame: x_VE = x_VP / alpha for sigma-based
        # schedulers (init_noise_sigma != 1, model input = sample / sqrt(1 + sigma^2)), x_VP for
        # VP ones (init_noise_sigma = 1)
        t0 = (ks[0] + 1) / T
        a0 = self.schedule.alpha(t0)
        x = np.asarray(x_init, dtype=np.float64)
        ins = float(_to_numpy(getattr(scheduler, "init_noise_sigma", 1.0)))
        sample = wrap(x / a0 if ins != 1.0 else x)
        for k in ks:
            t = (k + 1) / T
            model_in = (
                scheduler.scale_model_input(sample, k)
                if hasattr(scheduler, "scale_model_input")
                else sample
            )
            x_vp = _to_numpy(model_in)
            x0, eps = _x0(model, x_vp, t, self.schedule)
            a, s = self.schedule.alpha(t), self.schedule.sigma(t)
            out = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[
                self.prediction_type
            ]
            kw = {}
            if self.stochastic:
                kw["variance_noise"] = wrap(rng.standard_normal(x.shape))
            res = scheduler.step(wrap(out), k, sample, **kw)
            sample = res.prev_sample if hasattr(res, "prev_sample") else res[0]
        return _to_numpy(sample)


def _same_schedule(a, b) -> bool:
    """Whether two reference schedules are the same (discrete: same T and alpha_bar table;
    otherwise same type and repr)."""
    if isinstance(a, DiscreteSchedule) or isinstance(b, DiscreteSchedule):
        return (
            isinstance(a, DiscreteSchedule) and isinstance(b, DiscreteSchedule) and a.T == b.T
            and np.allclose(a.log_alpha_bar, b.log_alpha_bar, rtol=1e-10, atol=1e-12)
        )  # fmt: skip
    return type(a) is type(b) and repr(a) == repr(b)


def from_diffusers(
    scheduler_factory,
    schedule: Schedule | None = None,
    *,
    name: str | None = None,
    order=None,
    stochastic: bool = False,
    prediction_type: str = "epsilon",
    framework: str = "numpy",
    dtype: str = "float32",
    set_timesteps: dict | None = None,
    step: dict | None = None,
    strength: float | None = None,
    begin_index: int | None = None,
    inverse: bool = False,
):
    """Wrap a diffusers scheduler (or a diffusers-style object) as a sampler for ``verify``.

    A real diffusers scheduler runs through
    :class:`diffusion_oracle.validation.diffusers.SchedulerSampler`: the loop of a diffusers
    pipeline (``set_timesteps(**set_timesteps)``, ``init_noise_sigma``, ``scale_model_input``,
    the network called with the timestep label, ``step(**step)``; ``strength`` / ``begin_index``
    as img2img pipelines set them) in ``dtype`` ("float32" as shipped, or "float64"), the exact
    network answering at the level each label names through the configuration's documented
    label -> level map (discrete training table, flow T sigma, EDM c_noise), in its configured
    prediction_type (epsilon, sample, v_prediction, flow_prediction). ``schedule`` is optional
    there: the scheduler's own training schedule (DiscreteSchedule of its betas, Flow() for
    flow sigmas, EDM(...)); when given it must match. verify then also judges whether the labels
    name the levels the sample is at (the level probe), and a scheduler that raises is a FAIL
    row naming it. ``inverse=True`` marks an inversion scheduler (judged under the convention it
    follows: model at the current or at the destination level).

    Any other object with ``set_timesteps`` / ``step`` runs through the generic loop below;
    ``schedule`` (a DiscreteSchedule, T = num_train_timesteps) is then required,
    ``prediction_type`` is what the scheduler expects and ``stochastic=True`` passes
    ``variance_noise`` drawn from the harness's rng to ``step``. The adapter exposes
    ``make_grid`` so the harness compares against the grid the scheduler really ran.

    Example (diffusers installed)::

        from diffusers import DPMSolverMultistepScheduler
        sampler = from_diffusers(lambda: DPMSolverMultistepScheduler(), order=2)
        report = verify(sampler, "ring8", sampler.schedule, steps=[10, 20, 40])
    """
    if framework not in ("numpy", "torch"):
        raise ValueError(f"framework must be 'numpy' or 'torch', got {framework!r}")
    if not callable(scheduler_factory):
        raise TypeError(
            f"scheduler_factory must be callable (returning a fresh scheduler), got "
            f"{type(scheduler_factory).__name__}"
        )
    _check_common(name, order, stochastic)
    probe = scheduler_factory()
    nm = name or type(probe).__name__
    if any(c.__module__.startswith("diffusers.") for c in type(probe).__mro__):
        # a diffusers scheduler, or a subclass of one (a user's patched scheduler)
        from diffusion_oracle.validation.diffusers import SchedulerSampler, training_schedule

        theirs = training_schedule(probe)
        if schedule is not None and not _same_schedule(theirs, schedule):
            raise ValueError(
                f"schedule must match the scheduler's configuration ({theirs!r}), got {schedule!r}"
            )
        their_pred = probe.config.get("prediction_type", "epsilon")
        if prediction_type != "epsilon" and prediction_type != their_pred:
            raise ValueError(
                f"prediction_type {prediction_type!r} differs from the scheduler's configured "
                f"{their_pred!r}; configure the scheduler instead"
            )
        out = SchedulerSampler(scheduler_factory, name=nm, order=order, stochastic=stochastic,
                               dtype=dtype, set_timesteps=set_timesteps, step=step,
                               strength=strength, begin_index=begin_index,
                               inverse=inverse)  # fmt: skip
        out.schedule = theirs
        return out
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
    if prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(
            "prediction_type must be 'epsilon', 'sample' or 'v_prediction', "
            f"got {prediction_type!r}"
        )
    return _DiffusersSampler(
        scheduler_factory, schedule, nm, order, stochastic, prediction_type, framework
    )
