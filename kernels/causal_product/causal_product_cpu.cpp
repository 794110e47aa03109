// CPU kernel of normalised causal linear attention, forward and linear-memory backward.
// It takes the features phi(q), phi(k) (the Python wrapper applies elu + 1, vectorised by
// PyTorch, and autograd carries the gradient on to raw q, k) and returns dL/dphi(q), dL/dphi(k).
//
// Chunked algorithm (docs/kernels.md): the sequence is cut into chunks of kChunk tokens. Inside
// a chunk the causal part is a masked kChunk x kChunk product; across chunks a D x M state (and
// a D normaliser) is carried. Per (batch, head) only O(kChunk (D + M) + D M) scratch is live, so
// memory is O(N (D + M)) for inputs/outputs plus O(D M) per thread: never O(N D M).
//
// All small products go through one register-blocked micro-kernel on GCC vector extensions
// (RB rows x NV vectors of accumulators), over zero-padded scratch buffers, so D, M and the tail
// chunk need no edge code. Transposed operands (phi(K)^T, V^T, G^T, the suffix state R^T) are
// made by in-register W x W block transposes. Work is spread over batch x heads with at::parallel_for (OpenMP).
// Narrow ATen includes (not ATen/ATen.h) keep the one-time build short.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "causal_product_math.h"

namespace cp = causal_product;

namespace {

#ifndef CP_CHUNK
#define CP_CHUNK 16
#endif
constexpr int kChunk = CP_CHUNK;  // tokens per chunk (a multiple of 8 and of the vector width)
constexpr int kRB = 4;      // rows per micro-kernel tile (kRB8 for one-vector-wide tiles)
constexpr int kRB8 = 8;
constexpr int kPad = 16;    // D and M are padded to a multiple of this in scratch
static_assert(kChunk % 16 == 0, "the chunk is transposed in blocks of the vector width (16 floats)");

template <typename T>
struct VecT;
template <>
struct VecT<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int mask __attribute__((vector_size(64)));  // lane indices for __builtin_shuffle
  static constexpr int W = 16;
};
template <>
struct VecT<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef long long mask __attribute__((vector_size(64)));
  static constexpr int W = 8;
};

