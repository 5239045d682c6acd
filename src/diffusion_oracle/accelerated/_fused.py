"""A fused Triton kernel for the diffused Gaussian mixture at one (alpha, sigma): score / eps,
log-density, Tweedie denoiser, Laplacian and the per-component logits in one pass over the
points, with no (N, K, d) intermediate.

Each program takes a block of BM points and loops over the K components. For component k

    g_k = P_k (x - alpha mu_k) = x P_k - b_k,   P_k = C_k^{-1} = Q_k diag(1/c_k) Q_k^T,
    b_k = alpha P_k mu_k,
    logit_k = log w_k - (d log 2 pi + log det C_k)/2 - (x - alpha mu_k).g_k/2,

one (BM x d) x (d x d) product per component (the 2 N K d^2 flops of the floor; the matrix units
do it, float64 included), with the point block x as the loop-invariant left operand. The
log-sum-exp over k uses a fixed shift: every logit is at most m_ref = max_k (log w_k - (d log 2 pi
+ log det C_k)/2), because the Mahalanobis term is >= 0. So p_k = exp(logit_k - m_ref) <= 1 never
overflows and no accumulator is ever rescaled: one exp per point and component, and
l = sum_k p_k, sum_k p_k g_k (and x0, Laplacian terms) accumulate directly. A second launch
(FIXUP: by ``fused_eval`` only when its one synchronisation finds such a point, by the DDPM
step always, since it does not synchronise) reads the log-densities back and evaluates again,
with the online recurrence (running
maximum m, rescaling when m grows: Milakov & Gimelshein 2018, "Online normalizer calculation for
softmax", the flash-attention recurrence), every block in which some point has l < TINY (a point
far from every component, where the fixed shift's exponentials underflow); other blocks return
at once. A branch inside the first launch would cost its registers to every block (measured
8%).
For the denoiser a second product with T_k = alpha Sigma_k C_k^{-1} = Q_k diag(alpha lam_k/c_k)
Q_k^T gives x0_k = x T_k + (mu_k - alpha T_k mu_k). Diagonal and isotropic components use the
same loop with elementwise products (P_k diagonal) and direct differences x - alpha mu_k.

The affine form x P_k - b_k rounds at the size of the cancelling terms, (|x| + alpha |mu_k|)
/ c_min, as the chunked torch path's GEMM form does (docs/design.md decisions 19-20); keeping x as
the dot's operand for every k (no per-component difference in the operand's layout) is what
measured fastest (benchmarks/RESULTS.md, session 7).

The matrices P_k, T_k, b_k depend on (alpha, sigma) and are formed once per call on the device in
float64 (K d^3 flops, negligible against N K d^2) from Python floats, with no host
synchronisation. Every float enters a kernel as its 64-bit pattern, an integer argument that
the kernel bit-casts back (``_bits``, ``_f64``): Triton would pass a Python float as float32,
and a tensor of scalars would cost a host-to-device copy per call. Used by TorchMixture on
CUDA for a scalar (alpha, sigma); a per-point time or the CPU takes the chunked torch path.
"""

from __future__ import annotations

import math
import struct

import torch

from ._common import check_finite

try:  # Triton ships with CUDA builds of torch; absent on CPU-only installs
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - exercised only where Triton is missing
    HAVE_TRITON = False

LOG_2PI = math.log(2.0 * math.pi)

# Below log l = log sum_k exp(logit_k - m_ref) = LOG_TINY a block is redone with the online
# recurrence. With l >= TINY the largest term is >= TINY/K, so every term within a relative
# eps of it is a normal number for K up to 1e10 (float64: 1e-250 * 1e-16 / 1e10 >> 2.2e-308;
# float32: 1e-20 * 6e-8 / 1e10 >> 1.2e-38); the second pass costs time only, never accuracy.
LOG_TINY = {torch.float64: math.log(1e-250), torch.float32: math.log(1e-20)}


