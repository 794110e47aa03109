// Python bindings of the causal-product kernels: checks, allocation, device dispatch.
// Built with -DATTNBENCH_WITH_CUDA together with causal_product_cuda.cu for the CUDA extension.
// Not torch/extension.h (all of libtorch's C++ API): ATen plus the pybind11 tensor casters.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <vector>

#ifdef ATTNBENCH_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "causal_product_cuda.h"
#endif

std::vector<at::Tensor> causal_product_cpu_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   bool phi);
std::vector<at::Tensor> causal_product_cpu_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& out, const at::Tensor& den,
                                                    const at::Tensor& gout, bool phi);

#ifdef ATTNBENCH_WITH_CUDA
namespace {
namespace cp = causal_product;

cp::Operand operand(const at::Tensor& t) {
  return cp::Operand{t.data_ptr(), cp::Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}};
}

cp::CudaArgs cuda_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "causal_product: q, k, v must be 4-D [B, H, N, D]");
  TORCH_CHECK(q.sizes() == k.sizes(), "causal_product: q and k must have one shape");
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              "causal_product: v must be [B, H, N, M] matching q");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "causal_product: q, k, v must share one dtype");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "causal_product: q, k, v must be on one device");
  cp::CudaArgs a{};
  a.B = q.size(0);
  a.H = q.size(1);
  a.N = q.size(2);
  a.D = q.size(3);
  a.M = v.size(3);
  TORCH_CHECK(a.D <= cp::kCudaMaxHeadDim && a.M <= cp::kCudaMaxHeadDim, "linear-causal-cuda supports head dims D, M <= ",
              cp::kCudaMaxHeadDim, " (the per-thread register state); got D=", a.D, ", M=", a.M);
  switch (q.scalar_type()) {
    case at::kFloat: a.dtype = cp::DType::f32; break;
    case at::kHalf: a.dtype = cp::DType::f16; break;
    case at::kBFloat16: a.dtype = cp::DType::bf16; break;
    default: TORCH_CHECK(false, "linear-causal-cuda supports float32, float16 and bfloat16, got ", q.scalar_type());
  }
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  return a;
}

void check_cuda(int err, const char* what) {
  TORCH_CHECK(err == 0, "causal_product ", what, " failed: ", cp::causal_product_cuda_error_string(err));
}
}  // namespace
#endif

std::vector<at::Tensor> causal_product_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!q.is_cuda()) return causal_product_cpu_forward(q, k, v, false);
#ifdef ATTNBENCH_WITH_CUDA
  auto a = cuda_args(q, k, v);
  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  auto den = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  a.out_w = out.data_ptr();
  a.den = den.data_ptr<float>();
  check_cuda(cp::causal_product_cuda_forward(a, c10::cuda::getCurrentCUDAStream().stream()), "forward");
  return {out, den};
#else
  TORCH_CHECK(false, "causal_product: this build has no CUDA kernels");
#endif
}

std::vector<at::Tensor> causal_product_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& out, const at::Tensor& den, const at::Tensor& gout) {
  if (!q.is_cuda()) return causal_product_cpu_backward(q, k, v, out, den, gout, false);
#ifdef ATTNBENCH_WITH_CUDA
  auto a = cuda_args(q, k, v);
  TORCH_CHECK(gout.sizes() == out.sizes() && gout.scalar_type() == out.scalar_type(),
              "causal_product: grad_out must match out's shape and dtype");
  TORCH_CHECK(den.is_contiguous() && den.scalar_type() == at::kFloat, "causal_product: den must be contiguous fp32");
  const c10::cuda::CUDAGuard guard(q.device());
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::empty(k.sizes(), k.options());
  auto dv = at::empty(v.sizes(), v.options());
  a.out = operand(out);
  a.gout = operand(gout);
  a.den = const_cast<float*>(den.data_ptr<float>());
  a.dq = dq.data_ptr();
  a.dk = dk.data_ptr();
  a.dv = dv.data_ptr();
  check_cuda(cp::causal_product_cuda_backward(a, c10::cuda::getCurrentCUDAStream().stream()), "backward");
  return {dq, dk, dv};
#else
  TORCH_CHECK(false, "causal_product: this build has no CUDA kernels");
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "attnbench causal linear attention kernels (normalised, elu+1 feature map)";
  m.def("forward", &causal_product_forward, "(q, k, v) -> (out [B,H,N,M], den [B,H,N])");
  m.def("backward", &causal_product_backward, "(q, k, v, out, den, grad_out) -> (dq, dk, dv)");
  // CPU only: raw q, k in, phi = elu + 1 applied inside the kernel, gradients w.r.t. raw q, k out.
  m.def(
      "forward_phi",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
        TORCH_CHECK(!q.is_cuda(), "causal_product: forward_phi is CPU only");
        return causal_product_cpu_forward(q, k, v, true);
      },
      "(raw q, raw k, v) -> (out [B,H,N,M], den [B,H,N]); phi applied in the kernel");
  m.def(
      "backward_phi",
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& den,
         const at::Tensor& gout) {
        TORCH_CHECK(!q.is_cuda(), "causal_product: backward_phi is CPU only");
        return causal_product_cpu_backward(q, k, v, out, den, gout, true);
      },
      "(raw q, raw k, v, out, den, grad_out) -> (dq, dk, dv) w.r.t. raw q, k");
#ifdef ATTNBENCH_WITH_CUDA
  m.attr("max_head_dim_cuda") = causal_product::kCudaMaxHeadDim;
#endif
}
