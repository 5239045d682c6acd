"""Tier 3 data-parallel with ``torch.distributed``: sample generation and the four statistics on
many processes (GPUs or CPU cores, one host or many), for sample sizes one device cannot hold.

Each rank draws its share of the n starts of p_{t_0} from a stream of its own (the run's seed and
the rank), runs the sampler on its device and reduces its samples to sufficient statistics; the
tests are formed from the all-reduced sums, so every rank reaches the same verdict: the one a
single process reaches on the union of the ranks' samples (the nulls are drawn as a single
process draws them, from the same seeds):

- responsibilities: sum_i r_k(x_i) (K sums) -> mean r_k;
- NLL: sum_i -log p_0(x_i) -> the mean;
- projected KS, exact, in two rounds per direction. Each rank maps its projections through the
  exact projected CDF, F_i = F(u^T x_i), and counts them in B equal bins of [0, 1]; the summed
  counts give the empirical CDF at every bin edge. Inside bin j (F in [j/B, (j+1)/B), c_before
  samples below it, c_j in it) the deviations are bounded: i/n - F_i <= (c_before + c_j)/n - j/B
  and F_i - (i-1)/n <= (j+1)/B - c_before/n; the smallest and largest F of each bin (reduced by
  min and max) give deviations that are attained. The F values of the bins whose bound reaches
  the largest attained deviation are gathered, and D is computed on them exactly: D equals the
  single-process statistic (to the rounding of u^T x, ~1e-16).
- MMD: on the first min(n, 500) samples of the union in rank order, gathered to every rank.

Launch with torchrun (one process per GPU, NCCL; or CPU processes, gloo)::

    torchrun --standalone --nproc_per_node=8 -m diffusion_oracle.accelerated.distributed \\
        --sampler heun --samples 1000000000 --steps 256

On a cluster, the same command on every node, with the node's rank and a rendezvous address::

    torchrun --nnodes=4 --nproc_per_node=8 --node_rank=$NODE_RANK \\
        --rdzv_backend=c10d --rdzv_endpoint=$HEAD_NODE:29500 \\
        -m diffusion_oracle.accelerated.distributed --sampler heun --samples 1000000000 --steps 256
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist

from . import stats as ts
from ._common import as_tensor, check_finite, int_arg
from .targets import TorchMixture

__all__ = ["shard_sizes", "tier3_statistics", "tier3_distributed", "main"]

N_MMD = 500  # the MMD test's sample (as verify's tier 3)


def shard_sizes(n: int, world: int) -> list:
    """How many of n samples each of ``world`` ranks draws: n_r = floor(n / W) + [r < n mod W]
    (the first n mod W ranks draw one more; sum_r n_r = n)."""
    n, world = int_arg(n, "n", minimum=0), int_arg(world, "world")
    return [n // world + (r < n % world) for r in range(world)]


class _Comm:
    """The collectives the statistics need: torch.distributed when a process group is up, the
    identity otherwise (one process)."""

    def __init__(self):
        self.on = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def _dev(self, t):
        # NCCL reduces CUDA tensors only; gloo CPU tensors only
        if self.on and dist.get_backend() == "nccl":
            return t.cuda()
        return t.cpu()

    def reduce(self, t: torch.Tensor, op="sum") -> torch.Tensor:
        if not self.on:
            return t
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        w = self._dev(t.clone())
        dist.all_reduce(w, op=ops[op])
        return w.to(t.device)

    def gather(self, obj) -> list:
        if not self.on:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def _bins(n: int) -> int:
    """Bins of the KS merge: ~4 sqrt(n) (a bin holds ~sqrt(n)/4 samples: few candidates), within
    [1024, 2^20]."""
    return int(min(1 << 20, max(1024, 4 * math.isqrt(max(n, 1)))))


def _ks_distance(F: torch.Tensor, n: int, comm: _Comm) -> float:
    """The exact KS distance of the union of every rank's transformed samples F (module
    docstring)."""
    B = _bins(n)
    Fd = F.double()
    j = torch.clamp((Fd * B).floor().long(), 0, B - 1)
    counts = comm.reduce(torch.bincount(j, minlength=B).double())  # exact below 2^53
    inf = torch.full((B,), math.inf, dtype=torch.float64, device=Fd.device)
    lo = inf.scatter_reduce(0, j, Fd, reduce="amin", include_self=True)
    hi = (-inf).scatter_reduce(0, j, Fd, reduce="amax", include_self=True)
    lo, hi = comm.reduce(lo, "min"), comm.reduce(hi, "max")
    before = torch.cumsum(counts, 0) - counts
    edge = torch.arange(B, dtype=torch.float64, device=Fd.device) / B
    full = counts > 0
    # attained: the last sample of bin j (rank before + c) and its first (rank before + 1)
    att = torch.maximum((before + counts) / n - hi, lo - before / n)
    attained = float(att[full].max()) if bool(full.any()) else 0.0
    bound = torch.maximum((before + counts) / n - edge, edge + 1.0 / B - before / n)
    cand = full & (bound >= attained)
    mine = cand[j]
    pieces = comm.gather(
        (j[mine].cpu().numpy(), Fd[mine].cpu().numpy())
    )
    jj = np.concatenate([p[0] for p in pieces])
    ff = np.concatenate([p[1] for p in pieces])
    D = attained
    before_np = before.cpu().numpy()
    for b in np.unique(jj):
        vals = torch.as_tensor(np.sort(ff[jj == b]), dtype=torch.float64)
        D = max(D, ts.ks_statistic(vals, n, int(before_np[b])))
    return D


def tier3_statistics(tm: TorchMixture, x: torch.Tensor, n: int, alpha_each: float, seed: int,
                     *, comm: _Comm | None = None, n_proj: int = 16,
                     null=None) -> list:  # fmt: skip
    """The four tier-3 tests of the union of every rank's samples ``x`` (n in all), each rank
    holding its shard; the same list on every rank. Seeds as verify's torch path
    (``_Accelerated.statistics``): responsibilities seed + 4, KS seed + 5, NLL seed + 6, MMD null
    seed + 3 (or ``null``)."""
    if not isinstance(tm, TorchMixture):
        raise TypeError(f"tm must be a TorchMixture, got {type(tm).__name__} {tm!r}")
    n = int_arg(n, "n", minimum=2)
    alpha_each, seed = ts._level(alpha_each), int_arg(seed, "seed", minimum=0)
    x = check_finite(as_tensor(x, "x", device=tm.device, dtype=tm.dtype), "x")
    if x.ndim != 2 or x.shape[1] != tm.d:
        raise ValueError(f"x must have shape (n_rank, {tm.d}), got {tuple(x.shape)}")
    comm = comm or _Comm()
    resp = ts.responsibility_result(
        tm, comm.reduce(ts.responsibility_sums(tm, x)), n, alpha_each, 50_000, seed + 4
    )
    D = [_ks_distance(ts.ks_transform(tm, x, u), n, comm)
         for u in ts.ks_directions(tm.d, n_proj, seed + 5)]  # fmt: skip
    ks = ts.projected_ks_result(D, n, alpha_each)
    nll = ts.nll_result(tm, comm.reduce(ts.nll_sum(tm, x)), n, alpha_each, 200_000, seed + 6)
    n_mmd = min(n, N_MMD)
    heads = comm.gather(x[:n_mmd].double().cpu().numpy())
    head = torch.as_tensor(np.concatenate(heads)[:n_mmd], device=tm.device, dtype=tm.dtype)
    if null is None:
        null = ts.mmd_null(tm, n_mmd, replicates=int(2 / alpha_each) - 1, rng=seed + 3)
    mmd = ts.mmd_test(tm, head, alpha=alpha_each, null=null)
    return [resp, ks, nll, mmd]


def tier3_distributed(sampler, target, schedule, grid, n: int, seed: int, alpha_each: float,
                      *, device=None, comm: _Comm | None = None):  # fmt: skip
    """Run a built-in ``sampler`` (reference sampler with a torch counterpart) data-parallel:
    this rank's share of n starts from its own stream, its samples, and the four tests of the
    union. Returns (tests, this rank's samples as a float64 NumPy array)."""
    from diffusion_oracle.accelerated import torch_schedule
    from diffusion_oracle.accelerated.model import TorchExactModel
    from diffusion_oracle.accelerated.samplers import torch_sampler
    from diffusion_oracle.verification.plan import stream_seed

    seed = int_arg(seed, "seed", minimum=0)
    comm = comm or _Comm()
    run = torch_sampler(sampler)
    if run is None:
        raise ValueError(f"sampler {getattr(sampler, 'name', sampler)!r} has no torch counterpart")
    tm = TorchMixture.from_reference(target, device=device)
    model = TorchExactModel(tm, torch_schedule(schedule), prediction="eps")
    n_r = shard_sizes(n, comm.world)[comm.rank]
    gen = torch.Generator(device=tm.device)
    # an independent stream per rank: the run's tier-3 seed and the rank
    gen.manual_seed((stream_seed(seed, "tier3") + 7919 * comm.rank) % 2**63)
    if n_r:
        x0 = tm.sample(n_r, gen, alpha=grid.alpha[0], sigma=grid.sigma[0])
    else:  # more ranks than samples: an empty shard
        x0 = torch.zeros((0, tm.d), device=tm.device, dtype=tm.dtype)
    out = run(model, x0, grid, rng=gen)
    tests = tier3_statistics(tm, out, n, alpha_each, stream_seed(seed, "stats-mmd"), comm=comm)
    return tests, out.detach().double().cpu().numpy()


def main(argv=None) -> int:
    """``torchrun ... -m diffusion_oracle.accelerated.distributed``: tier 3 of one built-in
    sampler on ring8 (or another built-in target), data-parallel; rank 0 prints the tests."""
    from diffusion_oracle.harness import TIER3_ALPHA
    from diffusion_oracle.reference.grids import make_grid
    from diffusion_oracle.reference.samplers import BUILTIN_SAMPLERS
    from diffusion_oracle.reference.schedules import get_schedule
    from diffusion_oracle.reference.targets import get_target
    from diffusion_oracle.verification.plan import default_t_end

    ap = argparse.ArgumentParser(prog="diffusion_oracle.accelerated.distributed",
                                 description=main.__doc__.splitlines()[0])  # fmt: skip
    ap.add_argument("--sampler", default="heun", choices=sorted(BUILTIN_SAMPLERS()))
    ap.add_argument("--target", default="ring8")
    ap.add_argument("--schedule", default="vp-linear")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--samples", type=int, default=100_000, help="n: samples in all (every rank)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None, help="nccl (GPUs) or gloo (CPU); default by device")
    ap.add_argument("--device", default=None, help="default cuda:LOCAL_RANK when CUDA is seen")
    ap.add_argument("--out", default=None, help="folder: rank<r>.npy samples, rank<r>.json tests")
    args = ap.parse_args(argv)
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = args.device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    backend = args.backend or ("nccl" if device.startswith("cuda") else "gloo")
    launched = "WORLD_SIZE" in os.environ
    if launched:
        dist.init_process_group(backend)
    try:
        sampler = BUILTIN_SAMPLERS()[args.sampler]
        schedule, target = get_schedule(args.schedule), get_target(args.target)
        # verify's tier-3 grid: the sampler's spacing down to verify's default last time
        grid = make_grid(schedule, args.steps, getattr(sampler, "default_grid", "log_snr"),
                         t_end=default_t_end(schedule, target))  # fmt: skip
        tests, out = tier3_distributed(sampler, target, schedule, grid,
                                       args.samples, args.seed, TIER3_ALPHA / 4,
                                       device=device)  # fmt: skip
        comm = _Comm()
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            np.save(os.path.join(args.out, f"rank{comm.rank}.npy"), out)
            with open(os.path.join(args.out, f"rank{comm.rank}.json"), "w") as f:
                json.dump({"world": comm.world, "backend": backend if launched else None,
                           "tests": [asdict(t) for t in tests]}, f, default=float)  # fmt: skip
        if comm.rank == 0:
            how = backend if launched else "one process"
            print(f"{args.sampler} on {args.target}: n = {args.samples} samples on {comm.world} "
                  f"ranks ({how}, {device}), {args.steps} steps")  # fmt: skip
            for t in tests:
                print(f"  {t.name:24s} p = {t.pvalue:.3g}  {'ok' if t.passed else 'REJECT'}  "
                      f"{t.detail}")  # fmt: skip
            print("tier 3:", "pass" if all(t.passed for t in tests) else "FAIL")
    finally:
        if launched:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
