// CUDA kernels of normalised causal linear attention, sequence-parallel (docs/kernels.md).
//
// Kept light on purpose: only the CUDA runtime and the torch-free headers, so it compiles against a
// CPU-only torch wheel's headers (tools/check_cuda_compile.py) and builds fast.
//
// One block of 4 warps per (batch x head, chunk of L tokens): B*H*ceil(N/L) blocks on a 1-D grid.
//   forward:  kStateFwd  S_c = Kf^T V, z_c                  (chunk_state_kv)         -> workspace
//             scan       exclusive prefix over chunks        (scan_step)
//             kOut       out, den from S_in, z_in            (chunk_forward_output)
//   backward: kStateBwd  gd per row; S_c, z_c; R_c = Qf^T G, r_c (chunk_state_kv, chunk_state_qg)
//             scan       prefix over S, z; suffix over R, r
//             kDq        dq from S_in, z_in                  (chunk_dq)
//             kDkdv      dk, dv from R_in, r_in              (chunk_dkdv)
// The steps are the functions of causal_product_math.h that the CPU kernel runs per chunk; this file
// supplies their engine: tiles in shared memory, products on tensor cores (mma.sync), epilogues in
// registers.
//
// Precision. phi and every accumulator are fp32. For fp16/bf16 inputs, products of two input tiles
// (Qf Kf^T, mask(A) V, Kf^T V) run as fp16/bf16 mma with fp32 accumulation (ldmatrix operand loads);
// products with a fp32 operand (a state, G = g / (den + eps), P) run as TF32 mma, because a state
// summed over a long sequence overflows fp16 and G (~ g / i) underflows it. For fp32 inputs every
// product is 3xTF32 (a = hi + lo, hi*hi + hi*lo + lo*hi), close to fp32 accuracy on tensor cores.
#if defined(CP_CUDA_EMULATE)
#include "cuda_emu.h"  // the CPU emulation used by tests/test_cuda_compile.py (never a real build)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define CP_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define CP_LAUNCH(kern, blocks, threads, smem, stream, ...) \
  kern<<<static_cast<unsigned>(blocks), threads, smem, stream>>>(__VA_ARGS__)
#endif

#include <cstdint>
#include <type_traits>

#include "causal_product_cuda.h"