if HAVE_TRITON:

    @triton.jit
    def _dot(a, b, IEEE_F32: tl.constexpr):
        if IEEE_F32:  # float32 without TF32 rounding of the operands
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b)

    @triton.jit
    def _f64(bits):
        """A float64 passed as its bit pattern (:func:`_bits`)."""
        return bits.to(tl.int64).to(tl.float64, bitcast=True)

    @triton.jit
    def _sweep(x, m_run, AM, B, MU0, P, T, CONST, TRC, OUT_LOGIT, rows, rmask, cols, K,
               DP: tl.constexpr, BM: tl.constexpr, FULL: tl.constexpr, IEEE_F32: tl.constexpr,
               WANT_G: tl.constexpr, WANT_X0: tl.constexpr, WANT_LAP: tl.constexpr,
               WANT_LOGIT: tl.constexpr, ONLINE: tl.constexpr):  # fmt: skip
        """One pass over the K components for the block x (BM, DP): returns (m, l, sum p g,
        sum p x0, sum p lap) with p = exp(logit - m). ONLINE=False keeps m = m_run fixed (the
        shift that bounds every logit); ONLINE=True updates m to the running maximum and
        rescales the accumulators when it grows."""
        l_run = tl.zeros((BM,), x.dtype)
        acc_g = tl.zeros((BM, DP), x.dtype)
        acc_x0 = tl.zeros((BM, DP), x.dtype)
        acc_lap = tl.zeros((BM,), x.dtype)
        for k in range(K):
            diff = x - tl.load(AM + k * DP + cols)[None, :]  # zero in the padded columns
            if FULL:
                pk = tl.load(P + k * DP * DP + cols[:, None] * DP + cols[None, :])
                g = _dot(x, pk, IEEE_F32) - tl.load(B + k * DP + cols)[None, :]
            else:
                g = diff * tl.load(P + k * DP + cols)[None, :]
            logit = tl.load(CONST + k) - 0.5 * tl.sum(diff * g, 1)
            if WANT_LOGIT:
                tl.store(OUT_LOGIT + rows * K + k, logit, mask=rmask)
            if ONLINE:
                m_new = tl.maximum(m_run, logit)
                scale = tl.exp(m_run - m_new)
                p = tl.exp(logit - m_new)
                l_run = l_run * scale + p
                acc_g = acc_g * scale[:, None]
                acc_x0 = acc_x0 * scale[:, None]
                acc_lap = acc_lap * scale
                m_run = m_new
            else:
                p = tl.exp(logit - m_run)
                l_run += p
            if WANT_G:
                acc_g += p[:, None] * g
            if WANT_LAP:
                acc_lap += p * (tl.sum(g * g, 1) - tl.load(TRC + k))
            if WANT_X0:
                if FULL:
                    tk = tl.load(T + k * DP * DP + cols[:, None] * DP + cols[None, :])
                    x0 = _dot(x, tk, IEEE_F32) + tl.load(MU0 + k * DP + cols)[None, :]
                else:
                    x0 = (
                        tl.load(MU0 + k * DP + cols)[None, :]
                        + diff * tl.load(T + k * DP + cols)[None, :]
                    )
                acc_x0 += p[:, None] * x0
        return m_run, l_run, acc_g, acc_x0, acc_lap

    @triton.jit
    def _rows(blk, N, d, DP: tl.constexpr, BM: tl.constexpr, I64: tl.constexpr):
        """Block ``blk``'s rows, columns, masks and element offsets (int64 where N d or N K
        could overflow int32)."""
        if I64:
            rows = blk.to(tl.int64) * BM + tl.arange(0, BM)
        else:
            rows = blk * BM + tl.arange(0, BM)
        cols = tl.arange(0, DP)
        rmask = rows < N
        xm = rmask[:, None] & (cols < d)[None, :]
        return rows, cols, rmask, xm, rows[:, None] * d + cols[None, :]

    @triton.jit
    def _mref(CONST, K, KP: tl.constexpr):
        """m_ref = max_k CONST_k, which bounds every logit (one vector load, KP >= K)."""
        kk = tl.arange(0, KP)
        return tl.max(tl.load(CONST + kk, mask=kk < K, other=float("-inf")), 0)

    @triton.jit
    def _below(OUT_LOGP, rows, N, mref, LOG_TINY: tl.constexpr):
        """Whether the first launch left some row with log l = log p - m_ref < LOG_TINY."""
        lp = tl.load(OUT_LOGP + rows, mask=rows < N, other=float("inf"))
        return tl.min(lp - mref) < LOG_TINY

    @triton.jit
    def _fixup_range(OUT_LOGP, mref, N, BM: tl.constexpr, CH: tl.constexpr, I64: tl.constexpr,
                     LOG_TINY: tl.constexpr):  # fmt: skip
        """The second launch: program p looks after blocks p CH .. p CH + CH - 1 and reads
        their log-densities at once; it returns (first block, number of blocks to examine
        one by one: 0 when none has a row below LOG_TINY, else CH)."""
        first = tl.program_id(0) * CH
        if I64:
            r = first.to(tl.int64) * BM + tl.arange(0, CH * BM)
        else:
            r = first * BM + tl.arange(0, CH * BM)
        return first, _below(OUT_LOGP, r, N, mref, LOG_TINY=LOG_TINY).to(tl.int32) * CH

    @triton.jit
    def _mixture_body(x, m0, AM, B, MU0, P, T, CONST, TRC, gscale, OUT_G, OUT_X0, OUT_LOGP,
                      OUT_LAP, OUT_LOGIT, rows, cols, rmask, xm, offs, K, DP: tl.constexpr,
                      BM: tl.constexpr, FULL: tl.constexpr, IEEE_F32: tl.constexpr,
                      WANT_G: tl.constexpr, WANT_X0: tl.constexpr, WANT_LAP: tl.constexpr,
                      WANT_LOGIT: tl.constexpr, ONLINE: tl.constexpr):  # fmt: skip
        m, l, acc_g, acc_x0, acc_lap = _sweep(
            x, m0, AM, B, MU0, P, T, CONST, TRC, OUT_LOGIT, rows, rmask, cols, K, DP=DP, BM=BM,
            FULL=FULL, IEEE_F32=IEEE_F32, WANT_G=WANT_G, WANT_X0=WANT_X0, WANT_LAP=WANT_LAP,
            WANT_LOGIT=WANT_LOGIT, ONLINE=ONLINE,
        )  # fmt: skip
        inv_l = 1.0 / l
        logp = m + tl.log(l)
        tl.store(OUT_LOGP + rows, logp, mask=rmask)
        gs = acc_g * inv_l[:, None]
        if WANT_G:
            tl.store(OUT_G + offs, gs * gscale, mask=xm)
        if WANT_X0:
            tl.store(OUT_X0 + offs, acc_x0 * inv_l[:, None], mask=xm)
        if WANT_LAP:
            tl.store(OUT_LAP + rows, acc_lap * inv_l - tl.sum(gs * gs, 1), mask=rmask)
        return logp

    @triton.jit(do_not_specialize=["GS_BITS"])
    def _mixture_kernel(X, AM, B, MU0, P, T, CONST, TRC, GS_BITS: tl.int64, FLAG, OUT_G, OUT_X0,
                        OUT_LOGP, OUT_LAP, OUT_LOGIT, N, K, d, KP: tl.constexpr, DP: tl.constexpr,
                        BM: tl.constexpr, FULL: tl.constexpr, IEEE_F32: tl.constexpr,
                        WANT_G: tl.constexpr, WANT_X0: tl.constexpr, WANT_LAP: tl.constexpr,
                        WANT_LOGIT: tl.constexpr, I64: tl.constexpr, FIXUP: tl.constexpr,
                        CH: tl.constexpr, LOG_TINY: tl.constexpr):  # fmt: skip
        """log p, gscale sum_k r_k g_k, sum_k r_k x0_k, the Laplacian and the logits of a
        block of points (module docstring): the fixed-shift pass, or with FIXUP the online
        pass over the blocks the first launch left below LOG_TINY. The fixed-shift pass ORs
        into FLAG[0] 1 when some row has log p - m_ref < LOG_TINY (FIXUP's work) and 2 when
        some row has log p NaN or -inf (a non-finite x, or every term underflowed)."""
        mref = _mref(CONST, K, KP=KP)
        gscale = _f64(GS_BITS)
        if FIXUP:  # blocks the first launch left below LOG_TINY, online (module docstring)
            first, count = _fixup_range(OUT_LOGP, mref, N, BM=BM, CH=CH, I64=I64,
                                        LOG_TINY=LOG_TINY)  # fmt: skip
            for j in range(count):
                rows, cols, rmask, xm, offs = _rows(first + j, N, d, DP=DP, BM=BM, I64=I64)
                if _below(OUT_LOGP, rows, N, mref, LOG_TINY=LOG_TINY):
                    x = tl.load(X + offs, mask=xm, other=0.0)
                    _mixture_body(
                        x, tl.full((BM,), float("-inf"), x.dtype), AM, B, MU0, P, T, CONST, TRC,
                        gscale, OUT_G, OUT_X0, OUT_LOGP, OUT_LAP, OUT_LOGIT, rows, cols, rmask,
                        xm, offs, K, DP=DP, BM=BM, FULL=FULL, IEEE_F32=IEEE_F32, WANT_G=WANT_G,
                        WANT_X0=WANT_X0, WANT_LAP=WANT_LAP, WANT_LOGIT=WANT_LOGIT, ONLINE=True,
                    )  # fmt: skip
        else:
            rows, cols, rmask, xm, offs = _rows(tl.program_id(0), N, d, DP=DP, BM=BM, I64=I64)
            x = tl.load(X + offs, mask=xm, other=0.0)
            logp = _mixture_body(
                x, tl.zeros((BM,), x.dtype) + mref, AM, B, MU0, P, T, CONST, TRC, gscale, OUT_G,
                OUT_X0, OUT_LOGP, OUT_LAP, OUT_LOGIT, rows, cols, rmask, xm, offs, K, DP=DP,
                BM=BM, FULL=FULL, IEEE_F32=IEEE_F32, WANT_G=WANT_G, WANT_X0=WANT_X0,
                WANT_LAP=WANT_LAP, WANT_LOGIT=WANT_LOGIT, ONLINE=False,
            )  # fmt: skip
            # bit 2: some row's log p is NaN or -inf; bit 1: some row is below the threshold
            bad = tl.max(tl.where(rmask & ~(logp > float("-inf")), 1, 0), 0)
            below = tl.max(tl.where(rmask & (logp - mref < LOG_TINY), 1, 0), 0)
            code = 2 * bad + below
            if code != 0:  # rare: no atomic in the common case
                tl.atomic_or(FLAG, code)

    @triton.jit
    def _ddpm_body(x, m0, X, AM, B, P, CONST, Z, SEED, cx, cg, std, OUT_X, OUT_LOGP, rows, cols,
                   rmask, xm, offs, K, DP: tl.constexpr, BM: tl.constexpr, FULL: tl.constexpr,
                   IEEE_F32: tl.constexpr, HAVE_Z: tl.constexpr,
                   ONLINE: tl.constexpr):  # fmt: skip
        m, l, acc_g, acc_x0, acc_lap = _sweep(
            x, m0, AM, B, AM, P, P, CONST, CONST, OUT_X, rows, rmask, cols, K, DP=DP, BM=BM,
            FULL=FULL, IEEE_F32=IEEE_F32, WANT_G=True, WANT_X0=False, WANT_LAP=False,
            WANT_LOGIT=False, ONLINE=ONLINE,
        )  # fmt: skip
        tl.store(OUT_LOGP + rows, m + tl.log(l), mask=rmask)
        g = acc_g * (1.0 / l)[:, None]  # one division per point, not per entry
        if HAVE_Z:
            z = tl.load(Z + offs, mask=xm, other=0.0)
        else:
            # four normals per Philox counter (row, j) for columns 4j .. 4j+3 (both Box-Muller
            # outputs of two uniform pairs: a quarter of the Philox work of tl.randn, measured
            # 0.25 ms less per step at N = 2^20, d = 64); the same z in both launches
            H: tl.constexpr = DP // 4
            counter = rows[:, None] * H + tl.arange(0, H)[None, :]
            n1, n2, n3, n4 = tl.randn4x(tl.load(SEED), counter)
            z = tl.reshape(tl.join(tl.join(n1, n2), tl.join(n3, n4)), (BM, DP)).to(x.dtype)
        # x read again (from L2, where the block's first read left it) rather than kept live
        # through the component loop: spills 134 -> 70 registers, 4.85 -> 4.65 ms per step
        # (N = 2^20, K = 16, d = 64, H200); the cache modifier keeps the compiler from merging
        # the two reads into one
        xr = tl.load(X + offs, mask=xm, other=0.0, cache_modifier=".cg")
        xn = cx * xr - cg * g + std * z
        tl.store(OUT_X + offs, xn, mask=xm)

    @triton.jit(do_not_specialize=["CX_BITS", "CG_BITS", "STD_BITS"])
    def _ddpm_kernel(X, AM, B, P, CONST, CX_BITS: tl.int64, CG_BITS: tl.int64, STD_BITS: tl.int64,
                     Z, SEED, OUT_X, OUT_LOGP, N, K, d,
                     KP: tl.constexpr, DP: tl.constexpr, BM: tl.constexpr, FULL: tl.constexpr,
                     IEEE_F32: tl.constexpr, HAVE_Z: tl.constexpr, I64: tl.constexpr,
                     FIXUP: tl.constexpr, CH: tl.constexpr, LOG_TINY: tl.constexpr):  # fmt: skip
        """One ancestral step with an exact eps-model, fused: g = sum_k r_k P_k (x - alpha mu_k)
        by the reduction of ``_mixture_kernel`` (the same two launches), then x' = cx x - cg g +
        std z, (cx, cg, std) given as bit patterns (:func:`_bits`), with z from Z (HAVE_Z) or
        drawn in the kernel (Philox, seed from SEED, one stream per entry)."""
        mref = _mref(CONST, K, KP=KP)
        cx, cg, std = _f64(CX_BITS), _f64(CG_BITS), _f64(STD_BITS)
        if FIXUP:  # blocks the first launch left below LOG_TINY, online
            first, count = _fixup_range(OUT_LOGP, mref, N, BM=BM, CH=CH, I64=I64,
                                        LOG_TINY=LOG_TINY)  # fmt: skip
            for j in range(count):
                rows, cols, rmask, xm, offs = _rows(first + j, N, d, DP=DP, BM=BM, I64=I64)
                if _below(OUT_LOGP, rows, N, mref, LOG_TINY=LOG_TINY):
                    x = tl.load(X + offs, mask=xm, other=0.0)
                    _ddpm_body(
                        x, tl.full((BM,), float("-inf"), x.dtype), X, AM, B, P, CONST, Z, SEED,
                        cx, cg, std, OUT_X, OUT_LOGP, rows, cols, rmask, xm, offs, K, DP=DP, BM=BM,
                        FULL=FULL, IEEE_F32=IEEE_F32, HAVE_Z=HAVE_Z, ONLINE=True,
                    )  # fmt: skip
        else:
            rows, cols, rmask, xm, offs = _rows(tl.program_id(0), N, d, DP=DP, BM=BM, I64=I64)
            x = tl.load(X + offs, mask=xm, other=0.0)
            _ddpm_body(
                x, tl.zeros((BM,), x.dtype) + mref, X, AM, B, P, CONST, Z, SEED, cx, cg, std, OUT_X,
                OUT_LOGP, rows, cols, rmask, xm, offs, K, DP=DP, BM=BM, FULL=FULL,
                IEEE_F32=IEEE_F32, HAVE_Z=HAVE_Z, ONLINE=False,
            )  # fmt: skip

    @triton.jit(do_not_specialize=["A_BITS", "S_BITS", "L2PI_BITS"])
    def _prep_kernel(Q, LAM, MU, LOGW, A_BITS: tl.int64, S_BITS: tl.int64, L2PI_BITS: tl.int64,
                     FLAG, OUT_AM, OUT_B, OUT_MU0, OUT_P, OUT_T, OUT_CONST, OUT_TRC, d,
                     DP: tl.constexpr, FULL: tl.constexpr, WANT_X0: tl.constexpr,
                     ZERO_FLAG: tl.constexpr):  # fmt: skip
        """The per-(alpha, sigma) parameters of component k = program id, in float64 from
        (alpha, sigma, log 2 pi) given as bit patterns (:func:`_bits`), zero-padded to DP; with
        ZERO_FLAG, program 0 also clears the first launch's FLAG. alpha mu_k; c = alpha^2 lam_k +
        sigma^2; P_k = Q_k diag(1/c) Q_k^T (or 1/c); b_k = P_k alpha mu_k; the logit constant
        log w_k - (d log 2 pi + sum log c)/2; tr C_k^{-1}; for the denoiser T_k = Q_k
        diag(alpha lam_k/c) Q_k^T (or its diagonal) and mu_k - T_k alpha mu_k (or mu_k)."""
        k = tl.program_id(0)
        if ZERO_FLAG:
            if k == 0:
                tl.store(FLAG, 0)
        a = _f64(A_BITS)
        s = _f64(S_BITS)
        i = tl.arange(0, DP)
        im = i < d
        lam = tl.load(LAM + k * d + i, mask=im, other=0.0)
        mu = tl.load(MU + k * d + i, mask=im, other=0.0)
        c = a * a * lam + s * s
        inv = tl.where(im, 1.0 / c, 0.0)
        am = a * mu
        tx = a * lam * inv
        logdet = tl.sum(tl.where(im, tl.log(c), 0.0), 0)
        tl.store(OUT_AM + k * DP + i, am)
        tl.store(OUT_CONST + k, tl.load(LOGW + k) - 0.5 * (d * _f64(L2PI_BITS) + logdet))
        tl.store(OUT_TRC + k, tl.sum(inv, 0))
        if FULL:
            sq = i[:, None] * DP + i[None, :]
            qm = im[:, None] & im[None, :]
            qk = tl.load(Q + k * d * d + i[:, None] * d + i[None, :], mask=qm, other=0.0)
            pk = tl.dot(qk * inv[None, :], tl.trans(qk))
            tl.store(OUT_P + k * DP * DP + sq, pk)
            tl.store(OUT_B + k * DP + i, tl.sum(pk * am[None, :], 1))  # P_k symmetric
            if WANT_X0:
                tk = tl.dot(qk * tx[None, :], tl.trans(qk))
                tl.store(OUT_T + k * DP * DP + sq, tk)
                tl.store(OUT_MU0 + k * DP + i, mu - tl.sum(tk * am[None, :], 1))
        else:
            tl.store(OUT_P + k * DP + i, inv)
            tl.store(OUT_T + k * DP + i, tx)
            tl.store(OUT_MU0 + k * DP + i, mu)