template <typename V>
inline V vload(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
inline void vstore(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// Which part of the k loop (or of the output) a product touches.
enum class Tri {
  Full,      // everything
  LowerA,    // A[i][k] == 0 for k > i: k runs up to the tile's last row
  UpperA,    // A[i][k] == 0 for k < i: k starts at the tile's first row
  LowerOut,  // only output columns j <= i are needed (the rest is masked afterwards)
  UpperOut,  // only output columns j >= i are needed
};

// Ct[RB][NV*W] += A[RB][k0:k1] * B[k0:k1][NV*W]; row-major operands with leading dims.
template <typename T, int RB, int NV>
inline void micro(const T* A, int lda, const T* B, int ldb, T* Cm, int ldc, int k0, int k1) {
  using V = typename VecT<T>::type;
  constexpr int W = VecT<T>::W;
  V acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vload<V>(Cm + r * ldc + v * W);
  for (int k = k0; k < k1; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) {
      b[v] = vload<V>(B + (long)k * ldb + v * W);
      asm("" : "+v"(b[v]));  // keep b in a register: one load per k, not one per (row, k)
    }
    for (int r = 0; r < RB; ++r) {
      const V a = A[r * lda + k] - V{};  // a splat (x - 0 == x exactly, so no add is emitted)
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) vstore(Cm + r * ldc + v * W, acc[r][v]);
}

// C[rows][cols] += A[rows][K] * B[K][cols]. rows % 8 == 0, cols % W == 0 (scratch is padded).
// Triangular products use one-vector-wide tiles of 8 rows so whole tiles can be skipped.
template <typename T>
void gemm_acc(const T* A, int lda, const T* B, int ldb, T* Cm, int ldc, int rows, int cols, int K, Tri tri) {
  constexpr int W = VecT<T>::W;
  const bool tri_out = tri == Tri::LowerOut || tri == Tri::UpperOut;
  const int rb = tri_out ? kRB8 : kRB;
  for (int r0 = 0; r0 < rows; r0 += rb) {
    int k0 = 0, k1 = K;
    if (tri == Tri::LowerA) k1 = std::min(K, r0 + rb);
    if (tri == Tri::UpperA) k0 = r0;
    const T* Ar = A + (long)r0 * lda;
    T* Cr = Cm + (long)r0 * ldc;
    if (tri_out) {
      for (int c0 = 0; c0 < cols; c0 += W) {
        const bool skip = (tri == Tri::LowerOut && c0 >= r0 + rb) || (tri == Tri::UpperOut && c0 + W <= r0);
        if (!skip) micro<T, kRB8, 1>(Ar, lda, B + c0, ldb, Cr + c0, ldc, k0, k1);
      }
      continue;
    }
    int c0 = 0;
    while (c0 < cols) {
      const int nv = (cols - c0 >= 4 * W) ? 4 : (cols - c0 >= 2 * W) ? 2 : 1;
      if (nv == 4)
        micro<T, kRB, 4>(Ar, lda, B + c0, ldb, Cr + c0, ldc, k0, k1);
      else if (nv == 2)
        micro<T, kRB, 2>(Ar, lda, B + c0, ldb, Cr + c0, ldc, k0, k1);
      else
        micro<T, kRB, 1>(Ar, lda, B + c0, ldb, Cr + c0, ldc, k0, k1);
      c0 += nv * W;
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
// One butterfly stage of an in-register W x W transpose: swaps the off-diagonal s x s sub-blocks
// of every 2s x 2s block (row bit s against column bit s) with two-source shuffles whose lane
// indices are compile-time constants.
template <typename T, int s>
inline void transpose_stage(typename VecT<T>::type (&r)[VecT<T>::W]) {
  using V = typename VecT<T>::type;
  using I = typename VecT<T>::mask;
  constexpr int W = VecT<T>::W;
  I lo, hi;
#pragma GCC unroll 16
  for (int j = 0; j < W; ++j) {
    lo[j] = (j & s) ? W + j - s : j;  // row i keeps its columns without bit s, takes row i+s's
    hi[j] = (j & s) ? W + j : j + s;  // row i+s keeps its columns with bit s, takes row i's
  }
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i)
    if (!(i & s)) {
      const V a = r[i], b = r[i + s];
      r[i] = __builtin_shuffle(a, b, lo);
      r[i + s] = __builtin_shuffle(a, b, hi);
    }
}

// dst[c][r] = src[r][c] for one W x W block (W = the vector width), in registers: log2(W)
// stages of shuffles, contiguous loads and stores (a scalar transpose of a 64 x 64 state stores
// with a 256-byte stride and stalls on 4K aliasing).
template <typename T>
inline void transpose_block(const T* src, long lds, T* dst, long ldd) {
  using V = typename VecT<T>::type;
  constexpr int W = VecT<T>::W;
  V r[W];
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i) r[i] = vload<V>(src + i * lds);
  if constexpr (W == 16) transpose_stage<T, 8>(r);
  transpose_stage<T, 4>(r);
  transpose_stage<T, 2>(r);
  transpose_stage<T, 1>(r);
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i) vstore(dst + i * ldd, r[i]);
}
#else
// Other compilers (__builtin_shuffle is GCC's): element by element.
template <typename T>
inline void transpose_block(const T* src, long lds, T* dst, long ldd) {
  constexpr int W = VecT<T>::W;
  for (int i = 0; i < W; ++i)
    for (int j = 0; j < W; ++j) dst[j * ldd + i] = src[i * lds + j];
}
#endif

// dst[cols][rows] = src[rows][cols]^T, by W x W blocks; rows and cols are multiples of W.
template <typename T>
void transpose(const T* src, int lds, T* dst, int ldd, int rows, int cols) {
  constexpr int W = VecT<T>::W;
  for (int r0 = 0; r0 < rows; r0 += W)
    for (int c0 = 0; c0 < cols; c0 += W) transpose_block(src + (long)r0 * lds + c0, lds, dst + (long)c0 * ldd + r0, ldd);
}

// sum of the lanes of a vector.
template <typename V, int W>
inline auto hsum(V v) {
  auto s = v[0];
  for (int j = 1; j < W; ++j) s += v[j];
  return s;
}

inline int pad_to(int x, int p) { return (x + p - 1) / p * p; }

// phi(x) = elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise, in place over n elements (n % W == 0).
// float: a vectorised exp (Cody-Waite reduction, degree-6 polynomial, ~1 ulp on x <= 0; x is
// clamped at -87 so 2^n stays normal: phi there is ~1e-38 instead of smaller). double: std::exp.
inline void phi_inplace(float* x, int n) {
  using V = VecT<float>::type;
  typedef int Vi __attribute__((vector_size(64)));
  constexpr int W = VecT<float>::W;
  for (int i = 0; i < n; i += W) {
    const V a = vload<V>(x + i);
    V t = a < 0.0f ? a : V{};
    t = t > -87.0f ? t : -87.0f - V{};
    const Vi ni = __builtin_convertvector(t * 1.44269504088896341f - 0.5f, Vi);  // round(t / ln 2), t <= 0
    const V nf = __builtin_convertvector(ni, V);
    V r = t - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    V p = 1.0f / 720 - V{};
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const Vi bits = (ni + 127) << 23;
    V scale;
    std::memcpy(&scale, &bits, sizeof(V));
    const V e = p * scale;
    vstore(x + i, a > 0.0f ? a + 1.0f : e);
  }
}
inline void phi_inplace(double* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = x[i] > 0 ? x[i] + 1.0 : std::exp(x[i]);
}
// d phi / dx from phi itself: 1 for x > 0 (phi > 1), exp(x) = phi for x <= 0 (phi <= 1).
template <typename T>
inline T dphi_from_phi(T p) {
  return p < T(1) ? p : T(1);
}

// A strided [N, X] view of one (batch, head) of a [B, H, N, X] tensor.
template <typename S>
struct View {
  S* p;
  long long sn, sx;
  S& at(long long n, long long x) const { return p[n * sn + x * sx]; }
};

template <typename S>
View<S> view_of(const at::Tensor& t, long long b, long long h) {
  S* base = static_cast<S*>(t.data_ptr()) + b * t.stride(0) + h * t.stride(1);
  return View<S>{base, t.stride(2), t.stride(3)};
}

// Load rows [t0, t0+L) of x into dst[kChunk][ld] (row-major) and, if dstT is given, also
// dstT[ld][kChunk] (its transpose), converted to T; rows >= L and columns >= X are zero. With
// phi, the rows hold phi(x) = elu(x) + 1. ld is a multiple of kPad (so of the vector width).
template <typename S, typename T>
void load_chunk(const View<const S>& x, int t0, int L, int X, T* dst, int ld, T* dstT, bool phi = false) {
  const bool full = L == kChunk && X == ld;  // every element is written below: no zero fill
  if (!full) std::fill(dst, dst + (long)kChunk * ld, T(0));
  for (int i = 0; i < L; ++i) {
    const S* row = &x.at(t0 + i, 0);
    T* d = dst + i * ld;
    if (x.sx == 1) {  // the common contiguous-row case: a vectorisable loop
      for (int c = 0; c < X; ++c) d[c] = static_cast<T>(row[c]);
    } else {
      for (int c = 0; c < X; ++c) d[c] = static_cast<T>(row[c * x.sx]);
    }
    if (phi) {
      phi_inplace(d, ld);
      for (int c = X; c < ld; ++c) d[c] = T(0);
    }
  }
  if (dstT) transpose(dst, ld, dstT, kChunk, kChunk, ld);
}

// Phi: q, k are raw and phi = elu + 1 is applied on load; else they are the features already.
template <typename S, bool Phi>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, at::Tensor& den) {
  using T = at::opmath_type<S>;
  using V = typename VecT<T>::type;
  constexpr int W = VecT<T>::W;
  const int B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), M = v.size(3);
  const int Dp = pad_to(D, kPad), Mp = pad_to(M, kPad);
  at::parallel_for(0, (int64_t)B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Qf(kChunk * Dp), Kf(kChunk * Dp), KfT(Dp * kChunk), Vc(kChunk * Mp), A(kChunk * kChunk), Num(kChunk * Mp),
        S_(Dp * Mp), z(Dp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const long long b = bh / H, h = bh % H;
      const auto qv = view_of<const S>(q, b, h), kv = view_of<const S>(k, b, h), vv = view_of<const S>(v, b, h);
      const auto ov = view_of<S>(out, b, h);
      T* denp = den.data_ptr<T>() + b * den.stride(0) + h * den.stride(1);
      std::fill(S_.begin(), S_.end(), T(0));
      std::fill(z.begin(), z.end(), T(0));
      for (int t0 = 0; t0 < N; t0 += kChunk) {
        const int L = std::min(kChunk, N - t0);
        load_chunk(qv, t0, L, D, Qf.data(), Dp, (T*)nullptr, Phi);
        load_chunk(kv, t0, L, D, Kf.data(), Dp, KfT.data(), Phi);
        load_chunk(vv, t0, L, M, Vc.data(), Mp, (T*)nullptr);
        // A = phi(Q) phi(K)^T, lower triangle.
        std::fill(A.begin(), A.end(), T(0));
        gemm_acc(Qf.data(), Dp, KfT.data(), kChunk, A.data(), kChunk, kChunk, kChunk, Dp, Tri::LowerOut);
        for (int i = 0; i < kChunk; ++i)
          for (int j = i + 1; j < kChunk; ++j) A[i * kChunk + j] = T(0);
        // num = A V + phi(Q) S_prev.
        std::fill(Num.begin(), Num.end(), T(0));
        gemm_acc(A.data(), kChunk, Vc.data(), Mp, Num.data(), Mp, kChunk, Mp, kChunk, Tri::LowerA);
        gemm_acc(Qf.data(), Dp, S_.data(), Mp, Num.data(), Mp, kChunk, Mp, Dp, Tri::Full);
        for (int i = 0; i < L; ++i) {
          // den_i = sum_j A[i][j] (masked above the diagonal) + phi(q_i) . z, in vector lanes.
          V dv = vload<V>(&A[i * kChunk]);
          for (int j = W; j < kChunk; j += W) dv += vload<V>(&A[i * kChunk + j]);
          for (int c = 0; c < Dp; c += W) dv += vload<V>(&Qf[i * Dp + c]) * vload<V>(&z[c]);
          const T d = hsum<V, W>(dv);
          denp[(t0 + i) * den.stride(2)] = d;
          const T inv = cp::inv_den(d);
          S* orow = &ov.at(t0 + i, 0);
          if (ov.sx == 1)
            for (int c = 0; c < M; ++c) orow[c] = static_cast<S>(Num[i * Mp + c] * inv);
          else
            for (int c = 0; c < M; ++c) orow[c * ov.sx] = static_cast<S>(Num[i * Mp + c] * inv);
        }
        // S += phi(K)^T V; z += sum of phi(K) rows.
        gemm_acc(KfT.data(), kChunk, Vc.data(), Mp, S_.data(), Mp, Dp, Mp, kChunk, Tri::Full);
        for (int c = 0; c < D; ++c) {
          T s = T(0);
          for (int i = 0; i < L; ++i) s += KfT[c * kChunk + i];
          z[c] += s;
        }
      }
    }
  });
}