namespace causal_product {
namespace {

constexpr int kWarps = kCudaThreads / 32;
constexpr int kRG = 4;  // 16-row tiles a warp accumulates at once

template <typename Tin>
__host__ __device__ constexpr bool is16() {
  return sizeof(Tin) == 2;
}
// Tokens per chunk: must match cuda_chunk_len() on the host.
template <typename Tin, int W>
__host__ __device__ constexpr int chunk_len() {
  return chunk_len_for(sizeof(Tin), W);
}

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

// ---- tensor-core primitives (PTX ISA: mma.m16n8k16 / m16n8k8 fragment layouts) ----
// Thread `lane` of a warp holds accumulator elements (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
// of a 16 x 8 tile, g = lane / 4, t = lane % 4.
#if defined(CP_CUDA_EMULATE)
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p, bool trans) { emu::ldmatrix(r, 4, p, trans); }
__device__ __forceinline__ void ldsm_x2(unsigned (&r)[2], const void* p, bool trans) { emu::ldmatrix(r, 2, p, trans); }
template <typename Tin>
__device__ __forceinline__ void mma16(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  if constexpr (sizeof(Tin) == 2) emu::mma16(c, a, b, std::is_same<Tin, __nv_bfloat16>::value);
}
__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  emu::mma_tf32(c, a, b);
}
__device__ __forceinline__ unsigned to_tf32(float x) { return emu::to_tf32(x); }
#else
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2(unsigned (&r)[2], const void* p, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
}
template <typename Tin>
__device__ __forceinline__ void mma16(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]);
template <>
__device__ __forceinline__ void mma16<__half>(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16<__nv_bfloat16>(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16<float>(float (&)[4], const unsigned (&)[4], const unsigned (&)[2]) {}
__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
#endif

__device__ __forceinline__ bool k_needed(Tri tri, int rt, int k0, int kw) {
  if (tri == Tri::LowerA) return k0 <= rt * 16 + 15;
  if (tri == Tri::UpperA) return k0 + kw - 1 >= rt * 16;
  return true;
}
__device__ __forceinline__ bool tile_needed(Tri tri, int rt, int n) {
  return tri != Tri::Lower || n * 8 <= rt * 16 + 15;
}

// phi = elu + 1 on load; padding stays exactly 0.
__device__ __forceinline__ float phi_f(float x) { return phi(x, __expf(x)); }

// ---- the engine of one block: one chunk of one (batch, head) ----
template <typename Tin, int W, Kern K>
struct Block {
  using T = float;
  static constexpr int L = chunk_len<Tin, W>();
  static constexpr int NTW = W / 8 / kWarps;  // 8-wide column tiles per warp (at most)

  const CudaArgs& a;
  int bh, c, t0, n_rows, Dp, Mp, nc;
  long long E;  // floats of a state record
  Tin *qf, *kf, *v, *g, *a16, *stage;
  float *p32, *rowv0, *rowv1, *featv;
  float* rec;  // this chunk's state record

  __device__ Block(const CudaArgs& args, unsigned char* smem) : a(args) {
    Dp = pad16(a.D);
    Mp = pad16(a.M);
    nc = (a.N + L - 1) / L;
    const long long blk = blockIdx.x;
    bh = static_cast<int>(blk / nc);
    c = static_cast<int>(blk % nc);
    t0 = c * L;
    n_rows = min(L, a.N - t0);
    const bool bwd = K == Kern::StateBwd || K == Kern::Dq || K == Kern::Dkdv;
    E = state_record(a.D, a.M, bwd);
    rec = a.work + ((long long)bh * nc + c) * E;
    const SmemPlan p = smem_plan(K, sizeof(Tin), L, Dp, Mp);
    auto at = [&](int off) { return off < 0 ? nullptr : smem + off; };
    qf = reinterpret_cast<Tin*>(at(p.qf));
    kf = reinterpret_cast<Tin*>(at(p.kf));
    v = reinterpret_cast<Tin*>(at(p.v));
    g = reinterpret_cast<Tin*>(at(p.g));
    a16 = reinterpret_cast<Tin*>(at(p.a16));
    p32 = reinterpret_cast<float*>(at(p.p32));
    rowv0 = reinterpret_cast<float*>(at(p.rowv0));
    rowv1 = reinterpret_cast<float*>(at(p.rowv1));
    featv = reinterpret_cast<float*>(at(p.featv));
    stage = reinterpret_cast<Tin*>(smem + p.stage);
  }

  // ---- global <-> shared ----
  // Rows [t0, t0 + L) x [0, X) of a [B, H, N, X] operand into dst[L][Xp + 8], phi applied if asked,
  // zero outside the tensor. Unit-stride 16-byte-aligned rows go by 16-byte vector loads.
  __device__ void load_tile(Tin* dst, const Operand& op, int X, int Xp, bool apply_phi) {
    const long long base = (bh / a.H) * op.s.b + (bh % a.H) * op.s.h;
    const Tin* src = static_cast<const Tin*>(op.p) + base;
    const int ld = Xp + 8;
    if (op.vec) {
      constexpr int per = 16 / sizeof(Tin);
      const int cols = Xp / per;
      for (int e = threadIdx.x; e < L * cols; e += kCudaThreads) {
        const int r = e / cols, cc = (e % cols) * per;
        uint4 raw = make_uint4(0, 0, 0, 0);
        if (r < n_rows && cc < X) {
          raw = *reinterpret_cast<const uint4*>(src + (long long)(t0 + r) * op.s.n + cc);
          if (apply_phi) {
            Tin* x = reinterpret_cast<Tin*>(&raw);
#pragma unroll
            for (int j = 0; j < per; ++j) x[j] = from_f<Tin>(phi_f(to_f(x[j])));
          }
        }
        *reinterpret_cast<uint4*>(dst + r * ld + cc) = raw;
      }
    } else {
      for (int e = threadIdx.x; e < L * Xp; e += kCudaThreads) {
        const int r = e / Xp, cc = e % Xp;
        float x = 0.f;
        if (r < n_rows && cc < X) {
          x = to_f(src[(long long)(t0 + r) * op.s.n + (long long)cc * op.s.x]);
          if (apply_phi) x = phi_f(x);
        }
        dst[r * ld + cc] = from_f<Tin>(x);
      }
    }
  }
  // Staged rows [L][X + 8] to the contiguous [B*H, N, X] output.
  __device__ void store_rows(void* out, int X) {
    Tin* dst = static_cast<Tin*>(out) + ((long long)bh * a.N + t0) * X;
    const int ld = pad16(X) + 8;
    constexpr int per = 16 / sizeof(Tin);
    if ((X * (int)sizeof(Tin)) % 16 == 0) {
      const int cols = X / per;
      for (int e = threadIdx.x; e < n_rows * cols; e += kCudaThreads) {
        const int r = e / cols, cc = (e % cols) * per;
        *reinterpret_cast<uint4*>(dst + (long long)r * X + cc) = *reinterpret_cast<const uint4*>(stage + r * ld + cc);
      }
    } else {
      for (int e = threadIdx.x; e < n_rows * X; e += kCudaThreads) {
        const int r = e / X, cc = e % X;
        dst[(long long)r * X + cc] = stage[r * ld + cc];
      }
    }
  }

  // ---- operands ----
  __device__ int rows_of(Slot s) const {
    return s == Slot::S || s == Slot::R ? Dp : L;
  }
  __device__ int cols_of(Slot s) const {
    switch (s) {
      case Slot::Qf: case Slot::Kf: return Dp;
      case Slot::V: case Slot::G: case Slot::S: case Slot::R: return Mp;
      default: return L;
    }
  }
  // Is this slot a 16-bit tile in shared memory (an ldmatrix operand)?
  __host__ __device__ static constexpr bool tile16(Slot s) {
    return is16<Tin>() && (s == Slot::Qf || s == Slot::Kf || s == Slot::V || (s == Slot::A && K == Kern::Out));
  }
  __device__ const Tin* tile_ptr(Slot s, int& ld) const {
    switch (s) {
      case Slot::Qf: ld = Dp + 8; return qf;
      case Slot::Kf: ld = Dp + 8; return kf;
      case Slot::V: ld = Mp + 8; return v;
      default: ld = L + 8; return a16;
    }
  }
  // Element (r, c) of a slot as stored, as fp32.
  __device__ float elem(Slot s, int r, int cc) const {
    switch (s) {
      case Slot::Qf: return to_f(qf[r * (Dp + 8) + cc]);
      case Slot::Kf: return to_f(kf[r * (Dp + 8) + cc]);
      case Slot::V: return to_f(v[r * (Mp + 8) + cc]);
      case Slot::G: return to_f(g[r * (Mp + 8) + cc]) * rowv0[r];  // g * inv
      case Slot::A: return K == Kern::Out ? to_f(a16[r * (L + 8) + cc]) : p32[r * (L + 8) + cc];
      case Slot::P: return p32[r * (L + 8) + cc];
      case Slot::S: return rec[(long long)r * Mp + cc];
      default: return rec[E / 2 + (long long)r * Mp + cc];  // R: the second half of a backward record
    }
  }

  // acc[i][u] += op(a) op(b) for row tiles rg + i and the warp's column tiles warp + kWarps * u.
  template <class Pr>
  __device__ void product(float (&acc)[kRG][NTW][4], int rg) const {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
    const int rtiles = (Pr::ta ? cols_of(Pr::a) : rows_of(Pr::a)) / 16;
    const int K_ = Pr::ta ? rows_of(Pr::a) : cols_of(Pr::a);
    const int ntiles = (Pr::tb ? rows_of(Pr::b) : cols_of(Pr::b)) / 8;
    if constexpr (tile16(Pr::a) && tile16(Pr::b)) {
      int lda, ldb;
      const Tin* A = tile_ptr(Pr::a, lda);
      const Tin* B = tile_ptr(Pr::b, ldb);
      for (int k0 = 0; k0 < K_; k0 += 16) {
        unsigned bf[NTW][2];
#pragma unroll
        for (int u = 0; u < NTW; ++u) {
          const int n0 = (warp + kWarps * u) * 8;
          if (n0 >= ntiles * 8) continue;
          const Tin* p = Pr::tb ? B + (n0 + lane % 8) * ldb + k0 + 8 * ((lane / 8) & 1)
                                : B + (k0 + lane % 8 + 8 * ((lane / 8) & 1)) * ldb + n0;
          ldsm_x2(bf[u], p, !Pr::tb);
        }
#pragma unroll
        for (int i = 0; i < kRG; ++i) {
          const int rt = rg + i;
          if (rt >= rtiles || !k_needed(Pr::tri, rt, k0, 16)) continue;
          const int r0 = rt * 16;
          unsigned af[4];
          const Tin* p = Pr::ta ? A + (k0 + lane % 8 + 8 * (lane / 16)) * lda + r0 + 8 * ((lane / 8) & 1)
                                : A + (r0 + lane % 8 + 8 * ((lane / 8) & 1)) * lda + k0 + 8 * (lane / 16);
          ldsm_x4(af, p, Pr::ta);
#pragma unroll
          for (int u = 0; u < NTW; ++u) {
            const int n = warp + kWarps * u;
            if (n < ntiles && tile_needed(Pr::tri, rt, n)) mma16<Tin>(acc[i][u], af, bf[u]);
          }
        }
      }
    } else {
      auto opa = [&](int r, int k) { return Pr::ta ? elem(Pr::a, k, r) : elem(Pr::a, r, k); };
      auto opb = [&](int k, int n) { return Pr::tb ? elem(Pr::b, n, k) : elem(Pr::b, k, n); };
      for (int k0 = 0; k0 < K_; k0 += 8) {
        float bv[NTW][2];
#pragma unroll
        for (int u = 0; u < NTW; ++u) {
          const int n0 = (warp + kWarps * u) * 8;
          if (n0 >= ntiles * 8) continue;
          bv[u][0] = opb(k0 + tq, n0 + gq);
          bv[u][1] = opb(k0 + tq + 4, n0 + gq);
        }
#pragma unroll
        for (int i = 0; i < kRG; ++i) {
          const int rt = rg + i;
          if (rt >= rtiles || !k_needed(Pr::tri, rt, k0, 8)) continue;
          const int r0 = rt * 16;
          const float av[4] = {opa(r0 + gq, k0 + tq), opa(r0 + gq + 8, k0 + tq), opa(r0 + gq, k0 + tq + 4),
                               opa(r0 + gq + 8, k0 + tq + 4)};
          unsigned ahi[4], alo[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            ahi[j] = to_tf32(av[j]);
            alo[j] = to_tf32(av[j] - __uint_as_float(ahi[j]));
          }
#pragma unroll
          for (int u = 0; u < NTW; ++u) {
            const int n = warp + kWarps * u;
            if (n >= ntiles || !tile_needed(Pr::tri, rt, n)) continue;
            unsigned bhi[2], blo[2];
#pragma unroll
            for (int j = 0; j < 2; ++j) {
              bhi[j] = to_tf32(bv[u][j]);
              blo[j] = to_tf32(bv[u][j] - __uint_as_float(bhi[j]));
            }
            mma_tf32(acc[i][u], ahi, bhi);
            if constexpr (!is16<Tin>()) {  // 3xTF32 for fp32 inputs
              mma_tf32(acc[i][u], ahi, blo);
              mma_tf32(acc[i][u], alo, bhi);
            }
          }
        }
      }
    }
  }

  // Runs the products of one destination and hands every output element to put(r, c, epi(r, c, x)).
  template <class P1, class P2, class Epi, class Put>
  __device__ void run(Epi epi, Put put, float* rowsums) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
    const int rtiles = (P1::ta ? cols_of(P1::a) : rows_of(P1::a)) / 16;
    const int ntiles = (P1::tb ? rows_of(P1::b) : cols_of(P1::b)) / 8;
    for (int rg = 0; rg < rtiles; rg += kRG) {
      float acc[kRG][NTW][4];
#pragma unroll
      for (int i = 0; i < kRG; ++i)
#pragma unroll
        for (int u = 0; u < NTW; ++u)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][u][j] = 0.f;
      product<P1>(acc, rg);
      if constexpr (!std::is_same<P2, void>::value) product<P2>(acc, rg);
      // Epilogue values first (epi may read tiles that a staged store overwrites), then the stores.
#pragma unroll
      for (int i = 0; i < kRG; ++i) {
        const int rt = rg + i;
        if (rt >= rtiles) continue;
        float lo = 0.f, hi = 0.f;  // this thread's share of rows r0 + g and r0 + g + 8
#pragma unroll
        for (int u = 0; u < NTW; ++u) {
          const int n = warp + kWarps * u;
          if (n >= ntiles) continue;
          const int r = rt * 16 + gq, cc = n * 8 + 2 * tq;
          acc[i][u][0] = epi(r, cc, acc[i][u][0]);
          acc[i][u][1] = epi(r, cc + 1, acc[i][u][1]);
          acc[i][u][2] = epi(r + 8, cc, acc[i][u][2]);
          acc[i][u][3] = epi(r + 8, cc + 1, acc[i][u][3]);
          lo += acc[i][u][0] + acc[i][u][1];
          hi += acc[i][u][2] + acc[i][u][3];
        }
        if (rowsums != nullptr) {  // the quad holds a row's 8 columns of a tile: reduce, then one add per quad
          lo += __shfl_xor_sync(0xffffffffu, lo, 1);
          lo += __shfl_xor_sync(0xffffffffu, lo, 2);
          hi += __shfl_xor_sync(0xffffffffu, hi, 1);
          hi += __shfl_xor_sync(0xffffffffu, hi, 2);
          if (tq == 0) {
            atomicAdd(rowsums + rt * 16 + gq, lo);
            atomicAdd(rowsums + rt * 16 + gq + 8, hi);
          }
        }
      }
      put.before();
#pragma unroll
      for (int i = 0; i < kRG; ++i) {
        const int rt = rg + i;
        if (rt >= rtiles) continue;
#pragma unroll
        for (int u = 0; u < NTW; ++u) {
          const int n = warp + kWarps * u;
          if (n >= ntiles) continue;
          const int r = rt * 16 + gq, cc = n * 8 + 2 * tq;
          put(r, cc, acc[i][u][0], acc[i][u][1]);
          put(r + 8, cc, acc[i][u][2], acc[i][u][3]);
        }
      }
      put.after();
    }
  }

  // Where results go. Each has before() (after the products, before the first put) and after().
  struct PutSmem16 {  // mask(A) as the next product's 16-bit operand
    Tin* t;
    int ld;
    __device__ void before() const {}
    __device__ void after() const {}
    __device__ void operator()(int r, int cc, float v0, float v1) const {
      t[r * ld + cc] = from_f<Tin>(v0);
      t[r * ld + cc + 1] = from_f<Tin>(v1);
    }
  };
  struct PutSmem32 {  // P or the backward's A, fp32
    float* t;
    int ld;
    __device__ void before() const {}
    __device__ void after() const {}
    __device__ void operator()(int r, int cc, float v0, float v1) const {
      *reinterpret_cast<float2*>(t + r * ld + cc) = make_float2(v0, v1);
    }
  };
  struct PutGlobal32 {  // a state record [Dp][Mp]
    float* t;
    int ld;
    __device__ void before() const {}
    __device__ void after() const {}
    __device__ void operator()(int r, int cc, float v0, float v1) const {
      *reinterpret_cast<float2*>(t + (long long)r * ld + cc) = make_float2(v0, v1);
    }
  };
  // Output rows. 16-bit: staged in shared memory, then stored with 16-byte vector stores (a thread's
  // pair is 4 bytes, a quad's 16: half a sector). fp32: a quad's pairs are a full 32-byte sector, so
  // straight from the registers.
  struct PutRows {
    Block* b;
    void* out;
    int X;
    __device__ void before() const {
      if (is16<Tin>()) __syncthreads();  // the staging area may overlay the tiles
    }
    __device__ void after() const {
      if (!is16<Tin>()) return;
      __syncthreads();
      b->store_rows(out, X);
    }
    __device__ void operator()(int r, int cc, float v0, float v1) const {
      if (is16<Tin>()) {
        const int ld = pad16(X) + 8;
        b->stage[r * ld + cc] = from_f<Tin>(v0);
        b->stage[r * ld + cc + 1] = from_f<Tin>(v1);
        return;
      }
      if (r >= b->n_rows || cc >= X) return;
      Tin* row = static_cast<Tin*>(out) + ((long long)b->bh * b->a.N + b->t0 + r) * X;
      if (X % 2 == 0) {
        *reinterpret_cast<float2*>(row + cc) = make_float2(v0, v1);
      } else {
        row[cc] = from_f<Tin>(v0);
        if (cc + 1 < X) row[cc + 1] = from_f<Tin>(v1);
      }
    }
  };

  template <class P1, class P2, class Epi>
  __device__ void dispatch(Dst d, Epi epi, float* rowsums) {
    switch (d) {
      case Dst::A:
        if constexpr (K == Kern::Out)
          run<P1, P2>(epi, PutSmem16{a16, L + 8}, rowsums);
        else
          run<P1, P2>(epi, PutSmem32{p32, L + 8}, rowsums);
        break;
      case Dst::P: run<P1, P2>(epi, PutSmem32{p32, L + 8}, rowsums); break;
      case Dst::S: run<P1, P2>(epi, PutGlobal32{rec, Mp}, rowsums); break;
      case Dst::R: run<P1, P2>(epi, PutGlobal32{rec + E / 2, Mp}, rowsums); break;
      case Dst::Out: run<P1, P2>(epi, PutRows{this, a.out_w, a.M}, rowsums); break;
      case Dst::Dq: run<P1, P2>(epi, PutRows{this, a.dq, a.D}, rowsums); break;
      case Dst::Dk: run<P1, P2>(epi, PutRows{this, a.dk, a.D}, rowsums); break;
      case Dst::Dv: run<P1, P2>(epi, PutRows{this, a.dv, a.M}, rowsums); break;
    }
  }

  // ---- the engine interface of the shared steps (causal_product_math.h) ----
  __device__ int len() const { return n_rows; }
  template <class Pr, class Epi>
  __device__ void mm(Dst d, Pr, Epi epi) {
    dispatch<Pr, void>(d, epi, nullptr);
  }
  template <class P1, class P2, class Epi>
  __device__ void mm2(Dst d, P1, P2, Epi epi) {
    dispatch<P1, P2>(d, epi, nullptr);
  }
  template <class Pr, class Epi>
  __device__ void mm_rowsum(Dst d, Pr, Epi epi, float* sums) {
    dispatch<Pr, void>(d, epi, sums);
  }
  template <class F>
  __device__ void rows(F f) {
    for (int i = threadIdx.x; i < L; i += kCudaThreads) f(i);
  }
  __device__ void sync() { __syncthreads(); }
  __device__ float* vec(Vec w) {
    switch (w) {
      case Vec::den: return rowv0;
      case Vec::gd: return rowv1;
      default: return featv;  // z_in or r_in
    }
  }
  __device__ float dot(Slot s, int i, const float* x) const {
    float acc = 0.f;
    for (int d = 0; d < Dp; ++d) acc += elem(s, i, d) * x[d];
    return acc;
  }
  // The chunk-local column sums, into the state record (z after S, r after R).
  __device__ void colsum(Vec w, Slot s, Vec weights = Vec::den) {
    float* out = w == Vec::z ? rec + (long long)Dp * Mp : rec + E / 2 + (long long)Dp * Mp;
    const float* wt = w == Vec::r ? vec(weights) : nullptr;
    for (int d = threadIdx.x; d < Dp; d += kCudaThreads) {
      float acc = 0.f;
      for (int i = 0; i < L; ++i) acc += elem(s, i, d) * (wt ? wt[i] : 1.f);
      out[d] = acc;
    }
  }
  __device__ float dphi(Slot s, int i, int d) const { return a.phi ? dphi_from_phi(elem(s, i, d)) : 1.f; }
  __device__ void store_den() {
    for (int i = threadIdx.x; i < n_rows; i += kCudaThreads) a.den[(long long)bh * a.N + t0 + i] = rowv0[i];
  }

  // ---- per-kernel setup ----
  // inv_i = 1 / (den_i + eps) into rowv0; gd_i into rowv1: from the workspace, or (state_bwd) computed
  // once per row from g . out, a warp per row, and written to the workspace.
  __device__ void load_grad_rows(bool compute_gd) {
    float* gd_all = a.work + (long long)a.B * a.H * nc * E + (long long)bh * a.N;
    for (int i = threadIdx.x; i < L; i += kCudaThreads) {
      rowv0[i] = i < n_rows ? inv_den(a.den[(long long)bh * a.N + t0 + i]) : 0.f;
      if (!compute_gd) rowv1[i] = i < n_rows ? gd_all[t0 + i] : 0.f;
    }
    if (!compute_gd) return;
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long gb = (bh / a.H) * a.gout.s.b + (bh % a.H) * a.gout.s.h;
    const long long ob = (bh / a.H) * a.out.s.b + (bh % a.H) * a.out.s.h;
    for (int i = warp; i < L; i += kWarps) {
      float dotv = 0.f;
      if (i < n_rows) {
        const Tin* grow = static_cast<const Tin*>(a.gout.p) + gb + (long long)(t0 + i) * a.gout.s.n;
        const Tin* orow = static_cast<const Tin*>(a.out.p) + ob + (long long)(t0 + i) * a.out.s.n;
        for (int m = lane; m < a.M; m += 32) dotv += to_f(grow[m * a.gout.s.x]) * to_f(orow[m * a.out.s.x]);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) dotv += __shfl_xor_sync(0xffffffffu, dotv, o);
      if (lane == 0) {
        const float gdv = i < n_rows ? grad_den(dotv, rowv0[i]) : 0.f;
        rowv1[i] = gdv;
        if (i < n_rows) gd_all[t0 + i] = gdv;
      }
    }
  }
  __device__ void load_feat(long long offset) {
    for (int d = threadIdx.x; d < Dp; d += kCudaThreads) featv[d] = rec[offset + d];
  }

  __device__ void run_kernel() {
    if constexpr (K == Kern::StateFwd) {
      load_tile(kf, a.k, a.D, Dp, a.phi);
      load_tile(v, a.v, a.M, Mp, false);
      __syncthreads();
      chunk_state_kv(*this);
    } else if constexpr (K == Kern::StateBwd) {
      load_tile(qf, a.q, a.D, Dp, a.phi);
      load_tile(kf, a.k, a.D, Dp, a.phi);
      load_tile(v, a.v, a.M, Mp, false);
      load_tile(g, a.gout, a.M, Mp, false);
      load_grad_rows(true);
      __syncthreads();
      chunk_state_kv(*this);
      chunk_state_qg(*this);
    } else if constexpr (K == Kern::Out) {
      load_tile(qf, a.q, a.D, Dp, a.phi);
      load_tile(kf, a.k, a.D, Dp, a.phi);
      load_tile(v, a.v, a.M, Mp, false);
      load_feat((long long)Dp * Mp);  // z_in
      __syncthreads();
      chunk_forward_output(*this);
    } else if constexpr (K == Kern::Dq) {
      if (a.phi) load_tile(qf, a.q, a.D, Dp, true);  // only for phi'(q)
      load_tile(kf, a.k, a.D, Dp, a.phi);
      load_tile(v, a.v, a.M, Mp, false);
      load_tile(g, a.gout, a.M, Mp, false);
      load_grad_rows(false);
      load_feat((long long)Dp * Mp);  // z_in
      __syncthreads();
      chunk_dq(*this);
    } else {
      load_tile(qf, a.q, a.D, Dp, a.phi);
      load_tile(kf, a.k, a.D, Dp, a.phi);
      load_tile(v, a.v, a.M, Mp, false);
      load_tile(g, a.gout, a.M, Mp, false);
      load_grad_rows(false);
      load_feat(E / 2 + (long long)Dp * Mp);  // r_in
      __syncthreads();
      chunk_dkdv(*this);
    }
  }
};

