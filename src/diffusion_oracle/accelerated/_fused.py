"""A fused Triton kernel for the diffused Gaussian mixture at one (alpha, sigma): score / eps,
log-density, Tweedie denoiser, Laplacian and the per-component logits in one pass over the
points, with no (N, K, d) intermediate.

Each program takes a block of BM points and loops over the K components with an online
log-sum-exp (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"; the
flash-attention recurrence): for component k

    diff = x - alpha mu_k,   g_k = P_k diff,   P_k = C_k^{-1} = Q_k diag(1/c_k) Q_k^T,
    logit_k = log w_k - (d log 2 pi + log det C_k + diff.g_k)/2,

one (BM x d) x (d x d) product per component (the 2 N K d^2 flops of the floor; the matrix units
do it, float64 included), then the running maximum m, the normaliser l = sum_k e^{logit_k - m}
and the accumulators sum_k e^{logit_k - m} g_k (and x0, Laplacian terms) are rescaled when m
grows. Differences x - alpha mu_k are formed directly, never through |x|^2 - 2 x.mu + |mu|^2.
For the denoiser a second product with T_k = alpha Sigma_k C_k^{-1} = Q_k diag(alpha lam_k/c_k)
Q_k^T gives x0_k = mu_k + T_k diff. (Every float goes in through a tensor: Triton passes Python
floats to a kernel as float32.) Diagonal and isotropic components use the same loop with
elementwise products (P_k diagonal).

The matrices P_k, T_k depend on (alpha, sigma) and are formed once per call on the host side in
float64 (K d^3 flops, negligible against N K d^2). Used by TorchMixture on CUDA for a scalar
(alpha, sigma); a per-point time or the CPU takes the chunked torch path.
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch; absent on CPU-only installs
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - exercised only where Triton is missing
    HAVE_TRITON = False


if HAVE_TRITON:

    @triton.jit
    def _mixture_kernel(
        X,
        AM,
        MU,
        P,
        T,
        CONST,
        TRC,
        OUT_G,
        OUT_X0,
        OUT_LOGP,
        OUT_LAP,
        OUT_LOGIT,
        N,
        K,
        d,
        DP: tl.constexpr,
        BM: tl.constexpr,
        FULL: tl.constexpr,
        IEEE_F32: tl.constexpr,
        WANT_G: tl.constexpr,
        WANT_X0: tl.constexpr,
        WANT_LAP: tl.constexpr,
        WANT_LOGIT: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        cols = tl.arange(0, DP)
        rmask = rows < N
        cmask = cols < d
        xm = rmask[:, None] & cmask[None, :]
        x = tl.load(X + rows[:, None] * d + cols[None, :], mask=xm, other=0.0)
        m_run = tl.full((BM,), float("-inf"), x.dtype)
        l_run = tl.zeros((BM,), x.dtype)
        acc_g = tl.zeros((BM, DP), x.dtype)
        acc_x0 = tl.zeros((BM, DP), x.dtype)
        acc_lap = tl.zeros((BM,), x.dtype)
        for k in range(K):
            am = tl.load(AM + k * DP + cols)
            diff = x - am[None, :]  # zero in the padded columns (x and am are zero there)
            if FULL:
                pk = tl.load(P + k * DP * DP + cols[:, None] * DP + cols[None, :])
                if IEEE_F32:
                    g = tl.dot(diff, pk, input_precision="ieee")
                else:
                    g = tl.dot(diff, pk)
            else:
                pk = tl.load(P + k * DP + cols)
                g = diff * pk[None, :]
            maha = tl.sum(diff * g, 1)
            logit = tl.load(CONST + k) - 0.5 * maha
            if WANT_LOGIT:
                tl.store(OUT_LOGIT + rows * K + k, logit, mask=rmask)
            m_new = tl.maximum(m_run, logit)
            scale = tl.exp(m_run - m_new)
            p = tl.exp(logit - m_new)
            l_run = l_run * scale + p
            if WANT_G:
                acc_g = acc_g * scale[:, None] + p[:, None] * g
            if WANT_LAP:
                acc_lap = acc_lap * scale + p * (tl.sum(g * g, 1) - tl.load(TRC + k))
            if WANT_X0:
                mu = tl.load(MU + k * DP + cols)
                if FULL:
                    tk = tl.load(T + k * DP * DP + cols[:, None] * DP + cols[None, :])
                    if IEEE_F32:
                        h = tl.dot(diff, tk, input_precision="ieee")
                    else:
                        h = tl.dot(diff, tk)
                else:
                    tk = tl.load(T + k * DP + cols)
                    h = diff * tk[None, :]
                acc_x0 = acc_x0 * scale[:, None] + p[:, None] * (mu[None, :] + h)
            m_run = m_new
        inv_l = 1.0 / l_run
        tl.store(OUT_LOGP + rows, m_run + tl.log(l_run), mask=rmask)
        gs = acc_g * inv_l[:, None]
        if WANT_G:
            tl.store(OUT_G + rows[:, None] * d + cols[None, :], gs, mask=xm)
        if WANT_X0:
            tl.store(OUT_X0 + rows[:, None] * d + cols[None, :], acc_x0 * inv_l[:, None], mask=xm)
        if WANT_LAP:
            tl.store(OUT_LAP + rows, acc_lap * inv_l - tl.sum(gs * gs, 1), mask=rmask)


def _next_pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())  # tl.dot needs at least 16


def default_config(dp: int, full: bool) -> tuple[int, int, int]:
    """(BM, num_warps, num_stages): the fastest of a sweep over BM in 16..128, 4 or 8 warps,
    1 or 2 stages on an H200 in float64 (``bench_mixture_score.py --sweep``,
    benchmarks/RESULTS.md); float32 uses the same blocks (not swept: it needs half the
    registers and shared memory, so every float64 configuration fits).
    Register and shared-memory use grow with BM x DP and DP^2 (BM = 128 at DP = 128 does not
    fit; BM = 32 with 4 warps and 1 stage spills)."""
    if not full:
        return 16, 4, 2
    if dp <= 64:
        return 64, 4, 2
    return 32, 8, 2


def fused_eval(tm, x: torch.Tensor, alpha: float, sigma: float, what, *, config=None) -> dict:
    """Evaluate the quantities in ``what`` (subset of log_prob, resp, score, eps, x0,
    laplacian) of TorchMixture ``tm`` at points x (N, d) on CUDA, scalar (alpha, sigma)."""
    n, d, K = x.shape[0], tm.d, tm.K
    dp = _next_pow2(d)
    full = tm.covariance_type == "full"
    dt, dev = tm.dtype, x.device
    f64 = dict(device=dev, dtype=torch.float64)
    a = torch.tensor(alpha, **f64)
    s = torch.tensor(sigma, **f64)
    lam = tm._lam64  # (K, d) eigenvalues or variances, float64
    c = a * a * lam + s * s  # (K, d)
    logdet = torch.log(c).sum(1)
    const = tm._logw64 - 0.5 * (d * 1.8378770664093453 + logdet)
    trc = (1.0 / c).sum(1)
    am = torch.zeros(K, dp, **f64)
    am[:, :d] = a * tm._mu64
    mu = torch.zeros(K, dp, **f64)
    mu[:, :d] = tm._mu64
    if full:
        Q = tm._Q64  # (K, d, d)
        P = torch.zeros(K, dp, dp, **f64)
        P[:, :d, :d] = (Q / c[:, None, :]) @ Q.transpose(1, 2)
        T = torch.zeros(K, dp, dp, **f64)
        if "x0" in what:
            T[:, :d, :d] = (Q * (a * lam / c)[:, None, :]) @ Q.transpose(1, 2)
    else:
        P = torch.zeros(K, dp, **f64)
        P[:, :d] = 1.0 / c
        T = torch.zeros(K, dp, **f64)
        T[:, :d] = a * lam / c
    want_g = bool({"score", "eps", "laplacian"} & set(what))
    want_x0 = "x0" in what
    want_lap = "laplacian" in what
    want_logit = "resp" in what
    cast = dict(device=dev, dtype=dt)
    x = x.contiguous()
    out_g = torch.empty(n, d, **cast) if want_g else torch.empty(1, **cast)
    out_x0 = torch.empty(n, d, **cast) if want_x0 else torch.empty(1, **cast)
    out_lap = torch.empty(n, **cast) if want_lap else torch.empty(1, **cast)
    out_logit = torch.empty(n, K, **cast) if want_logit else torch.empty(1, **cast)
    out_logp = torch.empty(n, **cast)
    bm, warps, stages = config or default_config(dp, full)
    # the denoiser's second matrix doubles the shared memory per component: if a configuration
    # does not fit, fall back to one stage, then to smaller point blocks
    tries = [(bm, warps, stages), (bm, warps, 1), (max(16, bm // 2), warps, 1), (16, 4, 1)]
    args = (x, am.to(dt), mu.to(dt), P.to(dt).contiguous(), T.to(dt).contiguous(), const.to(dt),
            trc.to(dt), out_g, out_x0, out_logp, out_lap, out_logit, n, K, d)  # fmt: skip
    flags = dict(DP=dp, FULL=full, IEEE_F32=dt == torch.float32, WANT_G=want_g, WANT_X0=want_x0,
                 WANT_LAP=want_lap, WANT_LOGIT=want_logit)  # fmt: skip
    for i, (bm, warps, stages) in enumerate(tries):
        try:
            _mixture_kernel[(triton.cdiv(n, bm),)](
                *args, BM=bm, num_warps=warps, num_stages=stages, **flags
            )
            break
        except OutOfResources:
            if config is not None or i == len(tries) - 1:
                raise
    out = {"log_prob": out_logp}
    if want_logit:
        out["resp"] = torch.exp(out_logit - out_logp[:, None])
    if "score" in what:
        out["score"] = -out_g
    if "eps" in what:
        out["eps"] = sigma * out_g
    if want_x0:
        out["x0"] = out_x0
    if want_lap:
        out["laplacian"] = out_lap
    return out


if HAVE_TRITON:

    @triton.jit
    def _ddpm_kernel(
        X,
        AM,
        P,
        CONST,
        Z,
        SEED,
        COEF,
        OUT_X,
        N,
        K,
        d,
        DP: tl.constexpr,
        BM: tl.constexpr,
        FULL: tl.constexpr,
        HAVE_Z: tl.constexpr,
    ):
        """One ancestral step with an exact eps-model, fused: g = sum_k r_k P_k (x - alpha mu_k)
        by the online log-sum-exp of ``_mixture_kernel``, then x' = cx x - cg g + std z with z
        from Z (HAVE_Z) or drawn in the kernel (Philox, seed from SEED, one stream per entry)."""
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        cols = tl.arange(0, DP)
        rmask = rows < N
        xm = rmask[:, None] & (cols < d)[None, :]
        offs = rows[:, None] * d + cols[None, :]
        x = tl.load(X + offs, mask=xm, other=0.0)
        m_run = tl.full((BM,), float("-inf"), x.dtype)
        l_run = tl.zeros((BM,), x.dtype)
        acc = tl.zeros((BM, DP), x.dtype)
        for k in range(K):
            diff = x - tl.load(AM + k * DP + cols)[None, :]
            if FULL:
                g = tl.dot(diff, tl.load(P + k * DP * DP + cols[:, None] * DP + cols[None, :]))
            else:
                g = diff * tl.load(P + k * DP + cols)[None, :]
            logit = tl.load(CONST + k) - 0.5 * tl.sum(diff * g, 1)
            m_new = tl.maximum(m_run, logit)
            scale = tl.exp(m_run - m_new)
            p = tl.exp(logit - m_new)
            l_run = l_run * scale + p
            acc = acc * scale[:, None] + p[:, None] * g
            m_run = m_new
        g = acc / l_run[:, None]
        if HAVE_Z:
            z = tl.load(Z + offs, mask=xm, other=0.0)
        else:
            z = tl.randn(tl.load(SEED), offs).to(x.dtype)
        xn = tl.load(COEF) * x - tl.load(COEF + 1) * g + tl.load(COEF + 2) * z
        tl.store(OUT_X + offs, xn, mask=xm)


def fused_ddpm_step(tm, x, alpha: float, sigma: float, cx: float, cg: float, std: float, *,
                    generator=None, noise=None):  # fmt: skip
    """x' = cx x - cg g + std z, g = -score of TorchMixture ``tm`` at (alpha, sigma), in one
    kernel on CUDA (an ancestral DDPM step with the exact eps-model: eps = sigma g, x0 = (x -
    sigma eps)/alpha, so cx = c0/alpha + c_t, cg = c0 sigma^2/alpha). ``noise`` (N, d) is read
    if given; otherwise z is drawn in the kernel with Triton's Philox generator, seeded from
    ``generator`` (a CUDA torch.Generator) without a host synchronisation."""
    n, d, K = x.shape[0], tm.d, tm.K
    dp = _next_pow2(d)
    full = tm.covariance_type == "full"
    f64 = dict(device=x.device, dtype=torch.float64)
    a = torch.tensor(alpha, **f64)
    s = torch.tensor(sigma, **f64)
    c = a * a * tm._lam64 + s * s
    const = tm._logw64 - 0.5 * (d * 1.8378770664093453 + torch.log(c).sum(1))
    am = torch.zeros(K, dp, **f64)
    am[:, :d] = a * tm._mu64
    if full:
        P = torch.zeros(K, dp, dp, **f64)
        P[:, :d, :d] = (tm._Q64 / c[:, None, :]) @ tm._Q64.transpose(1, 2)
    else:
        P = torch.zeros(K, dp, **f64)
        P[:, :d] = 1.0 / c
    dt = tm.dtype
    coef = torch.tensor([cx, cg, std], **f64).to(dt)
    if noise is None:
        seed = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=x.device,
                             dtype=torch.int32)  # fmt: skip
        z = torch.empty(1, device=x.device, dtype=dt)
    else:
        seed = torch.zeros(1, device=x.device, dtype=torch.int32)
        z = noise.contiguous()
    out = torch.empty_like(x)
    bm, warps, stages = (32, 4, 2) if full and dp <= 64 else default_config(dp, full)
    _ddpm_kernel[(triton.cdiv(n, bm),)](
        x.contiguous(), am.to(dt), P.to(dt).contiguous(), const.to(dt), z, seed, coef, out, n, K,
        d, DP=dp, BM=bm, FULL=full, HAVE_Z=noise is not None, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out
