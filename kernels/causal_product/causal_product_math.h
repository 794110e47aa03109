// The math of normalised causal linear attention, shared by the CPU kernel (causal_product_cpu.cpp)
// and the CUDA kernel (causal_product_cuda.cu): element formulas, the shape rules, and the chunked
// decomposition itself (docs/kernels.md).
//
// Torch-free on purpose: the .cu includes only this header and the CUDA runtime, so it compiles
// against the headers of a CPU-only torch wheel (tools/check_cuda_compile.py).
//
// Notation: phi = elu + 1, Qf = phi(q), Kf = phi(k), a_ij = Qf_i . Kf_j for j <= i;
//   num_i = sum_j a_ij v_j,  den_i = sum_j a_ij,  out_i = num_i / (den_i + EPS).
// Backward with g_i = dL/dout_i and inv_i = 1 / (den_i + EPS):
//   G_i  = g_i * inv_i                       (dL/dnum_i, an M-vector)
//   gd_i = -(g_i . out_i) * inv_i            (dL/dden_i, a scalar)
//   P_ij = G_i . v_j + gd_i  (j <= i)        (dL/da_ij)
//   dQf_i = sum_{j<=i} P_ij Kf_j,  dKf_j = sum_{i>=j} P_ij Qf_i,  dv_j = sum_{i>=j} a_ij G_i
// i.e. the denominator is the numerator of a value column of ones, whose gradient is gd_i.
//
// The chunked decomposition. The sequence is cut into chunks of L tokens. Per chunk c:
//   1. chunk-local state   S_c = Kf_c^T V_c (D x M), z_c = colsum(Kf_c)          [chunk_state_kv]
//                          R_c = Qf_c^T G_c,          r_c = Qf_c^T gd_c          [chunk_state_qg]
//   2. inter-chunk combine: S_in(c) = sum_{c' < c} S_c' (exclusive prefix), R_in(c) = sum_{c' > c} R_c'
//                           (exclusive suffix), likewise z and r                    [scan_step]
//   3. chunk output from the incoming state plus the intra-chunk causal part:
//        out  = (mask(Qf Kf^T) V + Qf S_in) / (rowsum(mask(Qf Kf^T)) + Qf z_in + EPS)   [chunk_forward_output]
//        dQf  = P Kf + G S_in^T + gd z_in^T                                               [chunk_dq]
//        dKf  = P^T Qf + V R_in^T + r_in,   dv = mask(Qf Kf^T)^T G + Kf R_in              [chunk_dkdv]
// The CUDA kernel runs step 1 and 3 with one block per (batch x head, chunk) and step 2 as a scan over
// chunks; the CPU kernel calls the same step functions per chunk, with the combine folded into a
// running state (or, to split one sequence over threads, over segments of chunks).
//
// Steps 1 and 3 are written against an *engine* E that owns the chunk's tiles and does the matrix
// products; the CPU engine uses a register-blocked SIMD micro-kernel, the CUDA engine tensor-core
// mma instructions. What an engine provides:
//   using T                       accumulation type (float; double for fp64 on the CPU)
//   len()                         rows of this chunk (<= L; the tail chunk is shorter)
//   mm(Dst, Prod, epi)            dst(r, c) = epi(r, c, sum_k op(a)(r, k) op(b)(k, c))
//   mm2(Dst, Prod, Prod, epi)     the same with the sum of two products
//   mm_rowsum(Dst, Prod, epi, s)  mm that also adds each row's epi values to s[row]
//   rows(f) / cols(Slot, f)       f(i) for every row / every feature or value column, in parallel
//   sync()                        a barrier between steps (a no-op on the CPU)
//   vec(Vec)                      per-row (den, gd) or per-feature (z, r) vector of this chunk
//   dot(Slot, i, x)               sum_d slot(i, d) x[d]
//   colsum(Vec, Slot[, w])        vec[d] = sum_i slot(i, d) (* w[i])
//   dphi(Slot, i, d)              d phi / dx at element (i, d) of Qf or Kf (1 when phi is not applied)
//   store_den()                   the chunk's den rows to the saved normaliser
// Row i of the chunk is token t0 + i; rows >= len() and columns >= D or M are zero in every tile.
#pragma once

#if defined(__CUDACC__)
#define CP_HD __host__ __device__ __forceinline__
#define CP_STEP __device__ __forceinline__  // the steps run only in device code under nvcc
#else
#define CP_HD inline
#define CP_STEP inline
#endif

#if !defined(__CUDA_ARCH__)
#include <cstdio>
#endif

