"""Triton kernels for chunked causal linear attention, sequence-parallel (docs/triton.md).

Imported only by :mod:`attnbench.impls.chunked_triton` when a kernel is about to run (this module
imports triton at the top). Tensors are contiguous, row-major ``[B*H, N, D]`` / ``[B*H, N, M]``. The
grid is (B*H, chunks[, column blocks]): B*H on axis 0 (up to 2^31 - 1; axes 1 and 2 stop at 65,535).
As in the CUDA kernel (kernels/causal_product/causal_product_math.h), per chunk c of BLOCK_C rows:

1. ``chunk_state_kernel``: the chunk-local state S_c = Kf^T V, z_c = colsum(Kf) (backward: also
   R_c = Qf^T G, r_c = Qf^T gd), into a float32 workspace ``st[B*H, chunks, E]``;
2. ``chunk_scan_kernel``: the inter-chunk combine, an exclusive prefix (S, z) or suffix (R, r) scan
   over the chunks, in place;
3. ``chunk_fwd_kernel`` / ``chunk_dq_kernel`` / ``chunk_dk_kernel`` / ``chunk_dv_kernel``: the chunk's
   outputs from its incoming state plus the intra-chunk causal part.

Precision: phi and all states are fp32. Products of two input-precision tiles (phi(q) phi(k)^T, A v,
phi(k)^T v) run in the input dtype with fp32 accumulation (tensor cores); products with a fp32 operand
(a state, G = g / (den + eps), P) run in fp32 at ``DOT_PREC`` ("tf32" or "ieee"): a state summed over a
long sequence exceeds fp16's range and G (~ g / position) falls below it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.impls.common import interpreter_enabled


@triton.jit
def _phi(x):
    # elu(x) + 1; the unselected exp branch may be inf, which where() discards.
    return tl.where(x > 0, x + 1.0, tl.exp(x))


@triton.jit
def _dphi(x):
    return tl.where(x > 0, 1.0, tl.exp(x))


@triton.jit
def _load_phi(ptr, rows, cols, mask, ncols):
    """phi of a [rows, cols] tile as fp32, exactly 0 outside the tensor (padding adds nothing), and the raw tile."""
    x = tl.load(ptr + rows[:, None] * ncols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return tl.where(mask, _phi(x), 0.0), x


@triton.jit
def chunk_gd_kernel(g_ptr, o_ptr, rden_ptr, gd_ptr, N, M, BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr):
    """Grid (B*H, chunks). dL/dden per row, once: gd_i = -(g_i . out_i) / (den_i + eps)."""
    bh = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_m = tl.arange(0, BLOCK_M)
    mask = (rows < N)[:, None] & (offs_m < M)[None, :]
    g = tl.load(g_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask, other=0.0).to(tl.float32)
    o = tl.load(o_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask, other=0.0).to(tl.float32)
    rden = tl.load(rden_ptr + bh * N + rows, mask=rows < N, other=0.0)
    tl.store(gd_ptr + bh * N + rows, -tl.sum(g * o, 1) * rden, mask=rows < N)


@triton.jit
def chunk_state_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    rden_ptr,
    gd_ptr,
    st_ptr,
    N,
    D,
    M,
    NC,
    E,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BWD: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H, chunks, cdiv(M, BLOCK_M)); BLOCK_D covers all of D. Writes the chunk-local record
    st[bh, c] = [S_c (D x M) | z_c (D)] and, with BWD, [R_c | r_c] after it (at E // 2)."""
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    pid_m = tl.program_id(2)
    rows = c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_k = (rows < N)[:, None] & (offs_d < D)[None, :]
    mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
    mask_s = (offs_d < D)[:, None] & (offs_m < M)[None, :]
    dt = v_ptr.dtype.element_ty
    rec = st_ptr + (bh * NC + c) * E
    kf, _ = _load_phi(k_ptr + bh * N * D, rows, offs_d, mask_k, D)
    v = tl.load(v_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
    s = tl.dot(tl.trans(kf.to(dt)), v, input_precision=DOT_PREC)
    tl.store(rec + offs_d[:, None] * M + offs_m[None, :], s, mask=mask_s)
    if pid_m == 0:
        tl.store(rec + D * M + offs_d, tl.sum(kf, 0), mask=offs_d < D)
    if BWD:
        half = rec + E // 2
        qf, _ = _load_phi(q_ptr + bh * N * D, rows, offs_d, mask_k, D)
        g = tl.load(g_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
        rden = tl.load(rden_ptr + bh * N + rows, mask=rows < N, other=0.0)
        r = tl.dot(tl.trans(qf), g * rden[:, None], input_precision=DOT_PREC)
        tl.store(half + offs_d[:, None] * M + offs_m[None, :], r, mask=mask_s)
        if pid_m == 0:
            gd = tl.load(gd_ptr + bh * N + rows, mask=rows < N, other=0.0)
            tl.store(half + D * M + offs_d, tl.sum(qf * gd[:, None], 0), mask=offs_d < D)


@triton.jit
def chunk_scan_kernel(st_ptr, NC, E, PRE, BLOCK_E: tl.constexpr):
    """Grid (B*H, cdiv(E, BLOCK_E)). The inter-chunk combine: each record element becomes the sum over
    the chunks before it (elements < PRE: S, z) or after it (the rest: R, r), in place."""
    bh = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    mask = offs < E
    rev = offs >= PRE
    base = st_ptr + bh * NC * E + offs
    carry = tl.zeros([BLOCK_E], dtype=tl.float32)
    for i in range(0, NC):
        c = tl.where(rev, NC - 1 - i, i).to(tl.int64)
        x = tl.load(base + c * E, mask=mask, other=0.0)
        tl.store(base + c * E, carry, mask=mask)
        carry += x


@triton.jit
def chunk_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    rden_ptr,
    st_ptr,
    N,
    D,
    M,
    NC,
    E,
    eps,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H, chunks, cdiv(M, BLOCK_M)); BLOCK_D covers all of D. With the incoming S_in, z_in:
    out = (mask(Qf Kf^T) V + Qf S_in) / (rowsum(mask(Qf Kf^T)) + Qf z_in + eps); also 1 / (den + eps)."""
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    pid_m = tl.program_id(2)
    rows = c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_q = (rows < N)[:, None] & (offs_d < D)[None, :]
    mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
    dt = v_ptr.dtype.element_ty
    rec = st_ptr + (bh * NC + c) * E
    qf, _ = _load_phi(q_ptr + bh * N * D, rows, offs_d, mask_q, D)
    kf, _ = _load_phi(k_ptr + bh * N * D, rows, offs_d, mask_q, D)
    v = tl.load(v_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
    s = tl.load(
        rec + offs_d[:, None] * M + offs_m[None, :], mask=(offs_d < D)[:, None] & (offs_m < M)[None, :], other=0.0
    )
    z = tl.load(rec + D * M + offs_d, mask=offs_d < D, other=0.0)
    a = tl.dot(qf.to(dt), tl.trans(kf.to(dt)), input_precision=DOT_PREC)
    a = tl.where(offs_c[:, None] >= offs_c[None, :], a, 0.0)
    num = tl.dot(a.to(dt), v, input_precision=DOT_PREC) + tl.dot(qf, s, input_precision=DOT_PREC)
    rden = 1.0 / (tl.sum(a, 1) + tl.sum(qf * z[None, :], 1) + eps)
    tl.store(o_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], (num * rden[:, None]).to(dt), mask=mask_v)
    if pid_m == 0:
        tl.store(rden_ptr + bh * N + rows, rden, mask=rows < N)


@triton.jit
def _grad_scores(v, g, rden, gd, offs_c, DOT_PREC: tl.constexpr):
    """G = g / (den + eps) and P = mask(G V^T + gd): the gradient w.r.t. a_ij, fp32."""
    gg = g * rden[:, None]
    p = tl.dot(gg, tl.trans(v.to(tl.float32)), input_precision=DOT_PREC) + gd[:, None]
    return gg, tl.where(offs_c[:, None] >= offs_c[None, :], p, 0.0)


@triton.jit
def chunk_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    rden_ptr,
    gd_ptr,
    st_ptr,
    dq_ptr,
    N,
    D,
    M,
    NC,
    E,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H, chunks, cdiv(D, BLOCK_D)); BLOCK_M covers all of M (P needs whole rows of G and V).
    dq = (P Kf + G S_in^T + gd z_in^T) * phi'(q)."""
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    pid_d = tl.program_id(2)
    rows = c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    mask_q = (rows < N)[:, None] & (offs_d < D)[None, :]
    mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
    dt = v_ptr.dtype.element_ty
    rec = st_ptr + (bh * NC + c) * E
    kf, _ = _load_phi(k_ptr + bh * N * D, rows, offs_d, mask_q, D)
    _, q = _load_phi(q_ptr + bh * N * D, rows, offs_d, mask_q, D)
    v = tl.load(v_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
    g = tl.load(g_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
    rden = tl.load(rden_ptr + bh * N + rows, mask=rows < N, other=0.0)
    gd = tl.load(gd_ptr + bh * N + rows, mask=rows < N, other=0.0)
    st = tl.load(
        rec + offs_d[None, :] * M + offs_m[:, None], mask=(offs_m < M)[:, None] & (offs_d < D)[None, :], other=0.0
    )
    z = tl.load(rec + D * M + offs_d, mask=offs_d < D, other=0.0)
    gg, p = _grad_scores(v, g, rden, gd, offs_c, DOT_PREC)
    dqf = tl.dot(p, kf, input_precision=DOT_PREC) + tl.dot(gg, st, input_precision=DOT_PREC)
    dqf += gd[:, None] * z[None, :]
    tl.store(dq_ptr + bh * N * D + rows[:, None] * D + offs_d[None, :], (dqf * _dphi(q)).to(dt), mask=mask_q)


@triton.jit
def chunk_dk_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    rden_ptr,
    gd_ptr,
    st_ptr,
    dk_ptr,
    N,
    D,
    M,
    NC,
    E,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H, chunks, cdiv(D, BLOCK_D)); BLOCK_M covers all of M. With the suffix state R_in, r_in:
    dk = (P^T Qf + V R_in^T + r_in) * phi'(k)."""
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    pid_d = tl.program_id(2)
    rows = c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    mask_q = (rows < N)[:, None] & (offs_d < D)[None, :]
    mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
    dt = v_ptr.dtype.element_ty
    half = st_ptr + (bh * NC + c) * E + E // 2
    qf, _ = _load_phi(q_ptr + bh * N * D, rows, offs_d, mask_q, D)
    _, k = _load_phi(k_ptr + bh * N * D, rows, offs_d, mask_q, D)
    v = tl.load(v_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0)
    g = tl.load(g_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
    rden = tl.load(rden_ptr + bh * N + rows, mask=rows < N, other=0.0)
    gd = tl.load(gd_ptr + bh * N + rows, mask=rows < N, other=0.0)
    rt = tl.load(
        half + offs_d[None, :] * M + offs_m[:, None], mask=(offs_m < M)[:, None] & (offs_d < D)[None, :], other=0.0
    )
    r = tl.load(half + D * M + offs_d, mask=offs_d < D, other=0.0)
    _, p = _grad_scores(v, g, rden, gd, offs_c, DOT_PREC)
    dkf = tl.dot(tl.trans(p), qf, input_precision=DOT_PREC) + tl.dot(v.to(tl.float32), rt, input_precision=DOT_PREC)
    dkf += r[None, :]
    tl.store(dk_ptr + bh * N * D + rows[:, None] * D + offs_d[None, :], (dkf * _dphi(k)).to(dt), mask=mask_q)


@triton.jit
def chunk_dv_kernel(
    q_ptr,
    k_ptr,
    g_ptr,
    rden_ptr,
    st_ptr,
    dv_ptr,
    N,
    D,
    M,
    NC,
    E,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H, chunks, cdiv(M, BLOCK_M)); BLOCK_D covers all of D (A needs whole rows of Qf, Kf).
    dv = mask(Qf Kf^T)^T G + Kf R_in, R_in the same suffix state as dk's."""
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    pid_m = tl.program_id(2)
    rows = c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_q = (rows < N)[:, None] & (offs_d < D)[None, :]
    mask_v = (rows < N)[:, None] & (offs_m < M)[None, :]
    dt = g_ptr.dtype.element_ty
    half = st_ptr + (bh * NC + c) * E + E // 2
    qf, _ = _load_phi(q_ptr + bh * N * D, rows, offs_d, mask_q, D)
    kf, _ = _load_phi(k_ptr + bh * N * D, rows, offs_d, mask_q, D)
    g = tl.load(g_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], mask=mask_v, other=0.0).to(tl.float32)
    rden = tl.load(rden_ptr + bh * N + rows, mask=rows < N, other=0.0)
    r = tl.load(
        half + offs_d[:, None] * M + offs_m[None, :], mask=(offs_d < D)[:, None] & (offs_m < M)[None, :], other=0.0
    )
    a = tl.dot(qf.to(dt), tl.trans(kf.to(dt)), input_precision=DOT_PREC)
    a = tl.where(offs_c[:, None] >= offs_c[None, :], a, 0.0)
    dv = tl.dot(tl.trans(a), g * rden[:, None], input_precision=DOT_PREC) + tl.dot(kf, r, input_precision=DOT_PREC)
    tl.store(dv_ptr + bh * N * M + rows[:, None] * M + offs_m[None, :], dv.to(dt), mask=mask_v)


# ---- autotuning: launch configurations per architecture ----
# (num_warps, num_stages) per compute-capability major version: Ampere (sm_80) keeps 2 pipeline
# stages (its shared memory is smaller), Hopper (sm_90) 3. Heavy tiles (IEEE fp32 dots, which run on
# FMA units, or a head dim above 64) get 8 warps only: with 4 they spill or, on an A100, fit one block
# per SM. tools/check_triton_compile.py compiles every configuration launch_configs() allows for each
# architecture and fails on spills or on occupancy below the floor.
ARCH_LAUNCH = {8: [(4, 2), (8, 2)], 9: [(4, 3), (8, 3)]}


def heavy(block_d: int, block_m: int, dot_prec: str | None) -> bool:
    return dot_prec == "ieee" or max(block_d, block_m) > 64


def launch_configs(major: int, is_heavy: bool) -> list[tuple[int, int]]:
    """The (num_warps, num_stages) tried on a GPU of compute capability ``major``.x."""
    arch = max((a for a in ARCH_LAUNCH if a <= major), default=min(ARCH_LAUNCH))
    return [c for c in ARCH_LAUNCH[arch] if not is_heavy or c[0] == 8]


_CONFIGS = {(w, s): triton.Config({}, num_warps=w, num_stages=s) for ws in ARCH_LAUNCH.values() for w, s in ws}


def _prune(configs, named_args, **kwargs):  # noqa: ANN001, ANN003, ANN202 - triton's early_config_prune signature
    """The configurations launch_configs() allows for the GPU the tensors live on; under the
    interpreter one (nothing to tune)."""
    if interpreter_enabled():
        return configs[:1]
    dev = next(v.device for v in named_args.values() if isinstance(v, torch.Tensor))
    major = torch.cuda.get_device_capability(dev)[0]
    is_heavy = heavy(kwargs.get("BLOCK_D", 16), kwargs.get("BLOCK_M", 16), kwargs.get("DOT_PREC"))
    keep = launch_configs(major, is_heavy)
    return [c for c in configs if (c.num_warps, c.num_stages) in keep] or configs[:1]


def _tuned(fn, key):  # noqa: ANN001, ANN202
    # The key is the shape class; triton adds the tensor dtypes. Results are cached on disk, so a
    # sweep's workers reuse what prepare() tuned instead of benchmarking inside a point.
    return triton.autotune(
        configs=list(_CONFIGS.values()), key=key, prune_configs_by={"early_config_prune": _prune}, cache_results=True
    )(fn)


tuned_gd = _tuned(chunk_gd_kernel, ["M", "BLOCK_C"])
tuned_state = _tuned(chunk_state_kernel, ["D", "M", "BLOCK_C", "BWD"])
tuned_fwd = _tuned(chunk_fwd_kernel, ["D", "M", "BLOCK_C"])
tuned_dq = _tuned(chunk_dq_kernel, ["D", "M", "BLOCK_C"])
tuned_dk = _tuned(chunk_dk_kernel, ["D", "M", "BLOCK_C"])
tuned_dv = _tuned(chunk_dv_kernel, ["D", "M", "BLOCK_C"])
