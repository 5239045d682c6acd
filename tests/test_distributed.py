"""Tier 3 data-parallel with torch.distributed (issue 23, "Beyond one GPU").

- torchrun, gloo, 2 CPU processes: every rank reports the same tests, and they equal the
  single-process torch statistics (accelerated/stats.py, the same seeds) on the union of the
  ranks' samples; the ranks draw independent streams and split n;
- the exact KS merge (``_ks_distance``) against the KS distance of the pooled sorted sample, on
  2-5 simulated ranks (threads exchanging through a barrier), including ties, clusters in one
  bin, empty shards and more ranks than samples;
- one process without a process group: the same statistics as accelerated/stats.py.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from diffusion_oracle.accelerated import TorchMixture  # noqa: E402
from diffusion_oracle.accelerated import stats as ts  # noqa: E402
from diffusion_oracle.accelerated.distributed import (  # noqa: E402
    _ks_distance,
    shard_sizes,
    tier3_statistics,
)
from diffusion_oracle.reference import ring8  # noqa: E402

A_EACH = 0.01 / 4


class _ThreadComm:
    """A W-rank communicator for threads: each collective deposits its rank's value, waits for
    the others, and combines them in rank order."""

    def __init__(self, rank, world, slots, barrier):
        self.rank, self.world, self.slots, self.barrier = rank, world, slots, barrier

    def _exchange(self, value):
        self.slots[self.rank] = value
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()
        return got

    def reduce(self, t, op="sum"):
        parts = self._exchange(t.clone())
        out = parts[0].clone()
        for p in parts[1:]:
            out = {"sum": torch.add, "min": torch.minimum, "max": torch.maximum}[op](out, p)
        return out

    def gather(self, obj):
        return self._exchange(obj)


def _run_ranks(world, fn):
    slots, barrier = [None] * world, threading.Barrier(world)
    out, errs = [None] * world, []

    def work(r):
        try:
            out[r] = fn(_ThreadComm(r, world, slots, barrier), r)
        except Exception as exc:  # noqa: BLE001 - reported below
            errs.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errs, errs
    return out


def _pooled_ks(F):
    return ts.ks_statistic(torch.sort(torch.as_tensor(F, dtype=torch.float64))[0], len(F))


@pytest.mark.parametrize(
    "case",
    ["uniform", "skewed", "one_bin", "ties", "tiny", "more_ranks_than_samples", "large"],
)
@pytest.mark.parametrize("world", [2, 3, 5])
def test_ks_merge_is_the_pooled_ks_distance(case, world):
    g = np.random.default_rng(hash((case, world)) % 2**32)
    F = {
        "uniform": lambda: g.random(3000),
        "skewed": lambda: g.random(3000) ** 3,  # far from uniform: D large, many candidates
        "one_bin": lambda: 0.5 + 1e-7 * g.random(500),  # every sample in one bin
        "ties": lambda: np.round(g.random(2000), 2),  # many equal values
        "tiny": lambda: g.random(3),
        "more_ranks_than_samples": lambda: g.random(2),
        "large": lambda: g.beta(2.0, 2.1, 200_000),
    }[case]()
    n = len(F)
    sizes = shard_sizes(n, world)
    cuts = np.cumsum([0] + sizes)
    shards = [torch.as_tensor(F[cuts[r]:cuts[r + 1]]) for r in range(world)]
    got = _run_ranks(world, lambda comm, r: _ks_distance(shards[r], n, comm))
    assert len(set(got)) == 1  # every rank the same number
    assert got[0] == pytest.approx(_pooled_ks(F), rel=0, abs=1e-15)


def test_shard_sizes():
    assert shard_sizes(10, 3) == [4, 3, 3]
    assert shard_sizes(2, 4) == [1, 1, 0, 0]
    assert shard_sizes(0, 2) == [0, 0]
    with pytest.raises(ValueError, match=r"^n must be >= 0, got -1$"):
        shard_sizes(-1, 2)
    for bad, shown in ((2.0, "float 2.0"), (True, "bool True")):
        with pytest.raises(TypeError, match=rf"^n must be an integer, got {shown}$"):
            shard_sizes(bad, 2)
    with pytest.raises(ValueError, match=r"^world must be >= 1, got 0$"):
        shard_sizes(4, 0)


def test_tier3_statistics_refuses_bad_input(mixture_and_null):
    tm, null = mixture_and_null
    x = tm.sample(10, torch.Generator(device=tm.device).manual_seed(0))
    cases = [
        (dict(tm=ring8()), TypeError, r"^tm must be a TorchMixture, got GaussianMixture"),
        (dict(n=1), ValueError, r"^n must be >= 2, got 1$"),
        (dict(alpha_each=1.5), ValueError, r"^alpha must lie in \(0, 1\), got 1.5$"),
        (dict(seed=-3), ValueError, r"^seed must be >= 0, got -3$"),
        (dict(x=x[:, :1]), ValueError, r"^x must have shape \(n_rank, 2\), got \(10, 1\)$"),
        (dict(x=torch.full((3, 2), float("nan"))), ValueError, r"^x must be finite"),
    ]
    for change, exc, msg in cases:
        kw = dict(tm=tm, x=x, n=10, alpha_each=A_EACH, seed=SEED, null=null)
        kw.update(change)
        with pytest.raises(exc, match=msg):
            tier3_statistics(kw.pop("tm"), kw.pop("x"), kw.pop("n"), kw.pop("alpha_each"),
                             kw.pop("seed"), null=kw.pop("null"))  # fmt: skip


def _single_process(tm, x, seed, null=None):
    if null is None:
        null = ts.mmd_null(tm, min(len(x), 500), replicates=int(2 / A_EACH) - 1, rng=seed + 3)
    return [
        ts.responsibility_test(tm, x, alpha=A_EACH, rng=seed + 4),
        ts.projected_ks_test(tm, x, alpha=A_EACH, rng=seed + 5),
        ts.nll_test(tm, x, alpha=A_EACH, rng=seed + 6),
        ts.mmd_test(tm, x[:500], alpha=A_EACH, null=null),
    ]


def _same_tests(a, b, rtol=1e-10):
    for ta, tb in zip(a, b, strict=True):
        ta = ta if isinstance(ta, dict) else ta.__dict__
        tb = tb if isinstance(tb, dict) else tb.__dict__
        assert ta["name"] == tb["name"]
        assert ta["passed"] == tb["passed"], (ta, tb)
        assert ta["statistic"] == pytest.approx(tb["statistic"], rel=rtol, abs=1e-13)
        assert ta["pvalue"] == pytest.approx(tb["pvalue"], rel=rtol, abs=1e-13)


SEED = 7


@pytest.fixture(scope="module")
def mixture_and_null():
    """ring8 in torch and its MMD null at n = 500 (seed + 3, as tier3_statistics draws it):
    computed once, it is the costly part on a CPU."""
    tm = TorchMixture.from_reference(ring8())
    return tm, ts.mmd_null(tm, 500, replicates=int(2 / A_EACH) - 1, rng=SEED + 3)


def test_one_process_equals_the_torch_statistics(mixture_and_null):
    tm, null = mixture_and_null
    # samples a little off the target, so that some tests are near their thresholds
    x = tm.sample(2500, torch.Generator(device=tm.device).manual_seed(1)) * 1.02
    _same_tests(tier3_statistics(tm, x, len(x), A_EACH, SEED, null=null),
                _single_process(tm, x, SEED, null))  # fmt: skip


def test_threads_as_ranks_equal_the_torch_statistics(mixture_and_null):
    tm, null = mixture_and_null
    x = tm.sample(2400, torch.Generator(device=tm.device).manual_seed(2)) * 1.03
    cuts = np.cumsum([0] + shard_sizes(len(x), 3))
    got = _run_ranks(3, lambda comm, r: tier3_statistics(
        tm, x[cuts[r]:cuts[r + 1]], len(x), A_EACH, SEED, comm=comm, null=null))  # fmt: skip
    want = _single_process(tm, x, SEED, null)
    for g in got:
        _same_tests(g, want)


@pytest.mark.slow
def test_torchrun_gloo_two_processes(tmp_path):
    """torchrun, gloo backend, 2 CPU processes: each rank's tests equal the single-process
    statistics of the union of the ranks' samples."""
    if not dist.is_gloo_available():
        pytest.skip("torch.distributed has no gloo backend")
    from diffusion_oracle.verification.plan import stream_seed

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "diffusion_oracle.accelerated.distributed", "--sampler", "heun",
           "--samples", "3001", "--steps", "24", "--device", "cpu",
           "--out", str(tmp_path)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "heun on ring8: n = 3001 samples on 2 ranks (gloo, cpu)" in p.stdout
    outs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [o["world"] for o in outs] == [2, 2] and outs[0]["backend"] == "gloo"
    xs = [np.load(tmp_path / f"rank{r}.npy") for r in range(2)]
    assert [len(x) for x in xs] == [1501, 1500]
    assert not np.allclose(xs[0][:1500], xs[1])  # independent streams
    _same_tests(outs[0]["tests"], outs[1]["tests"], rtol=0)
    tm = TorchMixture.from_reference(ring8(), device="cpu")  # where the ranks drew their nulls
    x = torch.as_tensor(np.concatenate(xs))
    _same_tests(outs[0]["tests"], _single_process(tm, x, stream_seed(0, "stats-mmd")))