// The minimum blocks per SM tell ptxas its register budget (65536 / (128 * blocks)): 128 registers for
// the width-64 kernels, 256 for width 128. Without it ptxas spills a few bytes in some kernels at
// 72 registers. tools/check_cuda_compile.py checks the occupancy that results.
template <int W>
constexpr int kMinBlocks = W == 64 ? 4 : 2;

template <typename Tin, int W, Kern K>
__global__ void __launch_bounds__(kCudaThreads, kMinBlocks<W>) chunk_kernel(CudaArgs a) {
  CP_DYNAMIC_SMEM(smem);
  Block<Tin, W, K> b(a, smem);
  b.run_kernel();
}

// The inter-chunk combine: per (batch x head, record element), an exclusive scan over the chunks,
// forward for elements < pre (S, z), backward for the rest (R, r). Four loads in flight per thread.
__global__ void __launch_bounds__(kScanThreads) scan_kernel(float* work, int nc, long long E, long long pre,
                                                            int eblocks) {
  const long long bh = blockIdx.x / eblocks;
  const long long e = (long long)(blockIdx.x % eblocks) * kScanThreads + threadIdx.x;
  if (e >= E) return;
  float* base = work + bh * nc * E + e;
  const bool reverse = e >= pre;
  float carry = 0.f;
  int i = 0;
  for (; i + 4 <= nc; i += 4) {
    float x[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) x[j] = base[(long long)(reverse ? nc - 1 - (i + j) : i + j) * E];
#pragma unroll
    for (int j = 0; j < 4; ++j) base[(long long)(reverse ? nc - 1 - (i + j) : i + j) * E] = scan_step(carry, x[j]);
  }
  for (; i < nc; ++i) {
    float* p = base + (long long)(reverse ? nc - 1 - i : i) * E;
    *p = scan_step(carry, *p);
  }
}