def _next_pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())  # tl.dot needs at least 16


def default_config(dp: int, full: bool) -> tuple[int, int, int]:
    """(BM, num_warps, num_stages): the fastest of a sweep over BM in 16..128, 4 or 8 warps,
    1 to 3 stages in float64 on an H100 and an H200 (``bench_mixture_score.py --sweep``,
    ``bench_ddpm_and_stats.py --sweep``; benchmarks/RESULTS.md), for the score and the DDPM
    step alike; float32 uses the same blocks (not swept: it needs half the registers and shared
    memory, so every float64 configuration fits). Register and shared-memory use grow with
    BM x DP and DP^2 (BM = 128 at DP = 128 does not fit; 3 stages at DP = 128 do not fit)."""
    if not full:
        return 16, 4, 2
    if dp <= 64:
        return 64, 4, 2
    return 32, 8, 2


# d beyond which the full-covariance kernel's (d x d) tiles no longer fit in shared memory:
# TorchMixture takes the chunked torch path there (and for diagonal components beyond
# MAX_DP_DIAG, where a block of points no longer fits in registers)
MAX_DP_FULL, MAX_DP_DIAG = 128, 1024
FIXUP_CH = 64  # blocks per program of the second launch


def fusable(tm) -> bool:
    """Whether the fused kernels take mixture ``tm`` (its padded dimension fits)."""
    limit = MAX_DP_FULL if tm.covariance_type == "full" else MAX_DP_DIAG
    return _next_pow2(tm.d) <= limit


