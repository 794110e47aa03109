// CUDA kernels of normalised causal linear attention (forward and linear-memory backward).
//
// Kept light on purpose: only the CUDA runtime and the torch-free math header, so it compiles
// against a CPU-only torch wheel's headers (tools/check_cuda_compile.py) and builds fast.
//
// Inputs are the features phi(q), phi(k) (applied by the Python wrapper); outputs are
// dL/dphi(q), dL/dphi(k), dL/dv.
//
// Work mapping (docs/kernels.md): grid = (B * H, column tiles); each thread owns one column (or
// row) of the D x M state in registers (length <= kCudaMaxHeadDim) and walks the sequence in
// tiles of kTile timesteps staged in shared memory:
//   forward   thread per value column m   state S[:, m]      (D registers)   prefix
//   dq        thread per feature row d     state S[d, :], z_d (M registers)   prefix
//   dk        thread per feature row d     state R[d, :], r_d (M registers)   suffix
//   dv        thread per value column m   state R[:, m]      (D registers)   suffix
// so the only live state is O(D M) per (batch, head); nothing of size N x D x M exists.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "causal_product_cuda.h"

namespace causal_product {
namespace {

constexpr int kThreads = 64;  // threads per block = state columns (or rows) per block
constexpr int kTile = 16;     // timesteps staged in shared memory at a time

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename S>
__device__ __forceinline__ S from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Element (t, x) of (batch, head) bh of a strided operand.
template <typename S>
__device__ __forceinline__ float ld(const Operand& o, int H, int bh, long long t, long long x) {
  const S* p = static_cast<const S*>(o.p);
  return to_f(p[(bh / H) * o.s.b + (bh % H) * o.s.h + t * o.s.n + x * o.s.x]);
}

// Stage rows [t0, t0 + kTile) x [0, X) of an operand into sh[kTile][R]; zero outside.
template <typename S, int R>
__device__ __forceinline__ void stage(float (*sh)[R], const Operand& o, int H, int bh, int N, int t0, int X) {
  for (int e = threadIdx.x; e < kTile * X; e += blockDim.x) {
    const int t = e / X, x = e % X;
    sh[t][x] = (t0 + t < N) ? ld<S>(o, H, bh, t0 + t, x) : 0.f;
  }
}

// Per tile: inv[t] = 1 / (den + eps) and, if G is given, G[t][c] = g * inv and gd[t] for c < M.
template <typename S, int R>
__device__ void stage_grad(const CudaArgs& a, int bh, int t0, float* inv, float (*G)[R], float* gd) {
  const int t = threadIdx.x;
  if (t < kTile) {
    const int n = t0 + t;
    if (n < a.N) {
      const float iv = inv_den(a.den[(long long)bh * a.N + n]);
      inv[t] = iv;
      if (G != nullptr) {
        gd[t] = grad_row<float>(
            a.M, iv, [&](int c) { return ld<S>(a.gout, a.H, bh, n, c); },
            [&](int c) { return ld<S>(a.out, a.H, bh, n, c); }, G[t]);
      }
    } else {
      inv[t] = 0.f;
      if (G != nullptr) {
        gd[t] = 0.f;
        for (int c = 0; c < a.M; ++c) G[t][c] = 0.f;
      }
    }
  }
}

template <typename S, int R>
__global__ void __launch_bounds__(kThreads) fwd_kernel(CudaArgs a) {
  __shared__ float qf[kTile][R], kf[kTile][R], vt[kTile][kThreads], den_s[kTile];
  __shared__ float zrun[R];
  const int bh = blockIdx.x, m = blockIdx.y * kThreads + threadIdx.x;
  float s[R];
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.f;
  for (int d = threadIdx.x; d < R; d += blockDim.x) zrun[d] = 0.f;
  S* out = static_cast<S*>(a.out_w);
  for (int t0 = 0; t0 < a.N; t0 += kTile) {
    __syncthreads();
    stage<S, R>(qf, a.q, a.H, bh, a.N, t0, a.D);
    stage<S, R>(kf, a.k, a.H, bh, a.N, t0, a.D);
    for (int e = threadIdx.x; e < kTile * kThreads; e += blockDim.x) {
      const int t = e / kThreads, c = blockIdx.y * kThreads + e % kThreads;
      vt[t][e % kThreads] = (t0 + t < a.N && c < a.M) ? ld<S>(a.v, a.H, bh, t0 + t, c) : 0.f;
    }
    __syncthreads();
    // den_t = phi(q_t) . (z before the tile + sum of phi(k) up to t): one thread per timestep.
    if (threadIdx.x < kTile) {
      const int t = threadIdx.x;
      float acc = 0.f;
      for (int d = 0; d < a.D; ++d) {
        float zd = zrun[d];
        for (int u = 0; u <= t; ++u) zd += kf[u][d];
        acc += qf[t][d] * zd;
      }
      den_s[t] = acc;
      if (blockIdx.y == 0 && t0 + t < a.N) a.den[(long long)bh * a.N + t0 + t] = acc;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
      float zd = zrun[d];
      for (int u = 0; u < kTile; ++u) zd += kf[u][d];
      zrun[d] = zd;
    }
    const int tn = min(kTile, a.N - t0);
    for (int t = 0; t < tn; ++t) {
      const float num = step_update_dot<R>(
          s, a.D, [&](int r) { return kf[t][r]; }, vt[t][threadIdx.x], [&](int r) { return qf[t][r]; });
      if (m < a.M) out[((long long)bh * a.N + t0 + t) * a.M + m] = from_f<S>(num * inv_den(den_s[t]));
    }
  }
}

// d phi(q) (prefix) when kSuffix is false, d phi(k) (suffix) when true: one thread per feature row d.
template <typename S, int R, bool kSuffix>
__global__ void __launch_bounds__(kThreads) dqk_kernel(CudaArgs a) {
  __shared__ float vt[kTile][R], G[kTile][R], inv[kTile], gd[kTile];
  const int bh = blockIdx.x, d = blockIdx.y * kThreads + threadIdx.x;
  const bool live = d < a.D;
  const Operand& own = kSuffix ? a.q : a.k;  // the operand whose phi drives this thread's state
  S* grad = static_cast<S*>(kSuffix ? a.dk : a.dq);
  float s[R];
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.f;
  float zr = 0.f;
  const int ntiles = (a.N + kTile - 1) / kTile;
  for (int it = 0; it < ntiles; ++it) {
    const int t0 = (kSuffix ? ntiles - 1 - it : it) * kTile;
    __syncthreads();
    stage<S, R>(vt, a.v, a.H, bh, a.N, t0, a.M);
    stage_grad<S, R>(a, bh, t0, inv, G, gd);
    __syncthreads();
    const int tn = min(kTile, a.N - t0);
    for (int i = 0; i < tn; ++i) {
      const int t = kSuffix ? tn - 1 - i : i;
      const long long n = t0 + t;
      const float f = live ? ld<S>(own, a.H, bh, n, d) : 0.f;
      float acc;
      if (!kSuffix) {  // S[d, :] += phi(k)_d v; dphi(q)_d = S[d, :] . G + gd z_d
        acc = step_update_dot<R>(s, a.M, [&](int r) { return vt[t][r]; }, f, [&](int r) { return G[t][r]; });
        zr += f;
        acc += gd[t] * zr;
      } else {  // R[d, :] += phi(q)_d G; dphi(k)_d = R[d, :] . v + r_d
        acc = step_update_dot<R>(s, a.M, [&](int r) { return G[t][r]; }, f, [&](int r) { return vt[t][r]; });
        zr += f * gd[t];
        acc += zr;
      }
      if (live) grad[((long long)bh * a.N + n) * a.D + d] = from_f<S>(acc);
    }
  }
}

// dv (suffix): one thread per value column m, state R[:, m] = sum_{i >= j} phi(q_i) G_i[m].
template <typename S, int R>
__global__ void __launch_bounds__(kThreads) dv_kernel(CudaArgs a) {
  __shared__ float qf[kTile][R], kf[kTile][R], inv[kTile];
  const int bh = blockIdx.x, m = blockIdx.y * kThreads + threadIdx.x;
  const bool live = m < a.M;
  S* dv = static_cast<S*>(a.dv);
  float s[R];
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.f;
  const int ntiles = (a.N + kTile - 1) / kTile;
  for (int it = ntiles - 1; it >= 0; --it) {
    const int t0 = it * kTile;
    __syncthreads();
    stage<S, R>(qf, a.q, a.H, bh, a.N, t0, a.D);
    stage<S, R>(kf, a.k, a.H, bh, a.N, t0, a.D);
    stage_grad<S, R>(a, bh, t0, inv, nullptr, nullptr);
    __syncthreads();
    const int tn = min(kTile, a.N - t0);
    for (int t = tn - 1; t >= 0; --t) {
      const long long n = t0 + t;
      const float gm = live ? ld<S>(a.gout, a.H, bh, n, m) * inv[t] : 0.f;
      const float acc =
          step_update_dot<R>(s, a.D, [&](int r) { return qf[t][r]; }, gm, [&](int r) { return kf[t][r]; });
      if (live) dv[((long long)bh * a.N + n) * a.M + m] = from_f<S>(acc);
    }
  }
}

inline int blocks_for(int x) { return (x + kThreads - 1) / kThreads; }

template <typename S, int R>
void launch_fwd(const CudaArgs& a, cudaStream_t st) {
  fwd_kernel<S, R><<<dim3(a.B * a.H, blocks_for(a.M)), kThreads, 0, st>>>(a);
}

template <typename S, int R>
void launch_bwd(const CudaArgs& a, cudaStream_t st, bool dv_part) {
  if (dv_part) {
    dv_kernel<S, R><<<dim3(a.B * a.H, blocks_for(a.M)), kThreads, 0, st>>>(a);
  } else {
    dqk_kernel<S, R, false><<<dim3(a.B * a.H, blocks_for(a.D)), kThreads, 0, st>>>(a);
    dqk_kernel<S, R, true><<<dim3(a.B * a.H, blocks_for(a.D)), kThreads, 0, st>>>(a);
  }
}

// Smallest register-state length R in {32, 64, 128} that holds `len`.
template <typename S, typename Fn32, typename Fn64, typename Fn128>
int by_len(int len, Fn32 f32, Fn64 f64, Fn128 f128) {
  if (len <= 32) f32();
  else if (len <= 64) f64();
  else if (len <= kCudaMaxHeadDim) f128();
  else return static_cast<int>(cudaErrorInvalidValue);
  return 0;
}

template <typename S>
int forward_typed(const CudaArgs& a, cudaStream_t st) {
  const int rc = by_len<S>(
      a.D, [&] { launch_fwd<S, 32>(a, st); }, [&] { launch_fwd<S, 64>(a, st); },
      [&] { launch_fwd<S, 128>(a, st); });
  return rc ? rc : static_cast<int>(cudaGetLastError());
}

template <typename S>
int backward_typed(const CudaArgs& a, cudaStream_t st) {
  int rc = by_len<S>(
      a.M, [&] { launch_bwd<S, 32>(a, st, false); }, [&] { launch_bwd<S, 64>(a, st, false); },
      [&] { launch_bwd<S, 128>(a, st, false); });
  if (rc) return rc;
  rc = by_len<S>(
      a.D, [&] { launch_bwd<S, 32>(a, st, true); }, [&] { launch_bwd<S, 64>(a, st, true); },
      [&] { launch_bwd<S, 128>(a, st, true); });
  return rc ? rc : static_cast<int>(cudaGetLastError());
}

}  // namespace

int causal_product_cuda_forward(const CudaArgs& a, void* stream) {
  if (a.N == 0 || a.B * a.H == 0 || a.M == 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::f32: return forward_typed<float>(a, st);
    case DType::f16: return forward_typed<__half>(a, st);
    case DType::bf16: return forward_typed<__nv_bfloat16>(a, st);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int causal_product_cuda_backward(const CudaArgs& a, void* stream) {
  if (a.N == 0 || a.B * a.H == 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case DType::f32: return backward_typed<float>(a, st);
    case DType::f16: return backward_typed<__half>(a, st);
    case DType::bf16: return backward_typed<__nv_bfloat16>(a, st);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

const char* causal_product_cuda_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace causal_product
