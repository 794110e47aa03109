// SIMD building blocks of the CPU kernel (causal_product_cpu.cpp): GCC vector extensions, a
// register-blocked micro-kernel for the small products, in-register block transposes, a
// vectorised phi = elu + 1, software prefetch. Nothing here knows about attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

namespace causal_product {
namespace cpu {

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

// C[RB][NV*W] (+)= op(A)[RB][k0:k1] * B[k0:k1][NV*W]. op(A)(r, k) = A[r * ars + k * aks], so a
// transposed A costs nothing (the A values are broadcast one at a time); B is row-major.
// Over: start from zero instead of C.
template <typename T, int RB, int NV, bool Over>
inline void micro(const T* A, long ars, long aks, const T* B, long ldb, T* Cm, long ldc, int k0, int k1) {
  using V = typename VecT<T>::type;
  constexpr int W = VecT<T>::W;
  V acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Over ? V{} : vload<V>(Cm + r * ldc + v * W);
  for (int k = k0; k < k1; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) {
      b[v] = vload<V>(B + (long)k * ldb + v * W);
      asm("" : "+v"(b[v]));  // keep b in a register: one load per k, not one per (row, k)
    }
    for (int r = 0; r < RB; ++r) {
      const V a = A[r * ars + (long)k * aks] - V{};  // a splat (x - 0 == x exactly, so no add is emitted)
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) vstore(Cm + r * ldc + v * W, acc[r][v]);
}

// Which part of a product is needed (the engine's view of the shared Tri).
enum class Skip { None, LowerOut, UpperOut, LowerA, UpperA };

// C[rows][cols] (+)= op(A)[rows][K] B[K][cols]; rows % 8 == 0, cols % W == 0 (scratch is padded).
// LowerOut: only output tiles with a column <= a row are computed (the rest of C is left as it was:
// the caller masks it); LowerA / UpperA: op(A)(r, k) is zero for k > r / k < r, so those k are skipped.
// hook() runs after every micro-kernel call (the caller spreads its prefetches over them).
template <typename T, class Hook>
void gemm(const T* A, long ars, long aks, const T* B, long ldb, T* Cm, long ldc, int rows, int cols, int K, Skip skip,
          bool over, Hook&& hook) {
  constexpr int W = VecT<T>::W;
  const bool tri_out = skip == Skip::LowerOut || skip == Skip::UpperOut;
  const int rb = tri_out ? 8 : 4;
  for (int r0 = 0; r0 < rows; r0 += rb) {
    int k0 = 0, k1 = K;
    if (skip == Skip::LowerA) k1 = std::min(K, r0 + rb);
    if (skip == Skip::UpperA) k0 = r0;
    const T* Ar = A + (long)r0 * ars;
    T* Cr = Cm + (long)r0 * ldc;
    if (tri_out) {  // one-vector-wide tiles of 8 rows, so whole tiles off the triangle are skipped
      for (int c0 = 0; c0 < cols; c0 += W) {
        const bool off = (skip == Skip::LowerOut && c0 >= r0 + rb) || (skip == Skip::UpperOut && c0 + W <= r0);
        if (off) continue;
        if (over)
          micro<T, 8, 1, true>(Ar, ars, aks, B + c0, ldb, Cr + c0, ldc, k0, k1);
        else
          micro<T, 8, 1, false>(Ar, ars, aks, B + c0, ldb, Cr + c0, ldc, k0, k1);
        hook();
      }
      continue;
    }
    int c0 = 0;
    while (c0 < cols) {
      const int nv = (cols - c0 >= 4 * W) ? 4 : (cols - c0 >= 2 * W) ? 2 : 1;
      const T* Bc = B + c0;
      T* Cc = Cr + c0;
      if (over) {
        if (nv == 4) micro<T, 4, 4, true>(Ar, ars, aks, Bc, ldb, Cc, ldc, k0, k1);
        else if (nv == 2) micro<T, 4, 2, true>(Ar, ars, aks, Bc, ldb, Cc, ldc, k0, k1);
        else micro<T, 4, 1, true>(Ar, ars, aks, Bc, ldb, Cc, ldc, k0, k1);
      } else {
        if (nv == 4) micro<T, 4, 4, false>(Ar, ars, aks, Bc, ldb, Cc, ldc, k0, k1);
        else if (nv == 2) micro<T, 4, 2, false>(Ar, ars, aks, Bc, ldb, Cc, ldc, k0, k1);
        else micro<T, 4, 1, false>(Ar, ars, aks, Bc, ldb, Cc, ldc, k0, k1);
      }
      c0 += nv * W;
      hook();
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
// One butterfly stage of an in-register W x W transpose: swaps the off-diagonal s x s sub-blocks
// of every 2s x 2s block with two-source shuffles whose lane indices are compile-time constants.
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

// dst[c][r] = src[r][c] for one W x W block, in registers: log2(W) stages of shuffles, contiguous
// loads and stores (a scalar transpose of a 64 x 64 state stores with a 256-byte stride and stalls
// on 4K aliasing).
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

// dst[cols][rows] = src[rows][cols]^T by W x W blocks; rows and cols are multiples of W.
template <typename T>
void transpose(const T* src, long lds, T* dst, long ldd, int rows, int cols) {
  constexpr int W = VecT<T>::W;
  for (int r0 = 0; r0 < rows; r0 += W)
    for (int c0 = 0; c0 < cols; c0 += W) transpose_block(src + (long)r0 * lds + c0, lds, dst + (long)c0 * ldd + r0, ldd);
}

// phi(x) = elu(x) + 1 in place over n elements (n % W == 0). float: a vectorised exp (Cody-Waite
// reduction, degree-6 polynomial, ~1 ulp on x <= 0; x is clamped at -87 so 2^n stays normal: phi
// there is ~1e-38 instead of smaller). double: std::exp.
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

// Prefetch one cache line into L1. On x86 an asm statement: GCC 12 treats a function made only of
// __builtin_prefetch as free of side effects and deletes its calls.
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

// Rows of a later chunk to prefetch, issued a few cache lines at a time between micro-kernel calls:
// issuing them all at once fills the core's miss buffers and stalls (measured: 13 % of the time in
// the prefetch instructions), while each chunk of each tensor is a fresh 4 KiB page, which the
// hardware prefetcher does not enter on its own.
struct PrefetchQueue {
  static constexpr int kMax = 160;
  const char* row[kMax];
  int bytes[kMax];
  int n = 0, i = 0, off = 0, rate = 8;
  void clear() {
    flush();
    n = i = off = 0;
  }
  void add(const void* p, int b) {
    if (n < kMax) row[n] = static_cast<const char*>(p), bytes[n++] = b;
  }
  // Spread what was added over about `calls` pumps.
  void plan(int calls) {
    long lines = 0;
    for (int j = 0; j < n; ++j) lines += (bytes[j] + 63) / 64;
    rate = (int)std::max(1L, (lines + calls - 1) / calls);
  }
  void pump() {
    for (int k = 0; k < rate && i < n; ++k) {
      prefetch_line(row[i] + off);
      off += 64;
      if (off >= bytes[i]) off = 0, ++i;
    }
  }
  void flush() {
    while (i < n) pump();
  }
};

}  // namespace cpu
}  // namespace causal_product
