// Driver of the CPU emulation of the CUDA kernel (cuda_emu.h): runs causal_product_cuda_forward and
// _backward on float32 inputs from a file and writes the results, for tests/test_cuda_compile.py.
//
//   c++ -std=c++20 -O1 -pthread -DCP_CUDA_EMULATE -x c++ causal_product_cuda.cu -x none cuda_emu_main.cpp
//   ./a.out in.bin out.bin
// in.bin:  int32 B, H, N, D, M, dtype (0 fp32, 1 fp16, 2 bf16), phi; float32 q, k [B,H,N,D], v, g [B,H,N,M]
// out.bin: float32 out [B,H,N,M], den [B,H,N], dq, dk [B,H,N,D], dv [B,H,N,M]
#include <cstdint>
#include <cstdio>
#include <vector>

#include "causal_product_cuda.h"
#include "cuda_emu.h"

namespace cp = causal_product;

namespace {
// Tensor storage in the kernel's dtype: fp32 as is, fp16 / bf16 as 16-bit words.
struct Store {
  cp::DType t;
  std::vector<float> f;
  std::vector<uint16_t> h;
  Store(cp::DType t_, const std::vector<float>& x) : t(t_) {
    if (t == cp::DType::f32) f = x;
    else
      for (float v : x) h.push_back(t == cp::DType::f16 ? emu::f_to_half(v) : emu::f_to_bf16(v));
  }
  Store(cp::DType t_, size_t n) : t(t_) {
    if (t == cp::DType::f32) f.assign(n, 0.f);
    else h.assign(n, 0);
  }
  void* data() { return t == cp::DType::f32 ? static_cast<void*>(f.data()) : static_cast<void*>(h.data()); }
  std::vector<float> floats() const {
    if (t == cp::DType::f32) return f;
    std::vector<float> out;
    for (uint16_t v : h) out.push_back(t == cp::DType::f16 ? emu::half_to_f(v) : emu::bf16_to_f(v));
    return out;
  }
};

cp::Operand operand(Store& s, long long B, long long H, long long N, long long X) {
  const int eb = s.t == cp::DType::f32 ? 4 : 2;
  const bool vec = reinterpret_cast<uintptr_t>(s.data()) % 16 == 0 && (X * eb) % 16 == 0;
  (void)B;
  return cp::Operand{s.data(), cp::Strides4{H * N * X, N * X, X, 1}, vec};
}

std::vector<float> read_floats(FILE* f, size_t n) {
  std::vector<float> v(n);
  if (std::fread(v.data(), sizeof(float), n, f) != n) std::perror("read");
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s in.bin out.bin\n", argv[0]);
    return 2;
  }
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 2;
  int32_t hdr[7];
  if (std::fread(hdr, sizeof(int32_t), 7, in) != 7) return 2;
  const int B = hdr[0], H = hdr[1], N = hdr[2], D = hdr[3], M = hdr[4];
  const auto dt = static_cast<cp::DType>(hdr[5]);
  const size_t nq = (size_t)B * H * N * D, nv = (size_t)B * H * N * M;
  Store q(dt, read_floats(in, nq)), k(dt, read_floats(in, nq)), v(dt, read_floats(in, nv)), g(dt, read_floats(in, nv));
  std::fclose(in);

  cp::CudaArgs a{};
  a.B = B, a.H = H, a.N = N, a.D = D, a.M = M, a.dtype = dt, a.phi = hdr[6] != 0;
  a.q = operand(q, B, H, N, D);
  a.k = operand(k, B, H, N, D);
  a.v = operand(v, B, H, N, M);
  Store out(dt, nv), dq(dt, nq), dk(dt, nq), dv(dt, nv);
  std::vector<float> den((size_t)B * H * N), work(cp::cuda_workspace_floats(a, true));
  a.out_w = out.data();
  a.den = den.data();
  a.work = work.data();
  int rc = cp::causal_product_cuda_forward(a, nullptr);
  if (rc != 0) {
    std::fprintf(stderr, "forward: %s\n", cp::causal_product_cuda_error_string(rc));
    return 1;
  }
  a.out = operand(out, B, H, N, M);
  a.gout = operand(g, B, H, N, M);
  a.dq = dq.data();
  a.dk = dk.data();
  a.dv = dv.data();
  rc = cp::causal_product_cuda_backward(a, nullptr);
  if (rc != 0) {
    std::fprintf(stderr, "backward: %s\n", cp::causal_product_cuda_error_string(rc));
    return 1;
  }
  FILE* o = std::fopen(argv[2], "wb");
  if (!o) return 2;
  for (const auto& x : {out.floats(), den, dq.floats(), dk.floats(), dv.floats()}) std::fwrite(x.data(), sizeof(float), x.size(), o);
  std::fclose(o);
  return 0;
}
