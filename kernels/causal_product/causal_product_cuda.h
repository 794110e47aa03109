// Host interface of the CUDA kernels: plain structs and functions, no torch, no CUDA headers,
// so the bindings (compiled by the host compiler) and the .cu (by nvcc) share it cheaply.
#pragma once

#include "causal_product_math.h"

namespace causal_product {

// D and M are each held as a per-thread register state of at most this many elements.
constexpr int kCudaMaxHeadDim = 128;

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

// A strided [B, H, N, X] tensor (X = D or M) or, for den, [B, H, N] with x unused.
struct Operand {
  const void* p;
  Strides4 s;
};

struct CudaArgs {
  int B, H, N, D, M;
  DType dtype;
  Operand q, k, v;    // inputs, any strides
  Operand out, gout;  // backward only: saved output and its gradient (gout may have stride 0)
  float* den;         // [B, H, N] contiguous fp32 normaliser (written by forward, read by backward)
  void* out_w;        // forward: contiguous [B, H, N, M] output
  void *dq, *dk, *dv; // backward: contiguous [B, H, N, D|M] gradients
};

// Each returns a cudaError_t as int (0 on success). `stream` is a cudaStream_t.
int causal_product_cuda_forward(const CudaArgs& a, void* stream);
int causal_product_cuda_backward(const CudaArgs& a, void* stream);
const char* causal_product_cuda_error_string(int err);

}  // namespace causal_product