// Computes G (= g / (den + eps)) into G[kChunk][Mp], its transpose into GT[Mp][kChunk] if given,
// and gd. Rows >= L and columns >= M of G are zero.
template <typename S, typename T>
void load_grad_chunk(const View<const S>& g, const View<const S>& o, const T* denp, long long dstride, int t0, int L,
                     int M, int Mp, T* G, T* GT, T* gd) {
  const bool full = L == kChunk && M == Mp;
  if (!full) std::fill(G, G + (long)kChunk * Mp, T(0));
  std::fill(gd, gd + kChunk, T(0));
  // Fast path (contiguous out rows, grad rows contiguous or stride 0 as from .sum().backward()):
  // the same sums as cp::grad_row, in 16 interleaved partial sums so that it vectorises.
  const bool fast = o.sx == 1 && (g.sx == 1 || g.sx == 0);
  for (int i = 0; fast && i < L; ++i) {
    const T inv = cp::inv_den(denp[(t0 + i) * dstride]);
    const S* orow = &o.at(t0 + i, 0);
    const S* grow = &g.at(t0 + i, 0);
    T* row = G + (long)i * Mp;
    constexpr int P = 16;
    T acc[P] = {};
    int c = 0;
    if (g.sx == 1) {
      for (; c + P <= M; c += P)
        for (int j = 0; j < P; ++j) {
          const T gc = static_cast<T>(grow[c + j]);
          acc[j] += gc * static_cast<T>(orow[c + j]);
          row[c + j] = gc * inv;
        }
      for (; c < M; ++c) {
        const T gc = static_cast<T>(grow[c]);
        acc[0] += gc * static_cast<T>(orow[c]);
        row[c] = gc * inv;
      }
    } else {
      const T gc = static_cast<T>(grow[0]);
      for (; c + P <= M; c += P)
        for (int j = 0; j < P; ++j) {
          acc[j] += gc * static_cast<T>(orow[c + j]);
          row[c + j] = gc * inv;
        }
      for (; c < M; ++c) {
        acc[0] += gc * static_cast<T>(orow[c]);
        row[c] = gc * inv;
      }
    }
    T dot = T(0);
    for (int j = 0; j < P; ++j) dot += acc[j];
    gd[i] = -dot * inv;
  }
  for (int i = 0; !fast && i < L; ++i) {
    const T inv = cp::inv_den(denp[(t0 + i) * dstride]);
    gd[i] = cp::grad_row<T>(
        M, inv, [&](int c) { return static_cast<T>(g.at(t0 + i, c)); },
        [&](int c) { return static_cast<T>(o.at(t0 + i, c)); }, G + (long)i * Mp);
  }
  if (GT) transpose(G, Mp, GT, kChunk, kChunk, Mp);
}

