"""The float64 ceilings behind benchmark 1's floor, measured on the device (CUDA only).

- cuBLAS: an 8192^3 DGEMM (the floor's rate; 2 warm-ups, median of 5, as ``dgemm_rate``);
- the tensor cores' peak per ``mma.sync`` shape (``dmma_peak.cu``, built with nvcc when it is on
  the PATH): which shape a kernel uses bounds its rate;
- Triton: a plain float64 GEMM (``tl.dot`` over K in blocks, no epilogue) at 8192^3, over a few
  block shapes: the best a Triton fp64 matrix product reaches on this Triton;
- the shape of the DMMA instructions in the fused mixture kernel's machine code (``cuobjdump``
  on its cubin), and its registers and spills.

Run: ``python benchmarks/bench_fp64_ceilings.py`` (results by hand in RESULTS.md section 1).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile

import torch
import triton
import triton.language as tl
from bench_mixture_score import _sync, dgemm_rate, make_mixture, timeit

from diffusion_oracle.accelerated import _fused as F
from diffusion_oracle.accelerated.targets import TorchMixture


@triton.jit
def _gemm(A, B, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    nb = tl.cdiv(N, BN)
    rm = (pid // nb) * BM + tl.arange(0, BM)
    rn = (pid % nb) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), tl.float64)
    for k in range(0, K, BK):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + (k + rk)[:, None] * N + rn[None, :])
        acc += tl.dot(a, b)
    tl.store(C + rm[:, None] * N + rn[None, :], acc)


def sass_mma(cubin: bytes) -> dict:
    """Counts of the MMA instructions in a cubin's machine code (needs cuobjdump)."""
    if shutil.which("cuobjdump") is None:
        return {"cuobjdump": "not found"}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        sass = subprocess.run(["cuobjdump", "--dump-sass", fh.name], capture_output=True,
                              text=True).stdout  # fmt: skip
    return dict(collections.Counter(re.findall(r"\b([DH]MMA\.\S+)", sass)))


def main():
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, triton "
          f"{triton.__version__}")  # fmt: skip
    print(f"cuBLAS DGEMM 8192^3: {dgemm_rate(dev) / 1e12:.1f} TFLOP/s")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dmma_peak.cu")
    if shutil.which("nvcc"):
        with tempfile.TemporaryDirectory() as tmp:
            exe = os.path.join(tmp, "dmma_peak")
            subprocess.run(["nvcc", "-O3", "-gencode=arch=compute_90a,code=sm_90a", "-o", exe,
                            src], check=True)  # fmt: skip
            print(subprocess.run([exe], capture_output=True, text=True).stdout, end="")
    else:
        print("nvcc not found: the DMMA peak per shape is not measured")
    n = 8192
    a = torch.randn(n, n, dtype=torch.float64, device=dev)
    b = torch.randn(n, n, dtype=torch.float64, device=dev)
    c = torch.empty_like(a)
    ref = a[:256] @ b
    for bm, bn, bk, w, st in [(64, 64, 16, 4, 3), (128, 64, 16, 4, 3), (64, 128, 16, 4, 3),
                              (128, 128, 16, 8, 3), (128, 128, 32, 8, 2)]:  # fmt: skip
        grid = ((n // bm) * (n // bn),)

        def run(bm=bm, bn=bn, bk=bk, w=w, st=st, grid=grid):
            _gemm[grid](a, b, c, n, n, n, BM=bm, BN=bn, BK=bk, num_warps=w, num_stages=st)

        t = timeit(run, dev, repeat=5, warmup=2)
        err = ((c[:256] - ref).abs().max() / ref.abs().max()).item()
        print(f"Triton fp64 GEMM BM={bm} BN={bn} BK={bk} warps={w} stages={st}: "
              f"{2 * n**3 / t / 1e12:.1f} TFLOP/s (max rel. error {err:.0e})")  # fmt: skip
    tm = TorchMixture.from_reference(make_mixture(16, 64, "full"), device=dev)
    x = torch.randn(1 << 16, 64, dtype=torch.float64, device=dev)
    tm.score(x, 0.8, 0.6)
    _sync(dev)
    for cache in F._mixture_kernel.device_caches.values():
        for kernel in cache[0].values():
            print(f"fused mixture kernel ({kernel.name}): {kernel.n_regs} registers, "
                  f"{kernel.n_spills} spilled; MMA instructions {sass_mma(kernel.asm['cubin'])}")


if __name__ == "__main__":
    main()
