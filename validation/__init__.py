"""diffusion_oracle.validation: adapters that drive other implementations (diffusers,
k-diffusion) with the exact model. Arrives with the validation issue; installed already so the
layout and the packaging test cover it."""
