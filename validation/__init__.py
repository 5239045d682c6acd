"""diffusion_oracle.validation: run other implementations against the reference and exact
ground truth.

- :mod:`~diffusion_oracle.validation.diffusers`: ``run_scheduler`` drives any diffusers
  scheduler with the exact model (the time read from the scheduler's state, float64 mode,
  noise from the caller); ``SchedulerSampler`` runs one through ``diffusion_oracle.verify``.
- :mod:`~diffusion_oracle.validation.conformance`: the catalogue of diffusers configurations
  and the checks behind ``diffusion-oracle conformance diffusers``.
- :mod:`~diffusion_oracle.validation.k_diffusion`: k-diffusion's samplers (loaded without its
  training stack) and sigma schedules, ``diffusion-oracle conformance k-diffusion``.

diffusers, torchsde and torchdiffeq come with the ``validation`` extra; k-diffusion installs
with ``pip install --no-deps k-diffusion``. Importing this package needs none of them.
"""