def _bits(v: float) -> int:
    """The bit pattern of float64 ``v`` as a signed 64-bit integer: how a float reaches a kernel
    in full precision with no host-to-device copy (Triton would pass a Python float as float32;
    the kernels read it back with ``_f64``)."""
    return struct.unpack("<q", struct.pack("<d", float(v)))[0]


_LOG_2PI_BITS = _bits(LOG_2PI)


def _params(tm, alpha: float, sigma: float, dp: int, want_x0: bool, device, flag=None) -> dict:
    """The per-(alpha, sigma) tensors of the kernels (``_prep_kernel``, one program per
    component, float64 arithmetic, stored in the mixture's dtype); ``flag`` (int32, one entry)
    is cleared on the way, in stream order before the first launch that sets it."""
    K, full = tm.K, tm.covariance_type == "full"
    kw = dict(device=device, dtype=tm.dtype)
    mat = (K, dp, dp) if full else (K, dp)
    out = dict(
        am=torch.empty(K, dp, **kw), b=torch.empty(K, dp, **kw), mu0=torch.empty(K, dp, **kw),
        P=torch.empty(mat, **kw), T=torch.empty(mat if want_x0 or not full else (1,), **kw),
        const=torch.empty(K, **kw), trc=torch.empty(K, **kw),
    )  # fmt: skip
    Q = tm._Q64 if full else tm._lam64  # the diagonal case never reads Q
    _prep_kernel[(K,)](
        Q, tm._lam64, tm._mu64, tm._logw64, _bits(alpha), _bits(sigma), _LOG_2PI_BITS,
        out["trc"] if flag is None else flag, out["am"], out["b"], out["mu0"], out["P"], out["T"],
        out["const"], out["trc"], tm.d, DP=dp, FULL=full, WANT_X0=want_x0,
        ZERO_FLAG=flag is not None, num_warps=8 if dp > 64 else 4,
    )  # fmt: skip
    return out


