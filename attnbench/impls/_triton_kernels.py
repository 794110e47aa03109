"""Triton kernels for chunked causal linear attention (forward and backward).

Imported only by :mod:`attnbench.impls.chunked_triton` when a kernel is about to run (this module
imports triton at the top). Tensors are contiguous, row-major ``[B*H, N, D]`` / ``[B*H, N, M]``;
``pid(1)`` picks the (batch, head) slice. Each program walks its slice chunk by chunk (BLOCK_C
rows), carrying a fp32 state in registers; see docs/triton.md for the algebra.

Precision: phi and all states are fp32. Products of two input-precision tiles (phi(q) phi(k)^T,
A v, the state updates) run in the input dtype with fp32 accumulation (tensor cores); products
with a fp32 state run in fp32 at ``DOT_PREC`` ("tf32" or "ieee"), because a state summed over a long
sequence can exceed fp16's range.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _phi(x):
    # elu(x) + 1; the unselected exp branch may be inf, which where() discards.
    return tl.where(x > 0, x + 1.0, tl.exp(x))


@triton.jit
def _dphi(x):
    return tl.where(x > 0, 1.0, tl.exp(x))


@triton.jit
def _load_phi(ptr, rows, cols, mask, ncols):
    """phi of a [rows, cols] tile as fp32, exactly 0 outside the tensor (padding adds nothing)."""
    x = tl.load(ptr + rows[:, None] * ncols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return tl.where(mask, _phi(x), 0.0), x


@triton.jit
def chunked_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    rden_ptr,
    N,
    D,
    M,
    eps,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(M, BLOCK_M), B*H); BLOCK_D covers all of D. Writes o_ptr and 1/(den + eps)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    q_ptr += bh * N * D
    k_ptr += bh * N * D
    v_ptr += bh * N * M
    o_ptr += bh * N * M
    rden_ptr += bh * N
    dt = v_ptr.dtype.element_ty
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    causal = offs_c[:, None] >= offs_c[None, :]
    s = tl.zeros([BLOCK_D, BLOCK_M], dtype=tl.float32)  # sum over earlier chunks of phi(k)^T v
    z = tl.zeros([BLOCK_D], dtype=tl.float32)  # sum over earlier chunks of phi(k)
    for t in range(0, N, BLOCK_C):
        rows = t + offs_c
        mask_qk = (rows < N)[:, None] & (offs_d < D)[None, :]
        mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
        qf, _ = _load_phi(q_ptr, rows, offs_d, mask_qk, D)
        kf, _ = _load_phi(k_ptr, rows, offs_d, mask_qk, D)
        v = tl.load(v_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
        a = tl.dot(qf.to(dt), tl.trans(kf.to(dt)), input_precision=DOT_PREC)
        a = tl.where(causal, a, 0.0)
        num = tl.dot(a.to(dt), v, input_precision=DOT_PREC) + tl.dot(qf, s, input_precision=DOT_PREC)
        rden = 1.0 / (tl.sum(a, 1) + tl.sum(qf * z[None, :], 1) + eps)
        tl.store(o_ptr + rows[:, None] * M + offs_m[None, :], (num * rden[:, None]).to(dt), mask=mask_v)
        tl.store(rden_ptr + rows, rden, mask=rows < N - pid_m * N)  # only the pid_m == 0 program
        s += tl.dot(tl.trans(kf.to(dt)), v, input_precision=DOT_PREC)
        z += tl.sum(kf, 0)


@triton.jit
def chunked_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    g_ptr,
    rden_ptr,
    dq_ptr,
    N,
    D,
    M,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(D, BLOCK_D), B*H); BLOCK_M covers all of M. Forward sweep:
    dphi(q)_c = dP_c phi(k)_c + dnum_c S_prev^T + dden_c z_prev^T, dP = (dnum v^T + dden) masked."""
    pid_d = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    q_ptr += bh * N * D
    k_ptr += bh * N * D
    dq_ptr += bh * N * D
    v_ptr += bh * N * M
    o_ptr += bh * N * M
    g_ptr += bh * N * M
    rden_ptr += bh * N
    dt = v_ptr.dtype.element_ty
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    causal = offs_c[:, None] >= offs_c[None, :]
    s = tl.zeros([BLOCK_D, BLOCK_M], dtype=tl.float32)
    z = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t in range(0, N, BLOCK_C):
        rows = t + offs_c
        mask_qk = (rows < N)[:, None] & (offs_d < D)[None, :]
        mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
        _, q = _load_phi(q_ptr, rows, offs_d, mask_qk, D)
        kf, _ = _load_phi(k_ptr, rows, offs_d, mask_qk, D)
        v = tl.load(v_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
        g = tl.load(g_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
        o = tl.load(o_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
        rden = tl.load(rden_ptr + rows, mask=rows < N, other=0.0)
        dnum = g * rden[:, None]
        dden = -tl.sum(g * o, 1) * rden
        dp = tl.dot(dnum.to(dt), tl.trans(v), input_precision=DOT_PREC) + dden[:, None]
        dp = tl.where(causal, dp, 0.0)
        dqf = tl.dot(dp.to(dt), kf.to(dt), input_precision=DOT_PREC)
        dqf += tl.dot(dnum, tl.trans(s), input_precision=DOT_PREC) + dden[:, None] * z[None, :]
        tl.store(dq_ptr + rows[:, None] * D + offs_d[None, :], (dqf * _dphi(q)).to(dt), mask=mask_qk)
        s += tl.dot(tl.trans(kf.to(dt)), v, input_precision=DOT_PREC)
        z += tl.sum(kf, 0)


@triton.jit
def chunked_dk_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    g_ptr,
    rden_ptr,
    dk_ptr,
    N,
    D,
    M,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(D, BLOCK_D), B*H); BLOCK_M covers all of M. Reverse sweep:
    dphi(k)_c = dP_c^T phi(q)_c + v_c R_next^T + r_next, R = sum phi(q) dnum^T, r = sum phi(q) dden."""
    pid_d = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    q_ptr += bh * N * D
    k_ptr += bh * N * D
    dk_ptr += bh * N * D
    v_ptr += bh * N * M
    o_ptr += bh * N * M
    g_ptr += bh * N * M
    rden_ptr += bh * N
    dt = v_ptr.dtype.element_ty
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    causal = offs_c[:, None] >= offs_c[None, :]
    r_state = tl.zeros([BLOCK_D, BLOCK_M], dtype=tl.float32)  # sum over later chunks of phi(q)^T dnum
    r_vec = tl.zeros([BLOCK_D], dtype=tl.float32)  # sum over later chunks of phi(q) dden
    n_chunks = tl.cdiv(N, BLOCK_C)
    for i in range(0, n_chunks):
        rows = (n_chunks - 1 - i) * BLOCK_C + offs_c
        mask_qk = (rows < N)[:, None] & (offs_d < D)[None, :]
        mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
        qf, _ = _load_phi(q_ptr, rows, offs_d, mask_qk, D)
        kf, k = _load_phi(k_ptr, rows, offs_d, mask_qk, D)
        v = tl.load(v_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
        g = tl.load(g_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
        o = tl.load(o_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
        rden = tl.load(rden_ptr + rows, mask=rows < N, other=0.0)
        dnum = g * rden[:, None]
        dden = -tl.sum(g * o, 1) * rden
        dp = tl.dot(dnum.to(dt), tl.trans(v), input_precision=DOT_PREC) + dden[:, None]
        dp = tl.where(causal, dp, 0.0)
        dkf = tl.dot(tl.trans(dp.to(dt)), qf.to(dt), input_precision=DOT_PREC)
        dkf += tl.dot(v.to(tl.float32), tl.trans(r_state), input_precision=DOT_PREC) + r_vec[None, :]
        tl.store(dk_ptr + rows[:, None] * D + offs_d[None, :], (dkf * _dphi(k)).to(dt), mask=mask_qk)
        r_state += tl.dot(tl.trans(qf.to(dt)), dnum.to(dt), input_precision=DOT_PREC)
        r_vec += tl.sum(qf * dden[:, None], 0)


@triton.jit
def chunked_dv_kernel(
    q_ptr,
    k_ptr,
    g_ptr,
    rden_ptr,
    dv_ptr,
    N,
    D,
    M,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(M, BLOCK_M), B*H); BLOCK_D covers all of D. Reverse sweep:
    dv_c = A_c^T dnum_c + phi(k)_c R_next, A = phi(q) phi(k)^T masked, R = sum phi(q)^T dnum."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    q_ptr += bh * N * D
    k_ptr += bh * N * D
    g_ptr += bh * N * M
    dv_ptr += bh * N * M
    rden_ptr += bh * N
    dt = g_ptr.dtype.element_ty
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    causal = offs_c[:, None] >= offs_c[None, :]
    r_state = tl.zeros([BLOCK_D, BLOCK_M], dtype=tl.float32)
    n_chunks = tl.cdiv(N, BLOCK_C)
    for i in range(0, n_chunks):
        rows = (n_chunks - 1 - i) * BLOCK_C + offs_c
        mask_qk = (rows < N)[:, None] & (offs_d < D)[None, :]
        mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
        qf, _ = _load_phi(q_ptr, rows, offs_d, mask_qk, D)
        kf, _ = _load_phi(k_ptr, rows, offs_d, mask_qk, D)
        g = tl.load(g_ptr + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
        rden = tl.load(rden_ptr + rows, mask=rows < N, other=0.0)
        dnum = (g * rden[:, None]).to(dt)
        a = tl.dot(qf.to(dt), tl.trans(kf.to(dt)), input_precision=DOT_PREC)
        a = tl.where(causal, a, 0.0)
        dv = tl.dot(tl.trans(a.to(dt)), dnum, input_precision=DOT_PREC)
        dv += tl.dot(kf, r_state, input_precision=DOT_PREC)
        tl.store(dv_ptr + rows[:, None] * M + offs_m[None, :], dv.to(dt), mask=mask_v)
        r_state += tl.dot(tl.trans(qf.to(dt)), dnum, input_precision=DOT_PREC)
