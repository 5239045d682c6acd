"""diffusion_oracle.accelerated: the PyTorch implementation (GPU first, CPU works). Arrives with
the accelerated issue; torch stays an optional extra and is never imported by the reference."""
