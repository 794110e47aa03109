// The matrix products of one chunk of the CPU causal-product kernel, and nothing else: a lower bound
// on that kernel's time on this CPU (tools/cpu_products_bound.py builds and runs it).
//
// Each product below is one call of the kernel's own gemm (kernels/causal_product/causal_product_cpu_simd.h)
// with the operands, leading dimensions and skip modes CpuEngine passes for the steps of
// causal_product_math.h: chunk_forward_output + chunk_state_kv (the forward), chunk_dq + chunk_state_kv
// with S kept transposed (the backward's prefix sweep), chunk_dkdv + chunk_state_qg (the suffix sweep).
// Left out on purpose, so that the bound stays below the kernel: reading the inputs, phi, the
// transposes, the epilogues, the normaliser, the output stores and the prefetches. The tiles stay
// in the core's caches, so no product waits on memory.
//
// Usage: cpu_products_bound D M C THREADS REPS
// Prints one JSON object: nanoseconds per chunk for each sweep (the slowest thread's best repetition;
// every thread runs the same products at once on its own tiles) and the multiply-adds per chunk.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "causal_product_cpu_simd.h"

using namespace causal_product::cpu;

namespace {

int pad16(int x) { return (x + 15) / 16 * 16; }

struct Tiles {
  int C, Dp, Mp, W;
  std::vector<float> qf, kf, kft, v, vt, g, a, p, acc, s, st, r, rt;
  Tiles(int C_, int D, int M) : C(C_), Dp(pad16(D)), Mp(pad16(M)), W(std::max(Dp, Mp)) {
    auto fill = [](int n, float x) { return std::vector<float>(n, x); };
    qf = fill(C * Dp, 0.01f), kf = fill(C * Dp, 0.02f), kft = fill(Dp * C, 0.02f);
    v = fill(C * Mp, 0.03f), vt = fill(Mp * C, 0.03f), g = fill(C * Mp, 0.01f);
    a = fill(C * C, 0.f), p = fill(C * C, 0.f), acc = fill(C * W, 0.f);
    s = fill(Dp * Mp, 0.f), st = fill(Mp * Dp, 0.f), r = fill(Dp * Mp, 0.f), rt = fill(Mp * Dp, 0.f);
  }
};

const auto nop = [] {};

// chunk_forward_output, then chunk_state_kv.
void forward(Tiles& t) {
  const int C = t.C, Dp = t.Dp, Mp = t.Mp;
  gemm(t.qf.data(), Dp, 1, t.kft.data(), C, t.a.data(), C, C, C, Dp, Skip::LowerOut, true, nop);  // A = Qf Kf^T
  gemm(t.a.data(), C, 1, t.v.data(), Mp, t.acc.data(), t.W, C, Mp, C, Skip::LowerA, true, nop);   // A V
  gemm(t.qf.data(), Dp, 1, t.s.data(), Mp, t.acc.data(), t.W, C, Mp, Dp, Skip::None, false, nop); //  + Qf S
  gemm(t.kf.data(), 1, Dp, t.v.data(), Mp, t.s.data(), Mp, Dp, Mp, C, Skip::None, false, nop);    // S += Kf^T V
}

// chunk_dq, then chunk_state_kv into S^T.
void prefix(Tiles& t) {
  const int C = t.C, Dp = t.Dp, Mp = t.Mp;
  gemm(t.g.data(), Mp, 1, t.vt.data(), C, t.p.data(), C, C, C, Mp, Skip::LowerOut, true, nop);     // P = G V^T
  gemm(t.p.data(), C, 1, t.kf.data(), Dp, t.acc.data(), t.W, C, Dp, C, Skip::LowerA, true, nop);   // P Kf
  gemm(t.g.data(), Mp, 1, t.st.data(), Dp, t.acc.data(), t.W, C, Dp, Mp, Skip::None, false, nop);  //  + G S^T
  gemm(t.v.data(), 1, Mp, t.kf.data(), Dp, t.st.data(), Dp, Mp, Dp, C, Skip::None, false, nop);    // S^T += V^T Kf
}

// chunk_dkdv, then chunk_state_qg.
void suffix(Tiles& t) {
  const int C = t.C, Dp = t.Dp, Mp = t.Mp;
  gemm(t.g.data(), Mp, 1, t.vt.data(), C, t.p.data(), C, C, C, Mp, Skip::LowerOut, true, nop);     // P = G V^T
  gemm(t.p.data(), 1, C, t.qf.data(), Dp, t.acc.data(), t.W, C, Dp, C, Skip::UpperA, true, nop);   // P^T Qf
  gemm(t.v.data(), Mp, 1, t.rt.data(), Dp, t.acc.data(), t.W, C, Dp, Mp, Skip::None, false, nop);  //  + V R^T
  gemm(t.qf.data(), Dp, 1, t.kft.data(), C, t.a.data(), C, C, C, Dp, Skip::LowerOut, true, nop);   // A = Qf Kf^T
  gemm(t.a.data(), 1, C, t.g.data(), Mp, t.acc.data(), t.W, C, Mp, C, Skip::UpperA, true, nop);    // A^T G
  gemm(t.kf.data(), Dp, 1, t.r.data(), Mp, t.acc.data(), t.W, C, Mp, Dp, Skip::None, false, nop);  //  + Kf R
  gemm(t.qf.data(), 1, Dp, t.g.data(), Mp, t.r.data(), Mp, Dp, Mp, C, Skip::None, false, nop);     // R += Qf^T G
}

// Best seconds per call of f over `reps` repetitions, on `threads` threads at once; the slowest thread's.
template <class F>
double time_sweep(F f, int C, int D, int M, int threads, int reps) {
  std::vector<double> best(threads, 1e30);
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      Tiles t(C, D, M);
      for (int w = 0; w < 2000; ++w) f(t);  // warm-up: caches, clock
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      const int calls = 4000;
      for (int rep = 0; rep < reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int c = 0; c < calls; ++c) f(t);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
        best[i] = std::min(best[i], s);
      }
      asm volatile("" ::"r"(t.s.data()), "r"(t.acc.data()), "r"(t.r.data()), "r"(t.st.data()) : "memory");
    });
  for (auto& th : pool) th.join();
  return *std::max_element(best.begin(), best.end());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: cpu_products_bound D M C THREADS REPS\n");
    return 2;
  }
  const int D = std::atoi(argv[1]), M = std::atoi(argv[2]), C = std::atoi(argv[3]);
  const int threads = std::atoi(argv[4]), reps = std::atoi(argv[5]);
  if (D < 1 || M < 1 || C < 16 || C % 16 != 0 || threads < 1 || reps < 1) {
    std::fprintf(stderr, "cpu_products_bound: need D, M >= 1, C a multiple of 16, THREADS, REPS >= 1\n");
    return 2;
  }
  const double fwd = time_sweep(forward, C, D, M, threads, reps);
  const double pre = time_sweep(prefix, C, D, M, threads, reps);
  const double suf = time_sweep(suffix, C, D, M, threads, reps);
  // Multiply-adds per chunk of the decomposition (triangles at half), for the real-work rate.
  const double dm = (double)D * M, cc = (double)C * C;
  const double macs_fwd = C * 2 * dm + cc * D + cc * M / 2;
  const double macs_pre = C * 2 * dm + cc * M + cc * D / 2;
  const double macs_suf = C * 3 * dm + cc * M + cc * D + cc * D / 2 + cc * M / 2;
  std::printf(
      "{\"ns_forward\": %.1f, \"ns_prefix\": %.1f, \"ns_suffix\": %.1f, \"macs_forward\": %.0f, "
      "\"macs_prefix\": %.0f, \"macs_suffix\": %.0f}\n",
      fwd * 1e9, pre * 1e9, suf * 1e9, macs_fwd, macs_pre, macs_suf);
  return 0;
}
