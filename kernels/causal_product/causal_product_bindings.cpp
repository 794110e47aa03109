// Python bindings of the causal-product kernels: checks, allocation, device dispatch.
// Built with -DATTNBENCH_WITH_CUDA together with causal_product_cuda.cu for the CUDA extension.
// Not torch/extension.h (all of libtorch's C++ API): ATen plus the pybind11 tensor casters.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <string>
#include <vector>

#include "causal_product_math.h"

#ifdef ATTNBENCH_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "causal_product_cuda.h"
#endif

std::vector<at::Tensor> causal_product_cpu_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   bool phi, int segments);
std::vector<at::Tensor> causal_product_cpu_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& out, const at::Tensor& den,
                                                    const at::Tensor& gout, bool phi, int segments);
int causal_product_cpu_chunk();

namespace {
namespace cp = causal_product;

// None, or why the kernels cannot take this shape (max_head_dim <= 0: no head-dim limit).
pybind11::object shape_error(long long B, long long H, long long N, long long D, long long M, int max_head_dim) {
  char buf[256];
  const char* err = cp::shape_error(B, H, N, D, M, max_head_dim, buf, sizeof(buf));
  if (err == nullptr) return pybind11::none();
  return pybind11::str(std::string(err));
}

#ifdef ATTNBENCH_WITH_CUDA
cp::Operand operand(const at::Tensor& t) {
  const int eb = static_cast<int>(t.element_size());
  const auto ptr = reinterpret_cast<uintptr_t>(t.data_ptr());
  // 16-byte vector loads need unit-stride rows whose every start is 16-byte aligned.
  const bool vec = t.stride(3) == 1 && ptr % 16 == 0 && (t.size(3) * eb) % 16 == 0 && (t.stride(2) * eb) % 16 == 0 &&
                   (t.stride(1) * eb) % 16 == 0 && (t.stride(0) * eb) % 16 == 0;
  return cp::Operand{t.data_ptr(), cp::Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}, vec};
}

cp::CudaArgs cuda_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool phi) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "causal_product: q, k, v must be 4-D [B, H, N, D]");
  TORCH_CHECK(q.sizes() == k.sizes(), "causal_product: q and k must have one shape");
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              "causal_product: v must be [B, H, N, M] matching q");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "causal_product: q, k, v must share one dtype");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "causal_product: q, k, v must be on one device");
  char buf[256];
  const char* err =
      cp::shape_error(q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), cp::kCudaMaxHeadDim, buf, sizeof(buf));
  TORCH_CHECK(err == nullptr, err);
  cp::CudaArgs a{};
  a.B = q.size(0);
  a.H = q.size(1);
  a.N = q.size(2);
  a.D = q.size(3);
  a.M = v.size(3);
  a.phi = phi;
  switch (q.scalar_type()) {
    case at::kFloat: a.dtype = cp::DType::f32; break;
    case at::kHalf: a.dtype = cp::DType::f16; break;
    case at::kBFloat16: a.dtype = cp::DType::bf16; break;
    default: TORCH_CHECK(false, "linear-causal-cuda supports float32, float16 and bfloat16, got ", q.scalar_type());
  }
  TORCH_CHECK((long long)a.B * a.H * cp::cuda_chunks(a) < 0x7fffffffLL,
              "causal_product: B*H*chunks must be < 2^31 (the grid); got B*H=", (long long)a.B * a.H,
              ", chunks=", cp::cuda_chunks(a));
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  return a;
}

void check_cuda(int err, const char* what) {
  TORCH_CHECK(err == 0, "causal_product ", what, " failed: ", cp::causal_product_cuda_error_string(err));
}

at::Tensor workspace(const cp::CudaArgs& a, const at::Tensor& like, bool backward) {
  return at::empty({cp::cuda_workspace_floats(a, backward)}, like.options().dtype(at::kFloat));
}
#endif
}  // namespace

std::vector<at::Tensor> causal_product_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool phi,
                                               int segments) {
  if (!q.is_cuda()) return causal_product_cpu_forward(q, k, v, phi, segments);
#ifdef ATTNBENCH_WITH_CUDA
  auto a = cuda_args(q, k, v, phi);
  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  auto den = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, den};
  auto work = workspace(a, q, false);
  a.out_w = out.data_ptr();
  a.den = den.data_ptr<float>();
  a.work = work.data_ptr<float>();
  check_cuda(cp::causal_product_cuda_forward(a, c10::cuda::getCurrentCUDAStream().stream()), "forward");
  return {out, den};
#else
  TORCH_CHECK(false, "causal_product: this build has no CUDA kernels");
#endif
}

std::vector<at::Tensor> causal_product_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& out, const at::Tensor& den, const at::Tensor& gout,
                                                bool phi, int segments) {
  if (!q.is_cuda()) return causal_product_cpu_backward(q, k, v, out, den, gout, phi, segments);
#ifdef ATTNBENCH_WITH_CUDA
  auto a = cuda_args(q, k, v, phi);
  TORCH_CHECK(gout.sizes() == out.sizes() && gout.scalar_type() == out.scalar_type(),
              "causal_product: grad_out must match out's shape and dtype");
  TORCH_CHECK(den.is_contiguous() && den.scalar_type() == at::kFloat, "causal_product: den must be contiguous fp32");
  const c10::cuda::CUDAGuard guard(q.device());
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::empty(k.sizes(), k.options());
  auto dv = at::empty(v.sizes(), v.options());
  if (out.numel() == 0) return {dq, dk, dv};
  auto work = workspace(a, q, true);
  a.out = operand(out);
  a.gout = operand(gout);
  a.den = const_cast<float*>(den.data_ptr<float>());
  a.dq = dq.data_ptr();
  a.dk = dk.data_ptr();
  a.dv = dv.data_ptr();
  a.work = work.data_ptr<float>();
  check_cuda(cp::causal_product_cuda_backward(a, c10::cuda::getCurrentCUDAStream().stream()), "backward");
  return {dq, dk, dv};
#else
  TORCH_CHECK(false, "causal_product: this build has no CUDA kernels");
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  m.doc() = "attnbench causal linear attention kernels (normalised, elu+1 feature map)";
  m.def("forward", &causal_product_forward, arg("q"), arg("k"), arg("v"), arg("phi") = true, arg("segments") = 0,
        "(q, k, v) -> (out [B,H,N,M], den [B,H,N]). phi: q, k are raw and phi = elu + 1 is applied in the "
        "kernel (else they are the features). segments (CPU): pieces each sequence is split into, 0 = auto.");
  m.def("backward", &causal_product_backward, arg("q"), arg("k"), arg("v"), arg("out"), arg("den"), arg("grad_out"),
        arg("phi") = true, arg("segments") = 0,
        "(q, k, v, out, den, grad_out) -> (dq, dk, dv), w.r.t. raw q, k when phi");
  m.def("shape_error", &shape_error, arg("B"), arg("H"), arg("N"), arg("D"), arg("M"), arg("max_head_dim"),
        "None, or why the kernels cannot take this shape (the message the kernel would raise)");
  m.attr("max_head_dim_cuda") = causal_product::kCudaMaxHeadDim;
  m.attr("cpu_chunk") = causal_product_cpu_chunk();
#ifdef ATTNBENCH_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