// Phi: q, k are raw (phi applied on load) and dq, dk are gradients w.r.t. raw q, k.
template <typename S, bool Phi>
void backward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                   const at::Tensor& den, const at::Tensor& gout, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  using T = at::opmath_type<S>;
  const int B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), M = v.size(3);
  const int Dp = pad_to(D, kPad), Mp = pad_to(M, kPad);
  const int nchunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, (int64_t)B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Qf(kChunk * Dp), QfT(Dp * kChunk), Kf(kChunk * Dp), Vc(kChunk * Mp), VT(Mp * kChunk),
        G(kChunk * Mp), GT(Mp * kChunk), gd(kChunk), P(kChunk * kChunk), P2(kChunk * kChunk), Out1(kChunk * Dp),
        Out2(kChunk * Mp), St(Mp * Dp), R(Dp * Mp), Rt(Mp * Dp), z(Dp), r(Dp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const long long b = bh / H, h = bh % H;
      const auto qv = view_of<const S>(q, b, h), kv = view_of<const S>(k, b, h), vv = view_of<const S>(v, b, h);
      const auto ov = view_of<const S>(out, b, h), gv = view_of<const S>(gout, b, h);
      const auto dqv = view_of<S>(dq, b, h), dkv = view_of<S>(dk, b, h), dvv = view_of<S>(dv, b, h);
      const T* denp = den.data_ptr<T>() + b * den.stride(0) + h * den.stride(1);
      const long long ds = den.stride(2);

      // Prefix sweep: dphi(q_i) = sum_{j<=i} (G_i . v_j + gd_i) phi(k_j); state S^T [Mp][Dp], z.
      std::fill(St.begin(), St.end(), T(0));
      std::fill(z.begin(), z.end(), T(0));
      for (int t0 = 0; t0 < N; t0 += kChunk) {
        const int L = std::min(kChunk, N - t0);
        load_chunk(kv, t0, L, D, Kf.data(), Dp, (T*)nullptr, Phi);
        if (Phi) load_chunk(qv, t0, L, D, Qf.data(), Dp, (T*)nullptr, true);
        load_chunk(vv, t0, L, M, Vc.data(), Mp, VT.data());
        load_grad_chunk(gv, ov, denp, ds, t0, L, M, Mp, G.data(), (T*)nullptr, gd.data());
        std::fill(P.begin(), P.end(), T(0));
        gemm_acc(G.data(), Mp, VT.data(), kChunk, P.data(), kChunk, kChunk, kChunk, Mp, Tri::LowerOut);
        for (int i = 0; i < kChunk; ++i)
          for (int j = 0; j < kChunk; ++j) P[i * kChunk + j] = j <= i ? P[i * kChunk + j] + gd[i] : T(0);
        std::fill(Out1.begin(), Out1.end(), T(0));
        gemm_acc(P.data(), kChunk, Kf.data(), Dp, Out1.data(), Dp, kChunk, Dp, kChunk, Tri::LowerA);
        gemm_acc(G.data(), Mp, St.data(), Dp, Out1.data(), Dp, kChunk, Dp, Mp, Tri::Full);
        for (int i = 0; i < L; ++i) {
          S* dqrow = &dqv.at(t0 + i, 0);  // dq, dk, dv are fresh contiguous tensors: unit stride
          for (int c = 0; c < D; ++c) {
            T g = Out1[i * Dp + c] + gd[i] * z[c];
            if (Phi) g *= dphi_from_phi(Qf[i * Dp + c]);
            dqrow[c] = static_cast<S>(g);
          }
        }
        gemm_acc(VT.data(), kChunk, Kf.data(), Dp, St.data(), Dp, Mp, Dp, kChunk, Tri::Full);
        for (int i = 0; i < L; ++i)
          for (int c = 0; c < D; ++c) z[c] += Kf[i * Dp + c];
      }

      // Suffix sweep: state R = sum_{i later} phi(q_i) G_i^T [Dp][Mp] (and R^T), r = sum phi(q_i) gd_i.
      std::fill(R.begin(), R.end(), T(0));
      std::fill(Rt.begin(), Rt.end(), T(0));
      std::fill(r.begin(), r.end(), T(0));
      for (int ci = nchunks - 1; ci >= 0; --ci) {
        const int t0 = ci * kChunk;
        const int L = std::min(kChunk, N - t0);
        load_chunk(qv, t0, L, D, Qf.data(), Dp, QfT.data(), Phi);
        load_chunk(kv, t0, L, D, Kf.data(), Dp, (T*)nullptr, Phi);
        load_chunk(vv, t0, L, M, Vc.data(), Mp, (T*)nullptr);
        load_grad_chunk(gv, ov, denp, ds, t0, L, M, Mp, G.data(), GT.data(), gd.data());
        // P = A^T (P[j][i] = a_ij for i >= j); P2 = B^T (P2[j][i] = G_i . v_j + gd_i for i >= j).
        std::fill(P.begin(), P.end(), T(0));
        gemm_acc(Kf.data(), Dp, QfT.data(), kChunk, P.data(), kChunk, kChunk, kChunk, Dp, Tri::UpperOut);
        std::fill(P2.begin(), P2.end(), T(0));
        gemm_acc(Vc.data(), Mp, GT.data(), kChunk, P2.data(), kChunk, kChunk, kChunk, Mp, Tri::UpperOut);
        for (int j = 0; j < kChunk; ++j)
          for (int i = 0; i < kChunk; ++i) {
            const bool keep = i >= j;
            P[j * kChunk + i] = keep ? P[j * kChunk + i] : T(0);
            P2[j * kChunk + i] = keep ? P2[j * kChunk + i] + gd[i] : T(0);
          }
        // dphi(k) = P2 phi(Q) + V R^T + r.
        std::fill(Out1.begin(), Out1.end(), T(0));
        gemm_acc(P2.data(), kChunk, Qf.data(), Dp, Out1.data(), Dp, kChunk, Dp, kChunk, Tri::UpperA);
        gemm_acc(Vc.data(), Mp, Rt.data(), Dp, Out1.data(), Dp, kChunk, Dp, Mp, Tri::Full);
        // dv = P G + phi(K) R.
        std::fill(Out2.begin(), Out2.end(), T(0));
        gemm_acc(P.data(), kChunk, G.data(), Mp, Out2.data(), Mp, kChunk, Mp, kChunk, Tri::UpperA);
        gemm_acc(Kf.data(), Dp, R.data(), Mp, Out2.data(), Mp, kChunk, Mp, Dp, Tri::Full);
        for (int j = 0; j < L; ++j) {
          S* dkrow = &dkv.at(t0 + j, 0);
          S* dvrow = &dvv.at(t0 + j, 0);
          for (int c = 0; c < D; ++c) {
            T g = Out1[j * Dp + c] + r[c];
            if (Phi) g *= dphi_from_phi(Kf[j * Dp + c]);
            dkrow[c] = static_cast<S>(g);
          }
          for (int c = 0; c < M; ++c) dvrow[c] = static_cast<S>(Out2[j * Mp + c]);
        }
        gemm_acc(QfT.data(), kChunk, G.data(), Mp, R.data(), Mp, Dp, Mp, kChunk, Tri::Full);
        transpose(R.data(), Mp, Rt.data(), Dp, Dp, Mp);
        for (int i = 0; i < L; ++i)
          for (int c = 0; c < D; ++c) r[c] += Qf[i * Dp + c] * gd[i];
      }
    }
  });
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "causal_product: q, k, v must be 4-D [B, H, N, D]");
  TORCH_CHECK(q.sizes() == k.sizes(), "causal_product: q and k must have one shape");
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              "causal_product: v must be [B, H, N, M] matching q");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "causal_product: q, k, v must share one dtype");
}

}  // namespace