def _launch(kernel, n: int, config, dp: int, full: bool, args, flags, *, fixup=True):
    """The first launch of ``kernel`` (the fixed-shift pass) and, with ``fixup``, the second
    (FIXUP) on blocks of the same size; returns the (BM, num_warps, num_stages) used. A
    configuration that does not fit (the denoiser's second matrix doubles the shared memory per
    component) falls back to one stage, then to smaller point blocks, unless ``config`` was
    given explicitly."""
    bm, warps, stages = config or default_config(dp, full)
    tries = [(bm, warps, stages), (bm, warps, 1), (max(16, bm // 2), warps, 1), (16, 4, 1)]
    for i, cfg in enumerate(tries):
        try:
            bm, warps, stages = cfg
            kernel[(triton.cdiv(n, bm),)](
                *args, BM=bm, num_warps=warps, num_stages=stages, FIXUP=False, CH=FIXUP_CH,
                **flags,
            )  # fmt: skip
            if fixup:
                _launch_fixup(kernel, n, cfg, args, flags)
            return cfg
        except OutOfResources:
            if config is not None or i == len(tries) - 1:
                raise


def _launch_fixup(kernel, n: int, cfg, args, flags) -> None:
    """The second launch, on the first's blocks: one program per FIXUP_CH blocks (a program
    per block cost 53 us of launch waves at N = 2^20 on an H200, for nothing when no block is
    below LOG_TINY)."""
    bm, warps, stages = cfg
    kernel[(triton.cdiv(triton.cdiv(n, bm), FIXUP_CH),)](
        *args, BM=bm, num_warps=warps, num_stages=stages, FIXUP=True, CH=FIXUP_CH, **flags
    )


def _flags(tm, n: int, dp: int) -> dict:
    dt = tm.dtype
    return dict(KP=_next_pow2(tm.K), DP=dp, FULL=tm.covariance_type == "full",
                IEEE_F32=dt == torch.float32, I64=n * max(dp, tm.K) >= 2**31,
                LOG_TINY=LOG_TINY[dt])  # fmt: skip


def fused_eval(tm, x: torch.Tensor, alpha: float, sigma: float, what, *, config=None) -> dict:
    """Evaluate the quantities in ``what`` (subset of log_prob, resp, score, eps, x0,
    laplacian) of TorchMixture ``tm`` at points x (N, d) on CUDA, scalar (alpha, sigma): the
    formulas of ``targets`` (score = -sum_k r_k g_k, Song et al. 2021; Tweedie's x0, Efron
    2011), reduced over k as in the module docstring. The
    score (-g) or eps (sigma g) is scaled in the kernel; a call asking for both derives eps from
    the score. ``config`` = (BM, num_warps, num_stages) overrides ``default_config``. A
    non-finite entry of x is a ValueError naming it (found through the log-densities). The
    floats reach the kernels as bit patterns and the first launch reports through a flag, so
    the call copies nothing to the device and reads one int32 back (its one synchronisation)."""
    n, d, K = x.shape[0], tm.d, tm.K
    dp = _next_pow2(d)
    dt, dev = tm.dtype, x.device
    want_x0 = "x0" in what
    want_g = bool({"score", "eps", "laplacian"} & set(what))
    want_lap = "laplacian" in what
    want_logit = "resp" in what
    gscale = -1.0 if "score" in what else (sigma if "eps" in what else 1.0)
    flag = torch.empty(1, device=dev, dtype=torch.int32)  # cleared by the prep kernel
    prm = _params(tm, alpha, sigma, dp, want_x0, dev, flag)
    cast = dict(device=dev, dtype=dt)
    unused = torch.empty(1, **cast)  # one placeholder for every output not asked for
    out_g = torch.empty(n, d, **cast) if want_g else unused
    out_x0 = torch.empty(n, d, **cast) if want_x0 else unused
    out_lap = torch.empty(n, **cast) if want_lap else unused
    out_logit = torch.empty(n, K, **cast) if want_logit else unused
    out_logp = torch.empty(n, **cast)
    args = (x.contiguous(), *(prm[k] for k in ("am", "b", "mu0", "P", "T", "const", "trc")),
            _bits(gscale), flag, out_g, out_x0, out_logp, out_lap, out_logit, n, K, d)  # fmt: skip
    flags = dict(WANT_G=want_g, WANT_X0=want_x0, WANT_LAP=want_lap, WANT_LOGIT=want_logit)
    full = tm.covariance_type == "full"
    flags = {**_flags(tm, n, dp), **flags}
    cfg = _launch(_mixture_kernel, n, config, dp, full, args, flags, fixup=False)
    # one synchronisation, on the first launch's flag: the second launch only when some point
    # fell below the fixed shift's threshold (bit 1), and the finiteness of x read off its
    # log-densities (bit 2): a non-finite entry makes its log-density NaN, or -inf (an infinite
    # entry against diagonal components), so x is read again only then, to name the bad entry
    # (a finite point can have log l = -inf too, when every term underflows: it goes on to the
    # second launch)
    code = int(flag.item())
    if code & 2:
        check_finite(x, "x")
    if code & 1:
        try:
            _launch_fixup(_mixture_kernel, n, cfg, args, flags)
        except OutOfResources:  # the online variant did not fit: both launches, smaller blocks
            _launch(_mixture_kernel, n, (16, 4, 1), dp, full, args, flags)
    out = {"log_prob": out_logp}
    if want_logit:
        out["resp"] = torch.exp(out_logit - out_logp[:, None])
    if "score" in what:
        out["score"] = out_g
        if "eps" in what:
            out["eps"] = (-sigma) * out_g
    elif "eps" in what:
        out["eps"] = out_g
    if want_x0:
        out["x0"] = out_x0
    if want_lap:
        out["laplacian"] = out_lap
    return out


def fused_ddpm_step(tm, x, alpha: float, sigma: float, cx: float, cg: float, std: float, *,
                    generator=None, noise=None, config=None):  # fmt: skip
    """x' = cx x - cg g + std z, g = -score of TorchMixture ``tm`` at (alpha, sigma), fused on
    CUDA: an ancestral DDPM step (Ho et al. 2020, Algorithm 2, in the form x' = c0 x0 + ct x +
    std z of ``samplers.DDPM``) with the exact eps-model: eps = sigma g, x0 = (x - sigma eps)/
    alpha, so cx = c0/alpha + ct, cg = c0 sigma^2/alpha. ``noise`` (N, d) is read if given;
    otherwise z is drawn in the kernel with Triton's Philox generator, seeded from ``generator``
    (a CUDA torch.Generator). No host synchronisation. ``config`` as in :func:`fused_eval`."""
    if noise is None:
        seed = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=x.device,
                             dtype=torch.int32)  # fmt: skip
    else:
        seed = torch.zeros(1, device=x.device, dtype=torch.int32)
    return _ddpm_step(tm, x, (alpha, sigma, cx, cg, std), seed, noise, config)


def fused_ddpm_steps(tm, x, steps, *, generator, config=None):
    """Several fused steps (:func:`fused_ddpm_step`), ``steps`` a list of (alpha, sigma, cx, cg,
    std): their seeds come in one draw from ``generator`` before the first step, so the loop
    only queues kernels (the scalars travel as kernel arguments)."""
    if not steps:
        return x
    seeds = torch.randint(0, 2**31 - 1, (len(steps),), generator=generator, device=x.device,
                          dtype=torch.int32)  # fmt: skip
    for i, step in enumerate(steps):
        x = _ddpm_step(tm, x, step, seeds[i : i + 1], None, config)
    return x


def _ddpm_step(tm, x, step, seed, noise, config):
    """One launch pair of ``_ddpm_kernel``: step = (alpha, sigma, cx, cg, std) as floats and
    the int32 seed on the device."""
    alpha, sigma, cx, cg, std = step
    n, d = x.shape[0], tm.d
    dp = _next_pow2(d)
    dt = tm.dtype
    prm = _params(tm, alpha, sigma, dp, False, x.device)
    z = torch.empty(1, device=x.device, dtype=dt) if noise is None else noise.contiguous()
    out = torch.empty_like(x)
    logp = torch.empty(n, device=x.device, dtype=dt)  # read by the second launch only
    args = (x.contiguous(), prm["am"], prm["b"], prm["P"], prm["const"], _bits(cx), _bits(cg),
            _bits(std), z, seed, out, logp, n, tm.K, d)  # fmt: skip
    flags = {**_flags(tm, n, dp), "HAVE_Z": noise is not None}
    _launch(_ddpm_kernel, n, config, dp, tm.covariance_type == "full", args, flags)
    return out
