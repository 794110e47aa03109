// Host interface of the CUDA kernels: plain structs and functions, no torch, no CUDA headers, so the
// bindings (compiled by the host compiler), the .cu (nvcc) and tools/check_cuda_compile.py (which
// compiles a few lines against this header to print the shared-memory plan) share it cheaply.
//
// Sequence-parallel layout (docs/kernels.md): the sequence is cut into chunks of L tokens, one block
// of kCudaThreads threads per (batch x head, chunk):
//   forward:  state_fwd (S_c, z_c) -> scan (exclusive prefix) -> out (+ den)
//   backward: state_bwd (S_c, z_c, R_c, r_c, gd) -> scan (prefix S, z; suffix R, r) -> dq, dkdv
// The chunk-local states live in a float workspace of B*H*chunks records.
#pragma once

#include "causal_product_math.h"

namespace causal_product {

constexpr int kCudaThreads = 128;  // 4 warps per block
constexpr int kScanThreads = 128;

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

// A strided [B, H, N, X] tensor (X = D or M). vec: rows are contiguous and 16-byte aligned, so a
// block loads them with 16-byte vector loads.
struct Operand {
  const void* p;
  Strides4 s;
  bool vec;
};

struct CudaArgs {
  int B, H, N, D, M;
  DType dtype;
  bool phi;            // q, k are raw (phi = elu + 1 applied on load; dq, dk w.r.t. raw q, k)
  Operand q, k, v;     // inputs, any strides
  Operand out, gout;   // backward only: saved output and its gradient (gout may have stride 0)
  float* den;          // [B, H, N] contiguous normaliser (written by forward, read by backward)
  void* out_w;         // forward: contiguous [B, H, N, M] output
  void *dq, *dk, *dv;  // backward: contiguous [B, H, N, D|M] gradients
  float* work;         // workspace of cuda_workspace_floats() floats
};

inline int elem_bytes(DType t) { return t == DType::f32 ? 4 : 2; }
// The register tiles are sized for head dims up to W (64 or 128).
inline int width_class(int D, int M) { return pad16(D) > 64 || pad16(M) > 64 ? 128 : 64; }
// Tokens per chunk (per block): 64 for 16-bit inputs with D, M <= 64, else 32, so that every kernel
// fits two blocks per SM in an A100's shared memory (tools/check_cuda_compile.py checks it).
CP_HD constexpr int chunk_len_for(int elem_bytes, int width) { return elem_bytes == 2 && width == 64 ? 64 : 32; }
inline int cuda_chunk_len(DType t, int D, int M) { return chunk_len_for(elem_bytes(t), width_class(D, M)); }
inline long long cuda_chunks(const CudaArgs& a) {
  const int L = cuda_chunk_len(a.dtype, a.D, a.M);
  return (a.N + L - 1) / L;
}
// Floats of one chunk's state record: [S (Dp x Mp) | z (Dp)], twice in the backward ([R | r] after).
CP_HD long long state_record(int D, int M, bool backward) {
  const long long half = (long long)pad16(D) * pad16(M) + pad16(D);
  return backward ? 2 * half : half;
}
// Workspace: the state records, plus the backward's gd [B*H*N].
inline long long cuda_workspace_floats(const CudaArgs& a, bool backward) {
  const long long bh = (long long)a.B * a.H;
  return bh * cuda_chunks(a) * state_record(a.D, a.M, backward) + (backward ? bh * a.N : 0);
}

// Shared-memory plan of each kernel: byte offsets of its tiles (-1: unused). Tiles are row-major with
// a row padding of 8 elements (16-byte aligned rows for ldmatrix, conflict-free fragment loads).
enum class Kern : int { StateFwd = 0, StateBwd = 1, Out = 2, Dq = 3, Dkdv = 4 };
struct SmemPlan {
  int qf, kf, v, g;   // input tiles [L][Dp+8] / [L][Mp+8] in the input dtype
  int a16;            // forward: mask(Qf Kf^T) [L][L+8] in the input dtype
  int p32;            // backward: P, then A, [L][L+8] fp32
  int rowv0, rowv1;   // per-row fp32 vectors [L]: den / inv, gd
  int featv;          // per-feature fp32 vector [Dp]: z or r
  int stage;          // 16-bit output rows [L][X+8] on their way to global memory: its own region in
                      // dkdv (dk is stored while Qf is still needed), else over the tiles
  int bytes;
};
CP_HD constexpr int align16(int x) { return (x + 15) / 16 * 16; }
CP_HD SmemPlan smem_plan(Kern k, int eb, int L, int Dp, int Mp) {
  SmemPlan p{-1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0};
  int off = 0;
  auto take = [&](int bytes) {
    const int at = off;
    off = align16(off + bytes);
    return at;
  };
  const int tq = L * (Dp + 8) * eb, tv = L * (Mp + 8) * eb;
  const bool needs_q = k != Kern::StateFwd;
  const bool needs_g = k == Kern::StateBwd || k == Kern::Dq || k == Kern::Dkdv;
  if (needs_q) p.qf = take(tq);
  p.kf = take(tq);
  p.v = take(tv);
  if (needs_g) p.g = take(tv);
  if (k == Kern::Out) p.a16 = take(L * (L + 8) * eb);
  if (k == Kern::Dq || k == Kern::Dkdv) p.p32 = take(L * (L + 8) * 4);
  if (k != Kern::StateFwd) {
    p.rowv0 = take(L * 4);
    p.rowv1 = take(L * 4);
  }
  if (k == Kern::Out || k == Kern::Dq || k == Kern::Dkdv) p.featv = take(Dp * 4);
  if (k == Kern::Dkdv && eb == 2) p.stage = take(L * ((Dp > Mp ? Dp : Mp) + 8) * eb);
  p.bytes = off;
  return p;
}

// Each returns a cudaError_t as int (0 on success). `stream` is a cudaStream_t.
int causal_product_cuda_forward(const CudaArgs& a, void* stream);
int causal_product_cuda_backward(const CudaArgs& a, void* stream);
const char* causal_product_cuda_error_string(int err);

}  // namespace causal_product