namespace causal_product {

// The normaliser's epsilon: out = num / (den + EPS), the same value as attnbench.impls.common.EPS.
constexpr double kEps = 1e-6;

// Largest D and M the CUDA kernel takes: its register tiles are sized for up to 128 columns.
constexpr int kCudaMaxHeadDim = 128;

// 1 / (den + EPS).
template <typename T>
CP_HD T inv_den(T den) {
  return T(1) / (den + T(kEps));
}

// phi(x) = elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise (scalar form; the CPU vectorises its own).
template <typename T>
CP_HD T phi(T x, T ex) {  // ex = exp(x), computed by the caller's exp of choice
  return x > T(0) ? x + T(1) : ex;
}

// d phi / dx from phi itself: 1 for x > 0 (phi > 1), exp(x) = phi for x <= 0 (phi <= 1).
template <typename T>
CP_HD T dphi_from_phi(T p) {
  return p < T(1) ? p : T(1);
}

// Causality inside a chunk: row i sees column j iff j <= i.
CP_HD bool causal_keep(int i, int j) { return j <= i; }

// dL/dden_i from g_i . out_i and inv_i.
template <typename T>
CP_HD T grad_den(T g_dot_out, T inv) {
  return -g_dot_out * inv;
}

// Row i of the backward's normaliser terms: gd_i = -(g_i . out_i) * inv_i and G_i = g_i * inv_i.
// g and out are read through element accessors (a stride-0 gradient is fine); G is written densely.
template <typename T, typename GetG, typename GetOut>
CP_HD T grad_row(int m, T inv, GetG g, GetOut out, T* G) {
  T dot = T(0);
  for (int c = 0; c < m; ++c) {
    const T gc = g(c);
    dot += gc * out(c);
    G[c] = gc * inv;
  }
  return grad_den(dot, inv);
}

// The inter-chunk combine, one element of an exclusive scan: returns the sum of everything before
// x (the incoming state of x's chunk) and adds x to the carry.
template <typename T>
CP_HD T scan_step(T& carry, T x) {
  const T before = carry;
  carry += x;
  return before;
}

#if defined(__CUDACC__)
__host__ __device__
#endif
constexpr int pad16(int x) { return (x + 15) / 16 * 16; }

// Strides (in elements) of a [B, H, N, X] tensor view; any may be 0 (an expanded tensor).
struct Strides4 {
  long long b, h, n, x;
};

// ---------------------------------------------------------------------------------------------
// The chunk steps. Operands of one chunk (rows i, j are tokens of the chunk, d a feature, m a value):
enum class Slot : int {
  Qf,  // phi(q) rows [L][D]
  Kf,  // phi(k) rows [L][D]
  V,   // v rows [L][M]
  G,   // g_i * inv_i rows [L][M] (dL/dnum)
  A,   // mask(Qf Kf^T) [L][L], as computed by the step that produced it
  P,   // mask(G V^T + gd) [L][L]
  S,   // the incoming prefix state S_in [D][M]
  R,   // the incoming suffix state R_in [D][M]
};
// Where a product's result goes.
enum class Dst : int {
  A, P,            // chunk scratch, an operand of a later product
  Out, Dq, Dk, Dv, // the chunk's rows of an output
  S, R,            // the chunk-local state (CUDA: written out for the scan; CPU: added to the running state)
};
enum class Vec : int { den, gd, z, r };  // per row: den, gd; per feature: z_in, r_in (or z_c, r_c in step 1)

// Which entries of a product can be non-zero, so an engine may skip whole tiles.
enum class Tri : int {
  Full,
  Lower,   // only outputs (r, c) with c <= r are kept (the epilogue zeroes the rest)
  LowerA,  // op(a)(r, k) == 0 for k > r
  UpperA,  // op(a)(r, k) == 0 for k < r
};

// dst += op(a) op(b): ta / tb transpose the operand.
template <Slot a_, bool ta_, Slot b_, bool tb_, Tri tri_>
struct Prod {
  static constexpr Slot a = a_, b = b_;
  static constexpr bool ta = ta_, tb = tb_;
  static constexpr Tri tri = tri_;
};

// The identity epilogue (an engine may store the accumulator directly).
struct Keep {
  template <typename T>
  CP_HD T operator()(int, int, T x) const {
    return x;
  }
};

// The causal mask as an epilogue: a_ij for j <= i, else 0.
struct MaskLower {
  template <typename T>
  CP_HD T operator()(int i, int j, T x) const {
    return causal_keep(i, j) ? x : T(0);
  }
};

// Step 1, the K/V half: S_c = Kf^T V, z_c = colsum(Kf).
template <class E>
CP_STEP void chunk_state_kv(E& e) {
  e.mm(Dst::S, Prod<Slot::Kf, true, Slot::V, false, Tri::Full>{}, Keep{});
  e.colsum(Vec::z, Slot::Kf);
}

// Step 1, the backward's Q/G half: R_c = Qf^T G, r_c = Qf^T gd.
template <class E>
CP_STEP void chunk_state_qg(E& e) {
  e.mm(Dst::R, Prod<Slot::Qf, true, Slot::G, false, Tri::Full>{}, Keep{});
  e.colsum(Vec::r, Slot::Qf, Vec::gd);
}

// Step 3, forward: den_i = Qf_i . z_in + sum_{j<=i} a_ij, computed once per row; then
// out = (mask(A) V + Qf S_in) / (den + EPS). Needs vec(z) = z_in and slot S = S_in.
template <class E>
CP_STEP void chunk_forward_output(E& e) {
  using T = typename E::T;
  T* den = e.vec(Vec::den);
  const T* z = e.vec(Vec::z);
  e.rows([&](int i) { den[i] = e.dot(Slot::Qf, i, z); });
  e.sync();
  e.mm_rowsum(Dst::A, Prod<Slot::Qf, false, Slot::Kf, true, Tri::Lower>{}, MaskLower{}, den);
  e.sync();
  e.store_den();
  e.mm2(Dst::Out, Prod<Slot::A, false, Slot::V, false, Tri::LowerA>{},
        Prod<Slot::Qf, false, Slot::S, false, Tri::Full>{}, [den](int i, int, T num) { return num * inv_den(den[i]); });
}

// P = mask(G V^T + gd): the gradient w.r.t. a_ij, shared by dq and dk.
template <class E>
CP_STEP void chunk_grad_scores(E& e) {
  using T = typename E::T;
  const T* gd = e.vec(Vec::gd);
  e.mm(Dst::P, Prod<Slot::G, false, Slot::V, true, Tri::Lower>{},
       [gd](int i, int j, T p) { return causal_keep(i, j) ? p + gd[i] : T(0); });
  e.sync();
}

// Step 3, backward prefix part: dq = (P Kf + G S_in^T + gd z_in^T) * phi'(q).
template <class E>
CP_STEP void chunk_dq(E& e) {
  using T = typename E::T;
  const T* gd = e.vec(Vec::gd);
  const T* z = e.vec(Vec::z);
  chunk_grad_scores(e);
  e.mm2(Dst::Dq, Prod<Slot::P, false, Slot::Kf, false, Tri::LowerA>{},
        Prod<Slot::G, false, Slot::S, true, Tri::Full>{},
        [&](int i, int d, T x) { return (x + gd[i] * z[d]) * e.dphi(Slot::Qf, i, d); });
}

// Step 3, backward suffix part, one shared suffix state R_in for both:
//   dk = (P^T Qf + V R_in^T + r_in) * phi'(k),   dv = mask(Qf Kf^T)^T G + Kf R_in.
template <class E>
CP_STEP void chunk_dkdv(E& e) {
  using T = typename E::T;
  const T* r = e.vec(Vec::r);
  chunk_grad_scores(e);
  e.mm2(Dst::Dk, Prod<Slot::P, true, Slot::Qf, false, Tri::UpperA>{},
        Prod<Slot::V, false, Slot::R, true, Tri::Full>{},
        [&](int j, int d, T x) { return (x + r[d]) * e.dphi(Slot::Kf, j, d); });
  e.sync();
  e.mm(Dst::A, Prod<Slot::Qf, false, Slot::Kf, true, Tri::Lower>{}, MaskLower{});
  e.sync();
  e.mm2(Dst::Dv, Prod<Slot::A, true, Slot::G, false, Tri::UpperA>{},
        Prod<Slot::Kf, false, Slot::R, false, Tri::Full>{}, Keep{});
}

// ---------------------------------------------------------------------------------------------
#if !defined(__CUDA_ARCH__)
// Why the kernels cannot take q, k [B, H, N, D], v [B, H, N, M], or nullptr. max_head_dim <= 0
// means no limit on D and M (the CPU kernel). The message names the field, the value and what was
// expected; buf must hold 200 bytes.
inline const char* shape_error(long long B, long long H, long long N, long long D, long long M, int max_head_dim,
                               char* buf, unsigned long n) {
  if (B < 0 || H < 0 || N < 0 || D < 0 || M < 0) {
    std::snprintf(buf, n, "causal_product: sizes must be >= 0; got B=%lld, H=%lld, N=%lld, D=%lld, M=%lld", B, H,
                  N, D, M);
    return buf;
  }
  if (D == 0 || M == 0) {
    std::snprintf(buf, n, "causal_product: head dims must be >= 1; got %s=0 (q, k [B, H, N, D], v [B, H, N, M])",
                  D == 0 ? "D" : "M");
    return buf;
  }
  if (max_head_dim > 0 && (D > max_head_dim || M > max_head_dim)) {
    std::snprintf(buf, n,
                  "linear-causal-cuda supports head dims D, M <= %d (its register tiles); got D=%lld, M=%lld",
                  max_head_dim, D, M);
    return buf;
  }
  if (N > 0x7fffffffLL || B * H > 0x7fffffffLL) {
    std::snprintf(buf, n, "causal_product: N and B*H must be < 2^31; got N=%lld, B*H=%lld", N, B * H);
    return buf;
  }
  return nullptr;
}
#endif

}  // namespace causal_product