// Returns (out [B, H, N, M] in q's dtype, den [B, H, N] in the accumulation dtype).
// phi: q, k are raw and the kernel applies phi = elu + 1 itself (else q, k are the features).
std::vector<at::Tensor> causal_product_cpu_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   bool phi) {
  check_inputs(q, k, v);
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  auto den = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "causal_product_cpu_forward",
                                  [&] {
                                    if (phi)
                                      forward_impl<scalar_t, true>(q, k, v, out, den);
                                    else
                                      forward_impl<scalar_t, false>(q, k, v, out, den);
                                  });
  return {out, den};
}

// Returns (dq, dk, dv); gout may have any strides, including 0.
std::vector<at::Tensor> causal_product_cpu_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& out, const at::Tensor& den,
                                                    const at::Tensor& gout, bool phi) {
  check_inputs(q, k, v);
  TORCH_CHECK(gout.sizes() == out.sizes() && gout.scalar_type() == out.scalar_type(),
              "causal_product: grad_out must match out's shape and dtype");
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::empty(k.sizes(), k.options());
  auto dv = at::empty(v.sizes(), v.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "causal_product_cpu_backward",
                                  [&] {
                                    if (phi)
                                      backward_impl<scalar_t, true>(q, k, v, out, den, gout, dq, dk, dv);
                                    else
                                      backward_impl<scalar_t, false>(q, k, v, out, den, gout, dq, dk, dv);
                                  });
  return {dq, dk, dv};
}