template <typename Tin, int W, Kern K>
cudaError_t launch(const CudaArgs& a, cudaStream_t st) {
  constexpr int L = chunk_len<Tin, W>();
  const SmemPlan p = smem_plan(K, sizeof(Tin), L, pad16(a.D), pad16(a.M));
  auto kern = chunk_kernel<Tin, W, K>;
  cudaError_t err = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, p.bytes);
  if (err != cudaSuccess) return err;
  const long long blocks = (long long)a.B * a.H * ((a.N + L - 1) / L);
  CP_LAUNCH(kern, blocks, kCudaThreads, p.bytes, st, a);
  return cudaGetLastError();
}

cudaError_t launch_scan(const CudaArgs& a, bool backward, cudaStream_t st) {
  const long long E = state_record(a.D, a.M, backward);
  const int eblocks = static_cast<int>((E + kScanThreads - 1) / kScanThreads);
  const long long blocks = (long long)a.B * a.H * eblocks;
  CP_LAUNCH(scan_kernel, blocks, kScanThreads, 0, st, a.work, static_cast<int>(cuda_chunks(a)), E, backward ? E / 2 : E,
            eblocks);
  return cudaGetLastError();
}

template <typename Tin, int W>
cudaError_t forward_typed(const CudaArgs& a, cudaStream_t st) {
  cudaError_t e = launch<Tin, W, Kern::StateFwd>(a, st);
  if (e == cudaSuccess) e = launch_scan(a, false, st);
  if (e == cudaSuccess) e = launch<Tin, W, Kern::Out>(a, st);
  return e;
}

