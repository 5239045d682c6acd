"""Gaussian-mixture targets in torch, batched and chunked, on any device.

p_0 = sum_k w_k N(mu_k, Sigma_k) diffuses to p_t = sum_k w_k N(alpha mu_k, C_k),
C_k = alpha^2 Sigma_k + sigma^2 I. With r_k = softmax_k[log w_k + log N(x; alpha mu_k, C_k)] and
g_k = C_k^{-1}(x - alpha mu_k) (Song et al. 2021; Efron 2011; Karras et al. 2022, App. B.3):

    score     = -sum_k r_k g_k                    eps = sigma sum_k r_k g_k
    x0        =  sum_k r_k (mu_k + alpha Sigma_k g_k)
    laplacian =  sum_k r_k |g_k - gbar|^2 - sum_k r_k tr C_k^{-1},   gbar = sum_k r_k g_k
                 (= sum_k r_k (|g_k|^2 - tr C_k^{-1}) - |score|^2, which cancels far from the data)

Layouts (the hot path is the score):

- full covariances: Sigma_k = Q_k diag(lam_k) Q_k^T (one ``torch.linalg.eigh`` at construction).
  All components are rotated at once by one matrix product against the stacked eigenvectors,
  Y = X [Q_1 ... Q_K] (N x K d); C_k is diagonal in that basis for every (alpha, sigma), so times
  may differ per point. The weighted g's go back by one more product with the stacked Q^T.
- isotropic and diagonal: direct differences x - alpha mu_k (N, K, d) (the expansion
  |x|^2 - 2 alpha x.mu_k + alpha^2 |mu_k|^2 would cancel near a mode far from the origin).

Points are processed in chunks of at most ``chunk_elems`` N*K*d elements, so memory stays
bounded for any N. float64 is the default; float32 is accepted (tolerances in the tests).
This is an independent implementation: it takes the mixture's parameters, never its code.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._common import LOG_2PI, as_tensor, check_finite, generator_arg, resolve

__all__ = ["TorchMixture"]


def _host_scalar(v) -> bool:
    """A Python or NumPy real number, or a 0-d tensor on the CPU."""
    if isinstance(v, torch.Tensor):
        return (v.ndim == 0 and v.device.type == "cpu" and not v.is_complex()
                and v.dtype != torch.bool)  # fmt: skip
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


_QUANTITIES = ("log_prob", "resp", "score", "eps", "x0", "laplacian")


# quantities only the unfused path computes (second-order: traces of covariances, Jacobians)
_SECOND = frozenset({"x0_cov_trace", "eps_cov_trace", "tr_jac_x0", "tr_jac_eps"})


_TINY_VARIANCE = 1e-150  # the reference's threshold (reference/targets.py _overflow_error)


def _check_overflow(out, x, a, s, lam_min: float):
    """ValueError when finite inputs gave NaN (the quadratic forms |x - alpha mu_k|^2 / c_k or
    c_k = alpha^2 Sigma_k + sigma^2 overflow float64). As the reference: when the narrowest
    diffused variance alpha^2 lambda_min + sigma^2 is below 1e-150 it names the smaller-scale
    level, else the largest of x, alpha, sigma; log p = -inf alone is the correctly rounded log
    of an underflowing density."""
    if not any(bool(torch.isnan(v).any()) for v in out.values()):
        return
    a64 = torch.as_tensor(a).double().reshape(-1).cpu()
    s64 = torch.as_tensor(s).double().reshape(-1).cpu()
    lam = max(lam_min, 0.0)
    c = a64 * a64 * lam + s64 * s64
    i = int(torch.argmin(c))
    a_i, s_i = float(a64[min(i, a64.numel() - 1)]), float(s64[min(i, s64.numel() - 1)])
    if float(c[i]) < _TINY_VARIANCE:
        name, val, other, oval = (("sigma", s_i, "alpha", a_i) if s_i * s_i >= a_i * a_i * lam
                                  else ("alpha", a_i, "sigma", s_i))  # fmt: skip
        raise ValueError(
            f"{name} = {val:.6g} is too small (with {other} = {oval:.6g}): the narrowest "
            f"diffused variance alpha^2 lambda_min + sigma^2 = {float(c[i]):.6g} must be at least "
            "1e-150, else the mixture's quadratic forms |x - alpha mu_k|^2 / (alpha^2 Sigma_k + "
            "sigma^2) and the scores overflow float64"
        )
    vals = [("x", float(x.abs().max())), ("alpha", float(a64.abs().max())),
            ("sigma", float(s64.abs().max()))]  # fmt: skip
    name, val = max(vals, key=lambda t: t[1])
    raise ValueError(
        f"{name} = {val:.6g} is too large: the mixture's quadratic forms |x - alpha mu_k|^2 / "
        "(alpha^2 Sigma_k + sigma^2) overflow float64; keep |x|, alpha and sigma well below "
        "1e150 (rescale the data)"
    )


_R_SENSITIVE = frozenset({"resp", "x0", "laplacian"}) | _SECOND


def _noise_dominated_level(tm, alpha, sigma) -> bool:
    """True for a scalar level (alpha, sigma) with alpha^2 max eig Sigma <= sigma^2, sigma > 0
    (False for batched levels, which the fused kernel does not take, and for bad input, which
    the validation after this reports)."""
    try:
        a, s = float(alpha), float(sigma)
    except (TypeError, ValueError):
        return False
    return s > 0 and a * a * tm._lam_max <= s * s


class TorchMixture:
    """A Gaussian mixture with exact diffused quantities (module docstring).

    Parameters: ``weights`` (K,), ``means`` (K, d), ``covs``: (K, d, d) for
    ``covariance_type="full"``, (K, d) variances for "diag", (K,) variances for "iso";
    ``device`` (default CUDA when available), ``dtype`` (default float64), ``chunk_elems`` (bound
    on N*K*d per chunk; default 2^27 on a GPU, 2^20 on the CPU), ``compile`` (fuse the
    elementwise work with torch.compile), ``fused`` (the Triton kernel of ``_fused.py`` for a
    scalar (alpha, sigma); default on CUDA when Triton is present).
    Build from a reference mixture with :meth:`from_reference`.

    Example::

        tm = TorchMixture.from_reference(ring8(), device="cpu")
        s = tm.score(x, alpha=0.8, sigma=0.6)
    """

    def __init__(
        self,
        weights,
        means,
        covs,
        *,
        covariance_type: str = "full",
        device=None,
        dtype=None,
        chunk_elems: int | None = None,
        compile: bool = False,
        fused: bool | None = None,
        _singular_ok: bool = False,
    ):
        self.device, self.dtype = resolve(device, dtype)
        from ._fused import HAVE_TRITON

        # the fused Triton kernel (accelerated/_fused.py) for a scalar (alpha, sigma) on CUDA
        self.fused = (self.device.type == "cuda" and HAVE_TRITON) if fused is None else bool(fused)
        if self.fused and not (self.device.type == "cuda" and HAVE_TRITON):
            raise ValueError("fused=True needs a CUDA device and Triton")
        if chunk_elems is None:
            # GPU: 2^27 elements (1 GiB in float64) per (N, K, d) intermediate keeps kernel
            # launches negligible; CPU: 2^20 keeps temporaries in cache-friendly sizes
            chunk_elems = 1 << 27 if self.device.type == "cuda" else 1 << 20
        if not isinstance(covariance_type, str) or covariance_type not in ("full", "diag", "iso"):
            raise ValueError(
                f"covariance_type must be one of ['diag', 'full', 'iso'], got {covariance_type!r}"
            )
        if isinstance(chunk_elems, bool) or not isinstance(chunk_elems, (int, np.integer)):
            raise TypeError(f"chunk_elems must be an integer, got {type(chunk_elems).__name__} "
                            f"{chunk_elems!r}")  # fmt: skip
        if chunk_elems < 1:
            raise ValueError(f"chunk_elems must be >= 1, got {chunk_elems!r}")
        self.covariance_type = covariance_type
        self.chunk_elems = int(chunk_elems)
        # optional fusion of the elementwise work around the matrix products (torch.compile);
        # measured in benchmarks/RESULTS.md
        self._chunk_fn = torch.compile(self._chunk, dynamic=True) if compile else self._chunk
        f64 = dict(device=self.device, dtype=torch.float64)
        w = check_finite(as_tensor(weights, "weights", **f64), "weights")
        mu = check_finite(as_tensor(means, "means", **f64), "means")
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(mu.shape)}")
        self.K, self.d = mu.shape
        # the reference's rules and messages (reference/targets.py GaussianMixture)
        if tuple(w.shape) != (self.K,):
            raise ValueError(f"weights must have shape (K,) = {(self.K,)}, got {tuple(w.shape)}")
        if bool((w <= 0).any()):
            raise ValueError(f"weights must be > 0, got {w[w <= 0].reshape(-1)[0].item()!r}")
        if abs(float(w.sum()) - 1.0) > 1e-10:
            raise ValueError(f"weights must sum to 1 (within 1e-10), sum is {float(w.sum())!r}")
        cv = check_finite(as_tensor(covs, "covs", **f64), "covs")
        want = {"full": (self.K, self.d, self.d), "diag": (self.K, self.d), "iso": (self.K,)}
        if tuple(cv.shape) != want[covariance_type]:
            raise ValueError(
                f"covs must have shape {want[covariance_type]} for {covariance_type!r}, "
                f"got {tuple(cv.shape)}"
            )
        # the factorisations happen once, in float64, then are cast to the working dtype
        self._Q64 = None
        if covariance_type == "full":
            # the reference's rules (reference/targets.py GaussianMixture): symmetric to 1e-12
            # of the entries, positive definite beyond d eps of the largest eigenvalue; a
            # mixture the reference built singular (condition()) comes through from_reference
            asym = (cv - cv.transpose(1, 2)).abs().amax(dim=(1, 2))
            scale = cv.abs().amax(dim=(1, 2)).clamp(min=np.finfo(float).tiny)
            bad = torch.nonzero(asym > 1e-12 * scale).flatten()
            if len(bad):
                k = int(bad[0])
                raise ValueError(f"covs[{k}] must be symmetric, max |S - S^T| = "
                                 f"{float(asym[k])!r}")  # fmt: skip
            lam, Q = torch.linalg.eigh(0.5 * (cv + cv.transpose(1, 2)))
            if not _singular_ok:
                eps = self.d * np.finfo(float).eps
                bad = torch.nonzero((lam[:, 0] <= eps * lam[:, -1].clamp(min=0.0))
                                    | (lam[:, 0] <= 0)).flatten()  # fmt: skip
                if len(bad):
                    k = int(bad[0])
                    raise ValueError(
                        f"covs[{k}] must be positive definite, smallest eigenvalue "
                        f"{float(lam[k, 0])!r} (largest {float(lam[k, -1])!r})"
                    )
            lam = torch.clamp(lam, min=0.0)  # a singular mixture's rounding below 0
            self._Q64 = Q.contiguous()  # row-major: the fused kernel indexes it directly
            self._Qcat = Q.permute(1, 0, 2).reshape(self.d, self.K * self.d)  # [Q_1 ... Q_K]
            self._QcatT = self._Qcat.T.contiguous()
            self._mrot = torch.einsum("kij,ki->kj", Q, mu)  # Q_k^T mu_k
            self._Qcat, self._QcatT, self._mrot = (
                t.to(self.dtype) for t in (self._Qcat, self._QcatT, self._mrot)
            )
        elif covariance_type == "diag":
            lam = cv
        else:
            lam = cv[:, None].expand(self.K, self.d)
        if covariance_type != "full" and bool((cv <= 0).any()) and not _singular_ok:
            raise ValueError(f"{covariance_type} covs must be > 0, got "
                             f"{float(cv[cv <= 0].reshape(-1)[0])!r}")  # fmt: skip
        if bool((lam < 0).any()):
            raise ValueError("covs must be positive semi-definite")
        self._lam = lam.to(self.dtype).contiguous()  # (K, d) eigenvalues / variances
        self._singular = bool((lam == 0).any())
        self._lam64, self._mu64, self._logw64 = lam.contiguous(), mu.contiguous(), torch.log(w)
        self._iso_var = cv.to(self.dtype) if covariance_type == "iso" else None
        self.weights = w.to(self.dtype)
        self.log_weights = torch.log(w).to(self.dtype)
        self.means = mu.to(self.dtype).contiguous()
        self._lam_max = float(lam.max()) if lam.numel() else 0.0  # largest eigenvalue
        self._mu_c = self.means - self.means.mean(0)  # centred means
        self._d2 = None  # |mu_j - mu_k|^2, on first use
        if self.fused:
            from ._fused import MAX_DP_DIAG, MAX_DP_FULL, fusable

            if not fusable(self):  # the kernel's tiles would not fit: the chunked torch path
                if fused:
                    limit = MAX_DP_FULL if covariance_type == "full" else MAX_DP_DIAG
                    raise ValueError(
                        f"fused=True needs d <= {limit} for {covariance_type!r} covariances, "
                        f"got d = {self.d}"
                    )
                self.fused = False

    @classmethod
    def from_reference(
        cls, mixture, *, device=None, dtype=None, chunk_elems=None, compile=False, fused=None
    ):
        """The torch mixture with the parameters of a reference ``GaussianMixture`` (its
        weights, means and covariances; the factorisation is redone here)."""
        from diffusion_oracle.reference.targets import GaussianMixture

        if not isinstance(mixture, GaussianMixture):
            raise TypeError(
                f"mixture must be a reference GaussianMixture, got {type(mixture).__name__}"
            )
        ct = mixture.covariance_type
        covs = mixture.covs
        if ct == "diag":
            covs = covs.diagonal(axis1=1, axis2=2)
        elif ct == "iso":
            covs = covs[:, 0, 0]
        return cls(
            mixture.weights,
            mixture.means,
            covs,
            covariance_type=ct,
            device=device,
            dtype=dtype,
            chunk_elems=chunk_elems,
            compile=compile,
            fused=fused,
            _singular_ok=True,  # the reference validated it (and may have conditioned it)
        )

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None, *, alpha=1.0, sigma=0.0):
        """n draws of x_t = alpha x_0 + sigma eps with x_0 ~ p_0 (component k with probability
        w_k, then mu_k + Q_k diag(sqrt(lam_k)) z), shape (n, d), on the mixture's device."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"n must be an integer, got {type(n).__name__} {n!r}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        n = int(n)
        levels = []
        for name, v in (("alpha", alpha), ("sigma", sigma)):
            t = check_finite(as_tensor(v, name, device="cpu", dtype=torch.float64), name)
            if t.ndim:
                raise ValueError(f"{name} must be a scalar, got shape {tuple(t.shape)}")
            if float(t) < 0:
                raise ValueError(f"{name} must be >= 0, got {float(t)!r}")
            levels.append(float(t))
        alpha, sigma = levels
        generator = generator_arg(generator, device=self.device)
        kw = dict(device=self.device, dtype=self.dtype, generator=generator)
        k = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, **kw)
        scaled = z * torch.sqrt(self._lam)[k]
        if self.covariance_type == "full":  # rotate each component's draws by its Q_k
            Q = self._Q64.to(self.dtype)
            for j in range(self.K):
                idx = torch.nonzero(k == j).squeeze(1)
                scaled[idx] = scaled[idx] @ Q[j].T
        x0 = self.means[k] + scaled
        if sigma == 0:
            return alpha * x0 if alpha != 1.0 else x0
        return alpha * x0 + sigma * torch.randn(n, self.d, **kw)

    # ------------------------------------------------------------------ evaluation
    def _prep(self, x, alpha, sigma, *, check_x=True):
        """(points (n, d), n, alpha, sigma, batch shape), validated. A host scalar alpha or
        sigma (a Python or NumPy number, a 0-d CPU tensor) is checked on the host and returned
        as a float, so the fused path needs no device round trip; otherwise a tensor on the
        mixture's device. ``check_x=False`` leaves the finiteness of x to the caller."""
        x = as_tensor(x, "x", device=self.device, dtype=self.dtype)
        if check_x:
            check_finite(x, "x")
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"x must have shape (..., d) with d = {self.d}, got {tuple(x.shape)}")
        batch = x.shape[:-1]
        xf = x.reshape(-1, self.d)
        n = xf.shape[0]
        out = []
        for name, v in (("alpha", alpha), ("sigma", sigma)):
            if _host_scalar(v):
                f = float(v)
                if not math.isfinite(f):
                    raise ValueError(f"{name} must be finite, got {f!r}")
                if f < 0:
                    raise ValueError(f"{name} must be >= 0, got {f!r}")
                out.append(f)
                continue
            v = as_tensor(v, name, device=self.device, dtype=self.dtype)
            if v.ndim and tuple(v.shape) != tuple(batch):
                raise ValueError(
                    f"{name} must be a scalar or have the batch shape {tuple(batch)}, "
                    f"got {tuple(v.shape)}"
                )
            check_finite(v, name)
            if bool((v < 0).any()):
                raise ValueError(f"{name} must be >= 0, got {v[v < 0].reshape(-1)[0].item()!r}")
            out.append(v.reshape(-1) if v.ndim else v)
        a, s = out
        s_zero = s == 0 if isinstance(s, float) else bool((s == 0).any())
        if s_zero and self._singular:
            raise ValueError("sigma must be > 0 for a mixture with singular covariances")
        return xf, n, a, s, batch

    def _eval(self, x, alpha, sigma, what):
        # the laplacian's stable form needs every g_k: the unfused path
        fused = self.fused and not set(what) & (_SECOND | {"laplacian"})
        if fused and {"x0", "resp"} & set(what) and _noise_dominated_level(self, alpha, sigma):
            # the kernel forms the responsibilities in the plain form, whose differences keep
            # only |x|^2/sigma^2 ulps where noise dominates (E[x0|x] 1.6e-10 off at 1e3 stds,
            # lambda = -30, through Triton's interpreter): the unfused path's form is exact there
            fused = False
        xf, n, a, s, batch = self._prep(x, alpha, sigma, check_x=not fused)
        if fused and n > 0 and getattr(a, "ndim", 0) == 0 and getattr(s, "ndim", 0) == 0:
            from ._fused import fused_eval

            # fused_eval checks x's finiteness through the log-densities it computes
            out = fused_eval(self, xf, float(a), float(s), what)
            _check_overflow(out, xf, torch.tensor(float(a)), torch.tensor(float(s)),
                            float(self._lam64.min()))  # fmt: skip
            return out, batch
        if fused:
            check_finite(xf, "x")
        a = as_tensor(a, "alpha", device=self.device, dtype=self.dtype)
        s = as_tensor(s, "sigma", device=self.device, dtype=self.dtype)
        per_row = self.K * self.d  # intermediates per point: (K, d) differences
        rows = max(1, self.chunk_elems // per_row)
        res = {k: [] for k in what}
        for i in range(0, n, rows):
            sl = slice(i, min(n, i + rows))
            ac = a[sl] if a.ndim else a
            sc = s[sl] if s.ndim else s
            for k, v in self._chunk_fn(xf[sl], ac, sc, what).items():
                res[k].append(v)
        if n == 0:  # an empty batch: empty results of the right shapes (one dummy point, cut)
            one = torch.ones((), device=self.device, dtype=self.dtype)
            dummy = self.means[:1].to(self.dtype).clone()
            return {k: v[:0] for k, v in self._chunk(dummy, one, one, what).items()}, batch
        out = {k: torch.cat(v, 0) for k, v in res.items()}
        _check_overflow(out, xf, a, s, float(self._lam64.min()))
        return out, batch

    def _chunk(self, x, a, s, what):
        n, K, d = x.shape[0], self.K, self.d
        a2 = a.reshape(-1, 1) if a.ndim else a  # (n, 1) or scalar
        s2 = s.reshape(-1, 1) if s.ndim else s
        out = {}
        if self.covariance_type == "iso":
            c = a2 * a2 * self._iso_var + s2 * s2  # (K,) or (n, K)
            # x - alpha mu_k directly, (n, K, d): the expansion |x|^2 - 2 alpha x.mu_k +
            # alpha^2 |mu_k|^2 cancels near a mode far from the origin (9.7e-11 relative in
            # log p on modes 50 from the origin, issue 22)
            a3 = a2.reshape(-1, 1, 1) if a2.ndim else a2
            diff = x[:, None, :] - a3 * self.means
            dist = (diff * diff).sum(-1)
            maha = dist / c
            logdet = d * torch.log(c)
        else:
            a3 = a.reshape(-1, 1, 1) if a.ndim else a
            s3 = s.reshape(-1, 1, 1) if s.ndim else s
            if self.covariance_type == "full":
                y = (x @ self._Qcat).view(n, K, d) - a3 * self._mrot
            else:
                y = x[:, None, :] - a3 * self.means
            c = a3 * a3 * self._lam + s3 * s3  # (K, d) or (n, K, d)
            z = y / c
            maha = (y * z).sum(-1)
            logdet = torch.log(c).sum(-1)
        # where noise dominates (alpha^2 max eig <= sigma^2) each maha_k is ~|x|^2/sigma^2 and
        # r_k rests on their differences: take the common |x|^2/sigma^2 out exactly with
        # 1/c = 1/sigma^2 - alpha^2 lam/(sigma^2 c) and add it back to log p once
        # (relative to u = x - alpha mu_j of the leading component j, whose |u|^2/sigma^2 is
        # the common part: |x - alpha mu_k|^2 = |u|^2 + 2 alpha u.(mu_j - mu_k) +
        # alpha^2 |mu_j - mu_k|^2, the cross term through centred means)
        # (only for the quantities whose digits the responsibilities reach: log p and the
        # score are relatively accurate in the plain form)
        high = self._noise_dominated(a, s) if _R_SENSITIVE & set(what) else None
        shift = 0.0
        if high is not None:
            a_n = a.expand(n) if a.ndim == 0 else a
            s_n = torch.where(high, s, torch.ones_like(s))
            s_n = s_n.expand(n) if s_n.ndim == 0 else s_n
            j = (self.log_weights - 0.5 * (logdet + maha)).argmax(1)  # (n,)
            u = x - a_n[:, None] * self.means[j]  # (n, d)
            um = u @ self._mu_c.T  # (n, K)
            if self.covariance_type == "iso":
                corr = dist * self._iso_var / c
            else:
                corr = (y * z * self._lam).sum(-1)
            a_c, s_c = a_n[:, None], s_n[:, None]
            cross = 2.0 * a_c * (um.gather(1, j[:, None]) - um) + a_c * a_c * self._pair_d2()[j]
            maha_hi = (cross - a_c * a_c * corr) / (s_c * s_c)
            half_u2 = 0.5 * (u * u).sum(1) / (s_n * s_n)
            # near overflow (|x| ~ 1e150 and up) the plain form's inf is the answer
            use = high & torch.isfinite(maha_hi).all(1) & torch.isfinite(half_u2)
            maha = torch.where(use[:, None], maha_hi, maha)
            shift = torch.where(use, half_u2, torch.zeros_like(half_u2))
        joint = self.log_weights - 0.5 * (d * LOG_2PI + logdet + maha)  # (n, K)
        logp = torch.logsumexp(joint, dim=1)
        r = torch.exp(joint - logp[:, None])
        logp = logp - shift
        # far from the data joint_k and logp agree to every digit (|joint| ~ 1e200: the O(1)
        # log w_k is below their ulp), so each exp is 1: normalising keeps sum_k r_k = 1
        r = r / r.sum(1, keepdim=True)
        if "log_prob" in what:
            out["log_prob"] = logp
        if "resp" in what:
            out["resp"] = r
        need_score = bool({"score", "eps", "laplacian"} & set(what))
        if self.covariance_type == "iso":
            c3 = c[..., None]  # (K, 1) or (n, K, 1)
            g = diff / c3  # every g_k = (x - alpha mu_k) / c_k, (n, K, d)
            if need_score or "x0" in what:
                g_sum = (r[:, :, None] * g).sum(1)
            if "x0" in what:
                # sum_k r_k (mu_k + alpha s_k^2 g_k)
                out["x0"] = r @ self.means + a2 * (
                    (r * self._iso_var)[:, :, None] * g).sum(1)  # fmt: skip
            if "laplacian" in what:
                a3 = a2.reshape(-1, 1, 1) if a2.ndim else a2
                m_k = self.means + a3 * self._iso_var[:, None] * g
                dg = self._spread(g, m_k, r, a, s, high)
                out["laplacian"] = (r * (dg * dg).sum(-1)).sum(1) - (r * d / c).sum(1)
        else:
            rz = r[:, :, None] * z  # r_k times g_k in the rotated basis
            if need_score:
                if self.covariance_type == "full":
                    g_sum = rz.reshape(n, K * d) @ self._QcatT
                else:
                    g_sum = rz.sum(1)
            if "x0" in what:
                lz = rz * self._lam
                back = (
                    lz.reshape(n, K * d) @ self._QcatT
                    if self.covariance_type == "full"
                    else (lz.sum(1))
                )
                out["x0"] = r @ self.means + a2 * back
            if "laplacian" in what:
                # every g_k in the data basis (g_k = Q_k z_k), then sum_k r_k |g_k - gbar|^2
                if self.covariance_type == "full":
                    Q = self._Q64.to(z.dtype)
                    g = torch.einsum("nkj,kij->nki", z, Q)
                    back = torch.einsum("nkj,kij->nki", self._lam * z, Q)
                else:
                    g, back = z, self._lam * z
                m_k = self.means + (a.reshape(-1, 1, 1) if a.ndim else a) * back
                dg = self._spread(g, m_k, r, a, s, high)
                tr = (r * (1.0 / c).sum(-1)).sum(1)
                out["laplacian"] = (r * (dg * dg).sum(-1)).sum(1) - tr
        if "score" in what:
            out["score"] = -g_sum
        if "eps" in what:
            out["eps"] = s2 * g_sum
        if set(what) & _SECOND:
            out.update(self._second_order(x, a, s, r, set(what) & _SECOND))
        return out

    def _pair_d2(self):
        """|mu_j - mu_k|^2, (K, K), by direct differences (never the |a|^2 - 2 a.b + |b|^2
        expansion, which cancels for close means far from the origin)."""
        if self._d2 is None:
            self._d2 = torch.stack([((self.means - m) ** 2).sum(-1) for m in self.means])
        return self._d2

    def _noise_dominated(self, a, s):
        """Boolean (n,) or 0-dim tensor of the points where alpha^2 max eig Sigma <= sigma^2,
        or None where there is none (the plain forms are used throughout)."""
        high = (s > 0) & (a * a * self._lam_max <= s * s)
        return high if bool(high.any()) else None

    @staticmethod
    def _spread(g, m_k, r, a, s, high):
        """g_k - gbar, (n, K, d). Where noise dominates every g_k is ~x/sigma^2 and their spread
        drowns in the subtraction; there it is -(alpha/sigma^2)(m_k - m), from the component
        means E[x0|x,k] whose spread is kept."""
        r3 = r[:, :, None]
        dg = g - (r3 * g).sum(1, keepdim=True)
        if high is None:
            return dg
        a3 = a.reshape(-1, 1, 1) if a.ndim else a
        s_h = torch.where(high, s, torch.ones_like(s))
        s3 = s_h.reshape(-1, 1, 1) if s_h.ndim else s_h
        dm = m_k - (r3 * m_k).sum(1, keepdim=True)
        h3 = high.reshape(-1, 1, 1) if high.ndim else high
        return torch.where(h3, -(a3 / (s3 * s3)) * dm, dg)

    def _second_order(self, x, a, s, r, what):
        """Posterior traces and Jacobian traces from per-component quantities in the original
        coordinates, (n, K, d) per chunk, without dividing by alpha or sigma (the reference's
        formulas, written again): g_k = C_k^{-1}(x - alpha mu_k), gbar = sum r_k g_k,
        m_k = mu_k + alpha Sigma_k g_k, m = sum r_k m_k."""
        a3 = a.reshape(-1, 1, 1) if a.ndim else a
        s3 = s.reshape(-1, 1, 1) if s.ndim else s
        c = a3 * a3 * self._lam + s3 * s3  # (K, d) or (n, K, d)
        diff = x[:, None, :] - a3 * self.means  # (n, K, d)
        if self.covariance_type == "full":
            Q = self._Q64.to(self.dtype)
            z = torch.einsum("kde,nkd->nke", Q, diff) / c  # rotated g_k
            g = torch.einsum("kde,nke->nkd", Q, z)
            m_k = self.means + a3 * torch.einsum("kde,nke->nkd", Q, self._lam * z)
        else:
            g = diff / c
            m_k = self.means + a3 * self._lam * g
        r3 = r[:, :, None]
        dg = self._spread(g, m_k, r, a, s, self._noise_dominated(a, s))
        dm = m_k - (r3 * m_k).sum(1, keepdim=True)
        lam_c = (self._lam / c).sum(-1)  # tr(Sigma_k C_k^{-1}), (K,) or (n, K)
        out = {}
        s1 = s.reshape(-1) if s.ndim else s
        a1 = a.reshape(-1) if a.ndim else a
        dg2 = (r * (dg * dg).sum(-1)).sum(1)
        if "x0_cov_trace" in what:
            out["x0_cov_trace"] = (r * (s3 * s3 * self._lam / c).sum(-1)).sum(1) + (
                r * (dm * dm).sum(-1)
            ).sum(1)
        if "eps_cov_trace" in what:
            out["eps_cov_trace"] = (r * (a3 * a3 * self._lam / c).sum(-1)).sum(1) + s1 * s1 * dg2
        if "tr_jac_x0" in what:
            out["tr_jac_x0"] = a1 * (r * lam_c).sum(1) - (r * (dm * dg).sum(-1)).sum(1)
        if "tr_jac_eps" in what:
            out["tr_jac_eps"] = s1 * ((r * (1.0 / c).sum(-1)).sum(1) - dg2)
        return out

    # ------------------------------------------------------------------ public quantities
    def log_prob(self, x, alpha=1.0, sigma=0.0):
        """log p_t(x) = logsumexp_k [log w_k + log N(x; alpha mu_k, C_k)] (nats), shape (...)."""
        out, batch = self._eval(x, alpha, sigma, ("log_prob",))
        return out["log_prob"].reshape(batch)

    def responsibilities(self, x, alpha=1.0, sigma=0.0):
        """r_k(x) = P(k | x_t = x), shape (..., K)."""
        out, batch = self._eval(x, alpha, sigma, ("resp",))
        return out["resp"].reshape(*batch, self.K)

    def score(self, x, alpha, sigma):
        """grad_x log p_t(x) = -sum_k r_k C_k^{-1}(x - alpha mu_k), shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("score",))
        return out["score"].reshape(*batch, self.d)

    def eps(self, x, alpha, sigma):
        """E[eps | x_t = x] = sigma sum_k r_k g_k, shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("eps",))
        return out["eps"].reshape(*batch, self.d)

    def denoise(self, x, alpha, sigma):
        """Tweedie's E[x_0 | x_t = x] = sum_k r_k (mu_k + alpha Sigma_k g_k), shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("x0",))
        return out["x0"].reshape(*batch, self.d)

    def v(self, x, alpha, sigma):
        """E[v | x] = alpha E[eps|x] - sigma E[x_0|x] (Salimans & Ho 2022), shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("eps", "x0"))
        a, s = self._col(alpha), self._col(sigma)
        return (a * out["eps"] - s * out["x0"]).reshape(*batch, self.d)

    def velocity(self, x, alpha, sigma, d_alpha, d_sigma):
        """u = alpha' E[x_0|x] + sigma' E[eps|x] (Lipman et al. 2023, eq. 9), shape (..., d)."""
        out, batch = self._eval(x, alpha, sigma, ("eps", "x0"))
        da, ds = self._col(d_alpha, "d_alpha", batch), self._col(d_sigma, "d_sigma", batch)
        return (da * out["x0"] + ds * out["eps"]).reshape(*batch, self.d)

    def laplacian(self, x, alpha, sigma):
        """Delta log p_t(x) = sum_k r_k (|g_k|^2 - tr C_k^{-1}) - |score|^2, shape (...)."""
        out, batch = self._eval(x, alpha, sigma, ("laplacian",))
        return out["laplacian"].reshape(batch)

    def posterior_cov_trace(self, x, alpha, sigma):
        """tr Cov[x_0 | x_t = x] = sum_k r_k (sigma^2 tr(Sigma_k C_k^{-1}) + |m_k - m|^2), shape
        (...)."""
        out, batch = self._eval(x, alpha, sigma, ("x0_cov_trace",))
        return out["x0_cov_trace"].reshape(batch)

    def eps_cov_trace(self, x, alpha, sigma):
        """tr Cov[eps | x_t = x] = sum_k r_k (alpha^2 tr(Sigma_k C_k^{-1}) + sigma^2 |g_k -
        gbar|^2), shape (...): the pointwise irreducible eps loss."""
        out, batch = self._eval(x, alpha, sigma, ("eps_cov_trace",))
        return out["eps_cov_trace"].reshape(batch)

    def velocity_divergence(self, x, alpha, sigma, d_alpha, d_sigma):
        """div u = alpha' tr J_x0 + sigma' tr J_eps of the PF-ODE velocity, exactly (the
        reference's GaussianMixture.velocity_divergence; Song et al. 2021, App. D.2), shape
        (...)."""
        out, batch = self._eval(x, alpha, sigma, ("tr_jac_x0", "tr_jac_eps"))
        da, ds = self._col(d_alpha, "d_alpha", batch), self._col(d_sigma, "d_sigma", batch)
        div = da.reshape(-1) * out["tr_jac_x0"] + ds.reshape(-1) * out["tr_jac_eps"]
        return div.reshape(batch)

    def _col(self, v, name="alpha", batch=None):
        v = check_finite(as_tensor(v, name, device=self.device, dtype=self.dtype), name)
        if v.ndim and batch is not None and tuple(v.shape) != tuple(batch):
            raise ValueError(f"{name} must be a scalar or have the batch shape {tuple(batch)}, "
                             f"got {tuple(v.shape)}")  # fmt: skip
        return v.reshape(-1, 1) if v.ndim else v
