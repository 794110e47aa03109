// A CPU emulation of the CUDA features causal_product_cuda.cu uses, so that the kernel's own code
// (index arithmetic, tile layouts, masks, synchronisation, scans) runs and is checked numerically on a
// machine without a GPU: `c++ -x c++ -DCP_CUDA_EMULATE causal_product_cuda.cu cuda_emu_main.cpp`
// (tests/test_cuda_compile.py). Not used by any real build.
//
// A block is kCudaThreads std::threads sharing a barrier; blocks run one after another. The warp
// collectives (ldmatrix, mma.sync, shuffles) exchange registers through a per-warp buffer between two
// warp barriers and rebuild the operand matrices from the fragment layouts of the PTX ISA manual
// ("Matrix fragments for mma.m16n8k16 / mma.m16n8k8", "ldmatrix"), written here independently of
// the kernel's own loaders. fp16 / bf16 are stored as bits with round-to-nearest-even conversions;
// TF32 is rounded to nearest, ties away (cvt.rna). Accumulation is fp32 in k order (the hardware's
// order is unspecified: results may differ in the last bits, never more).
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
inline const char* cudaGetErrorString(cudaError_t e) { return e == 0 ? "no error" : "invalid value (emulated)"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
template <class F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
using std::min;

namespace emu {
inline float bits_f(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t f_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline float half_to_f(uint16_t h) {
  const uint32_t s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
  float v;
  if (e == 0) v = std::ldexp((float)m, -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp((float)(m | 1024), (int)e - 25);
  return s ? -v : v;
}
inline uint16_t f_to_half(float f) {  // round to nearest even
  const uint32_t b = f_bits(f), s = (b >> 16) & 0x8000;
  const float a = std::fabs(f);
  if (std::isnan(f)) return 0x7e00;
  if (a >= 65520.f) return s | 0x7c00;
  if (a < std::ldexp(1.f, -14)) return s | (uint16_t)std::nearbyint(a * std::ldexp(1.f, 24));  // subnormal
  int e;
  const float m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  uint32_t q = (uint32_t)std::nearbyint(std::ldexp(m, 11));  // 11 significant bits
  if (q == 2048) q = 1024, ++e;
  return s | (uint16_t)(((e + 14) << 10) | (q & 1023));
}
inline float bf16_to_f(uint16_t h) { return bits_f((uint32_t)h << 16); }
inline uint16_t f_to_bf16(float f) {
  const uint32_t b = f_bits(f);
  if (std::isnan(f)) return 0x7fc0;
  return (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}
}  // namespace emu

struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};
inline float __half2float(__half h) { return emu::half_to_f(h.x); }
inline __half __float2half_rn(float f) { return {emu::f_to_half(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return emu::bf16_to_f(h.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {emu::f_to_bf16(f)}; }
inline float __expf(float x) { return std::exp(x); }
inline float __uint_as_float(unsigned u) { return emu::bits_f(u); }

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

namespace emu {
constexpr int kWarp = 32;

struct Warp {
  std::barrier<> bar{kWarp};
  uint32_t regs[kWarp][6];
  const void* addr[kWarp];
  float val[kWarp];
};

struct Block {
  explicit Block(int threads, size_t smem) : bar(threads), shared(smem + 16), warps(threads / kWarp) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::barrier<> bar;
  std::vector<unsigned char> shared;
  std::vector<std::unique_ptr<Warp>> warps;
  std::mutex atomics;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local Dim3 tl_thread, tl_blockidx;
inline Warp& warp() { return *tl_block->warps[tl_thread.x / kWarp]; }
inline int lane() { return tl_thread.x % kWarp; }

template <class F>
void launch(F kern, unsigned blocks, int threads, size_t smem) {
  for (unsigned b = 0; b < blocks; ++b) {
    Block blk(threads, smem);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        tl_block = &blk;
        tl_thread.x = t;
        tl_blockidx.x = b;
        kern();
      });
    for (auto& t : ts) t.join();
  }
}

// Element (r, c) of an 8 x 8 matrix of 16-bit values whose row r starts at rows[r].
inline uint16_t at16(const void* const* rows, int r, int c) {
  uint16_t v;
  std::memcpy(&v, static_cast<const unsigned char*>(rows[r]) + 2 * c, 2);
  return v;
}
inline uint32_t pack(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }

// ldmatrix .m8n8 .x{n} [.trans]: lanes 8j..8j+7 give the row addresses of matrix j. Thread l gets, of
// matrix j, elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1); with .trans the transposed matrix's.
inline void ldmatrix(uint32_t* out, int n, const void* p, bool trans) {
  Warp& w = warp();
  const int l = lane();
  w.addr[l] = p;
  w.bar.arrive_and_wait();
  for (int j = 0; j < n; ++j) {
    const void* const* rows = &w.addr[8 * j];
    const int r = l / 4, c = 2 * (l % 4);
    out[j] = trans ? pack(at16(rows, c, r), at16(rows, c + 1, r)) : pack(at16(rows, r, c), at16(rows, r, c + 1));
  }
  w.bar.arrive_and_wait();
}

inline float lo16(uint32_t r, bool bf) { return bf ? bf16_to_f(r & 0xffff) : half_to_f(r & 0xffff); }
inline float hi16(uint32_t r, bool bf) { return bf ? bf16_to_f(r >> 16) : half_to_f(r >> 16); }

// mma.m16n8k16 (bf: bf16, else f16) with fp32 accumulation. A (16 x 16, row): thread (g, t) holds
// regs {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}; B (16 x 8, col): {(2t.., g), (2t+8.., g)};
// C: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
inline void mma16(float* c, const uint32_t* a, const uint32_t* b, bool bf) {
  Warp& w = warp();
  const int l = lane();
  for (int i = 0; i < 4; ++i) w.regs[l][i] = a[i];
  w.regs[l][4] = b[0];
  w.regs[l][5] = b[1];
  w.bar.arrive_and_wait();
  auto A = [&](int r, int k) {
    const uint32_t reg = w.regs[(r % 8) * 4 + (k % 8) / 2][(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
    return k % 2 ? hi16(reg, bf) : lo16(reg, bf);
  };
  auto B = [&](int k, int n) {
    const uint32_t reg = w.regs[n * 4 + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)];
    return k % 2 ? hi16(reg, bf) : lo16(reg, bf);
  };
  const int g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e / 2), n = 2 * t + e % 2;
    float s = c[e];
    for (int k = 0; k < 16; ++k) s += A(r, k) * B(k, n);
    c[e] = s;
  }
  w.bar.arrive_and_wait();
}

// mma.m16n8k8 .tf32: A (16 x 8): {(g, t), (g+8, t), (g, t+4), (g+8, t+4)}; B (8 x 8): {(t, g), (t+4, g)}.
inline void mma_tf32(float* c, const uint32_t* a, const uint32_t* b) {
  Warp& w = warp();
  const int l = lane();
  for (int i = 0; i < 4; ++i) w.regs[l][i] = a[i];
  w.regs[l][4] = b[0];
  w.regs[l][5] = b[1];
  w.bar.arrive_and_wait();
  auto A = [&](int r, int k) { return bits_f(w.regs[(r % 8) * 4 + k % 4][(r >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]); };
  auto B = [&](int k, int n) { return bits_f(w.regs[n * 4 + k % 4][4 + (k >= 4 ? 1 : 0)]); };
  const int g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int r = g + 8 * (e / 2), n = 2 * t + e % 2;
    float s = c[e];
    for (int k = 0; k < 8; ++k) s += A(r, k) * B(k, n);
    c[e] = s;
  }
  w.bar.arrive_and_wait();
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero.
inline uint32_t to_tf32(float x) {
  if (!std::isfinite(x)) return f_bits(x);
  return (f_bits(x) + 0x1000u) & 0xffffe000u;
}

inline float shfl_xor(float v, int mask) {
  Warp& w = warp();
  const int l = lane();
  w.val[l] = v;
  w.bar.arrive_and_wait();
  const float r = w.val[l ^ mask];
  w.bar.arrive_and_wait();
  return r;
}
}  // namespace emu

#define threadIdx (emu::tl_thread)
#define blockIdx (emu::tl_blockidx)
inline void __syncthreads() { emu::tl_block->bar.arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int mask) { return emu::shfl_xor(v, mask); }
inline float atomicAdd(float* p, float v) {
  std::lock_guard<std::mutex> lk(emu::tl_block->atomics);
  const float old = *p;
  *p = old + v;
  return old;
}
#define CP_DYNAMIC_SMEM(name) unsigned char* name = emu::tl_block->shared.data()
#define CP_LAUNCH(kern, blocks, threads, smem, stream, ...) \
  emu::launch([&] { kern(__VA_ARGS__); }, static_cast<unsigned>(blocks), threads, smem)