template <typename Tin, int W>
cudaError_t backward_typed(const CudaArgs& a, cudaStream_t st) {
  cudaError_t e = launch<Tin, W, Kern::StateBwd>(a, st);
  if (e == cudaSuccess) e = launch_scan(a, true, st);
  if (e == cudaSuccess) e = launch<Tin, W, Kern::Dq>(a, st);
  if (e == cudaSuccess) e = launch<Tin, W, Kern::Dkdv>(a, st);
  return e;
}

template <bool Bwd>
cudaError_t run_all(const CudaArgs& a, cudaStream_t st) {
  const bool wide = width_class(a.D, a.M) == 128;
  switch (a.dtype) {
    case DType::f32:
      if (Bwd) return wide ? backward_typed<float, 128>(a, st) : backward_typed<float, 64>(a, st);
      return wide ? forward_typed<float, 128>(a, st) : forward_typed<float, 64>(a, st);
    case DType::f16:
      if (Bwd) return wide ? backward_typed<__half, 128>(a, st) : backward_typed<__half, 64>(a, st);
      return wide ? forward_typed<__half, 128>(a, st) : forward_typed<__half, 64>(a, st);
    case DType::bf16:
      if (Bwd) return wide ? backward_typed<__nv_bfloat16, 128>(a, st) : backward_typed<__nv_bfloat16, 64>(a, st);
      return wide ? forward_typed<__nv_bfloat16, 128>(a, st) : forward_typed<__nv_bfloat16, 64>(a, st);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int causal_product_cuda_forward(const CudaArgs& a, void* stream) {
  if (a.N == 0 || a.B * a.H == 0) return 0;
  if (a.D < 1 || a.M < 1 || a.D > kCudaMaxHeadDim || a.M > kCudaMaxHeadDim) return cudaErrorInvalidValue;
  return static_cast<int>(run_all<false>(a, static_cast<cudaStream_t>(stream)));
}

int causal_product_cuda_backward(const CudaArgs& a, void* stream) {
  if (a.N == 0 || a.B * a.H == 0) return 0;
  if (a.D < 1 || a.M < 1 || a.D > kCudaMaxHeadDim || a.M > kCudaMaxHeadDim) return cudaErrorInvalidValue;
  return static_cast<int>(run_all<true>(a, static_cast<cudaStream_t>(stream)));
}

const char* causal_product_cuda_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace causal_product
