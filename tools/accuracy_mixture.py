"""Measure the Gaussian-mixture closed forms (reference float64 and the torch twin) against the
50-digit mpmath oracle of tests/mp_mixture.py; prints the mixture table of docs/accuracy.md.

Run from the repository root with the project installed:
``python tools/accuracy_mixture.py [--quick] [--device cuda] [--json FILE]``.

Regions (issue 22): log-SNR lambda in {-30, -15, 0, 15, 30} on the VP path
(alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)); points x = alpha mu_0 + r std u with r
in {0, 1, 10, 100, 1000} standard deviations of the first noisy component along a random unit u;
d up to 512 and K up to 256 (diagonal and isotropic covariances), full covariances at d = 3
(mpmath's eigensolver) and d = 64, 512 (exact Hadamard-rotated covariances, condition 256).
Each entry is the worst relative error over the 25 (lambda, r) cells (2-norm for vectors; the
score relative to max(|score|, |x| / c_min), c_min the smallest eigenvalue of any
alpha^2 Sigma_k + sigma^2 I: at a mode the score is ~0 and its digits are those of
x - alpha mu_k, so no algorithm has a relative error there);
``--quick`` keeps lambda in {-30, 0, 30}, r in {0, 1e3} and d <= 64 (the test suite's subset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mp_mixture import (  # noqa: E402
    QUANTITIES,
    MpMixture,
    hadamard_mixture,
    relative_error,
    score_floor,
    spec_of,
)

from diffusion_oracle.reference import GaussianMixture  # noqa: E402

LAMBDAS = (-30.0, -15.0, 0.0, 15.0, 30.0)
DISTANCES = (0.0, 1.0, 10.0, 100.0, 1000.0)


def configs(quick=False):
    """(name, raw, oracle spec) for each region of the table; raw holds GaussianMixture's
    arguments, from which both implementations are built."""
    rng = np.random.default_rng(2026)
    out = []
    A = rng.standard_normal((2, 3, 3)) * 0.5
    S = A @ np.swapaxes(A, 1, 2) + 0.1 * np.eye(3)
    S = 0.5 * (S + np.swapaxes(S, 1, 2))  # exactly symmetric
    small = dict(weights=[0.3, 0.7], means=rng.standard_normal((2, 3)), covs=S)
    out.append(("full d=3 K=2", small, spec_of(small)))
    raw, spec = hadamard_mixture(64, 16, rng)
    out.append(("full (Hadamard) d=64 K=16", raw, spec))
    w = np.logspace(-12, 0, 32)
    ext = dict(weights=w / w.sum(), means=rng.standard_normal((32, 64)),
               covs=rng.uniform(0.01, 10.0, (32, 64)), covariance_type="diag")  # fmt: skip
    out.append(("diag d=64 K=32, weights 1e-12..1", ext, spec_of(ext)))
    if quick:
        return out
    raw, spec = hadamard_mixture(512, 4, rng)
    out.append(("full (Hadamard) d=512 K=4", raw, spec))
    big = dict(weights=np.full(256, 1 / 256), means=rng.standard_normal((256, 512)) * 2.0,
               covs=rng.uniform(0.01, 10.0, (256, 512)), covariance_type="diag")  # fmt: skip
    out.append(("diag d=512 K=256", big, spec_of(big)))
    iso = dict(weights=np.full(256, 1 / 256), means=rng.standard_normal((256, 512)) * 2.0,
               covs=rng.uniform(0.01, 10.0, 256), covariance_type="iso")  # fmt: skip
    out.append(("iso d=512 K=256", iso, spec_of(iso)))
    return out


def points(raw, spec, alpha, sigma, distances, rng):
    mu0 = np.asarray(raw["means"], dtype=float)[0]
    u = rng.standard_normal(mu0.size)
    u /= np.linalg.norm(u)
    std = float(np.sqrt(alpha**2 * np.max(np.asarray(spec[0][2], dtype=float)) + sigma**2))
    return np.stack([alpha * mu0 + r * std * u for r in distances])


def implementations(device=None):
    """name -> function(raw) returning an object with the mixture methods on float64 arrays."""
    impls = {"reference": lambda raw: GaussianMixture(**raw)}
    try:
        import torch

        from diffusion_oracle.accelerated import TorchMixture
    except ImportError:
        return impls

    class _Torch:
        def __init__(self, raw, dev, fused=None):
            self.tm = TorchMixture(**raw, device=dev, dtype=torch.float64, fused=fused)
            self.dev = dev

        def __getattr__(self, name):
            fn = getattr(self.tm, name)

            def call(x, alpha, sigma):
                out = fn(torch.as_tensor(x, dtype=torch.float64, device=self.dev), alpha, sigma)
                return out.cpu().numpy()

            return call

    impls["torch-cpu"] = lambda raw: _Torch(raw, "cpu")
    if device and device != "cpu":
        # on CUDA the default evaluates log p, the score and E[x0|x] in the fused Triton kernel
        impls[f"torch-{device}"] = lambda raw: _Torch(raw, device)
        impls[f"torch-{device}-unfused"] = lambda raw: _Torch(raw, device, fused=False)
    return impls


def measure(quick=False, device=None, progress=True):
    """Rows {config, impl, quantity: worst error, cell: (lambda, r) of the worst}."""
    lambdas = (-30.0, 0.0, 30.0) if quick else LAMBDAS
    distances = (0.0, 1000.0) if quick else DISTANCES
    cells = [(c, lam) for c in configs(quick) for lam in lambdas]
    try:
        from tqdm import tqdm

        it = tqdm(cells, desc="mpmath cells", disable=not progress)
    except ImportError:
        it = cells
    impls = implementations(device)
    worst = {}
    built = {}  # per mixture: the oracle and each implementation, built once
    for (name, raw, spec), lam in it:
        alpha, sigma = float(np.sqrt(expit(lam))), float(np.sqrt(expit(-lam)))
        if name not in built:
            built[name] = (MpMixture(raw, spec), {i: make(raw) for i, make in impls.items()})
        oracle, objs = built[name]
        X = points(raw, spec, alpha, sigma, distances, np.random.default_rng(7))
        wants = [oracle.evaluate(x, alpha, sigma) for x in X]
        for impl, obj in objs.items():
            for q in QUANTITIES:
                got = getattr(obj, q)(X, alpha, sigma)
                for i, want in enumerate(wants):
                    floor = score_floor(X[i], spec, alpha, sigma) if q == "score" else 0.0
                    err = relative_error(got[i], want[q], floor)
                    key = (name, impl, q)
                    if err > worst.get(key, (-1.0,))[0] or not np.isfinite(err):
                        worst[key] = (err, lam, distances[i])
    return worst


def markdown(worst):
    names = list(dict.fromkeys(k[0] for k in worst))
    impls = list(dict.fromkeys(k[1] for k in worst))
    lines = ["| mixture | impl | " + " | ".join(QUANTITIES) + " |", "|" + "---|" * 8]
    for n in names:
        for i in impls:
            row = [f"{worst[(n, i, q)][0]:.1e}" for q in QUANTITIES]
            lines.append(f"| {n} | {i} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default=None, help="also the torch twin on this device (cuda)")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    worst = measure(args.quick, args.device)
    print(markdown(worst))
    if args.json:
        rows = [
            {"mixture": k[0], "impl": k[1], "quantity": k[2], "error": v[0], "log_snr": v[1],
             "distance_stds": v[2]}
            for k, v in worst.items()
        ]  # fmt: skip
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
