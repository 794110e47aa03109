// Per-element and per-row math of normalised causal linear attention, shared by the CPU
// kernel (causal_product_cpu.cpp) and the CUDA kernel (causal_product_cuda.cu).
//
// Torch-free on purpose: the .cu includes only this header and the CUDA runtime, so it
// compiles against the headers of a CPU-only torch wheel (tools/check_cuda_compile.py).
//
// The kernels take the features phi(q), phi(k) (phi = elu + 1 is applied by the Python wrapper,
// vectorised by PyTorch, whose autograd then carries dL/dphi on to raw q and k).
//
// Notation (docs/kernels.md): a_ij = phi(q_i) . phi(k_j) for j <= i;
//   num_i = sum_j a_ij v_j,  den_i = sum_j a_ij,  out_i = num_i / (den_i + EPS).
// Backward with g_i = dL/dout_i and inv_i = 1 / (den_i + EPS):
//   G_i  = g_i * inv_i                       (dL/dnum_i, an M-vector)
//   gd_i = -(g_i . out_i) * inv_i            (dL/dden_i, a scalar)
//   dphi(q_i) = sum_{j<=i} (G_i . v_j + gd_i) phi(k_j)          prefix sum
//   dphi(k_j) = sum_{i>=j} (G_i . v_j + gd_i) phi(q_i)          suffix sum
//   dv_j      = sum_{i>=j} a_ij G_i                             suffix sum
// i.e. the denominator is the numerator of a value column of ones, whose gradient is gd_i.
#pragma once

#if defined(__CUDACC__)
#define CP_HD __host__ __device__ __forceinline__
#else
#define CP_HD inline
#endif

namespace causal_product {

// The normaliser's epsilon: out = num / (den + EPS), the same value as attnbench.impls.common.EPS.
constexpr double kEps = 1e-6;

// 1 / (den + EPS).
template <typename T>
CP_HD T inv_den(T den) {
  return T(1) / (den + T(kEps));
}

// Row i of the backward's normaliser terms: gd_i = -(g_i . out_i) * inv_i and G_i = g_i * inv_i.
// g and out are read through element strides (a stride-0 gradient is fine); G is written densely.
template <typename T, typename GetG, typename GetOut>
CP_HD T grad_row(int m, T inv, GetG g, GetOut out, T* G) {
  T dot = T(0);
  for (int c = 0; c < m; ++c) {
    const T gc = g(c);
    dot += gc * out(c);
    G[c] = gc * inv;
  }
  return -dot * inv;
}

// One timestep of the recurrent form for a single state column (or row) held by one thread:
// state[r] += a[r] * b, then returns sum_r c[r] * state[r]. R is a compile-time bound so that
// `state` lives in registers; `len` <= R is the true length.
template <int R, typename T, typename LoadA, typename LoadC>
CP_HD T step_update_dot(T (&state)[R], int len, LoadA a, T b, LoadC c) {
  T acc0 = T(0), acc1 = T(0);
#pragma unroll
  for (int r = 0; r < R; r += 2) {
    if (r < len) {
      state[r] += a(r) * b;
      acc0 += c(r) * state[r];
    }
    if (r + 1 < len) {
      state[r + 1] += a(r + 1) * b;
      acc1 += c(r + 1) * state[r + 1];
    }
  }
  return acc0 + acc1;
}

// The read-only counterpart: sum_r c[r] * state[r] (used where the readout precedes the update).
template <int R, typename T, typename LoadC>
CP_HD T state_dot(const T (&state)[R], int len, LoadC c) {
  T acc0 = T(0), acc1 = T(0);
#pragma unroll
  for (int r = 0; r < R; r += 2) {
    if (r < len) acc0 += c(r) * state[r];
    if (r + 1 < len) acc1 += c(r + 1) * state[r + 1];
  }
  return acc0 + acc1;
}

// Strides (in elements) of a [B, H, N, X] tensor view; any of them may be 0 or negative-free
// arbitrary, so non-contiguous and expanded (stride-0) tensors are read correctly.
struct Strides4 {
  long long b, h, n, x;
};

}  // namespace causal_product
