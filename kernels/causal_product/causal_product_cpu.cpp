// CPU kernel of normalised causal linear attention, forward and linear-memory backward.
//
// It runs the chunked decomposition of causal_product_math.h: per chunk of kChunk tokens it calls
// the shared steps (chunk_forward_output, chunk_state_kv, chunk_dq, chunk_dkdv, chunk_state_qg)
// with a CpuEngine that holds the chunk's tiles in zero-padded scratch and does their products with
// the SIMD micro-kernel of causal_product_cpu_simd.h. The inter-chunk combine is a running state:
// the engine adds each chunk-local state to it. When there are fewer sequences (batch x heads) than
// threads, each sequence is also split into segments of chunks, as the CUDA kernel splits it into
// blocks: segment-local states in parallel, an exclusive scan over them (scan_step), then each
// segment's chunks from its incoming state.
//
// Memory: inputs and outputs, O(N) per (batch, head) for gd (the backward's dL/dden, saved by the
// prefix sweep so the suffix sweep need not read `out` again), O(kChunk (D + M) + D M) scratch per
// thread, O(D M) per segment: never O(N D M).
//
// phi: q and k are raw and phi = elu + 1 is applied on load (vectorised exp); dq and dk are then
// gradients w.r.t. raw q and k. Without phi the kernel takes and returns features.
// Narrow ATen includes (not ATen/ATen.h) keep the one-time build short.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "causal_product_cpu_simd.h"
#include "causal_product_math.h"

namespace cp = causal_product;
using cp::Dst;
using cp::Slot;
using cp::Tri;
using cp::Vec;
using namespace cp::cpu;

namespace {

#ifndef CP_CHUNK
#define CP_CHUNK 16
#endif
constexpr int kChunk = CP_CHUNK;  // tokens per chunk (a multiple of the vector width)
constexpr int kPad = 16;          // D and M are padded to a multiple of this in scratch
constexpr int kAhead = 2;         // chunks prefetched ahead of the one being computed
static_assert(kChunk % 16 == 0, "the chunk is transposed in blocks of the vector width (16 floats)");

inline int pad_to(int x, int p) { return (x + p - 1) / p * p; }

// A strided [N, X] view of one (batch, head) of a [B, H, N, X] tensor.
template <typename S>
struct View {
  S* p = nullptr;
  long long sn = 0, sx = 0;
  S* row(long long n) const { return p + n * sn; }
};

template <typename S>
View<S> view_of(const at::Tensor& t, long long b, long long h) {
  S* base = static_cast<S*>(t.data_ptr()) + b * t.stride(0) + h * t.stride(1);
  return View<S>{base, t.stride(2), t.stride(3)};
}

inline Skip skip_of(Tri t) {
  switch (t) {
    case Tri::Lower: return Skip::LowerOut;
    case Tri::LowerA: return Skip::LowerA;
    case Tri::UpperA: return Skip::UpperA;
    default: return Skip::None;
  }
}

// The per-thread engine of the shared steps (see causal_product_math.h for the interface).
// Acc: accumulation type (double for fp64 inputs, else float); S: storage type of the tensors.
template <typename Acc, typename S>
struct CpuEngine {
  using T = Acc;
  int D, M, Dp, Mp, W;  // W = max(Dp, Mp): leading dim of the output scratch
  bool phi;
  int t0 = 0, L = 0;  // this chunk: tokens [t0, t0 + L)
  // Chunk tiles (row-major, zero-padded to kChunk rows and Dp / Mp columns) and their transposes.
  std::vector<T> qf, kf, kft, v, vt, g, a, p, acc, den, gd;
  // Running states (the combine): S [Dp][Mp] or, in the backward prefix sweep, S^T [Mp][Dp]; R [Dp][Mp]
  // with its transpose rt; z, r [Dp]. They point into own_ or into a segment's slot of a shared buffer.
  T *s = nullptr, *z = nullptr, *r = nullptr, *rv = nullptr;
  std::vector<T> own_, rt;
  bool s_transposed = false;
  // Where this chunk's outputs go: contiguous rows (fresh tensors), row stride in elements.
  S *out_p = nullptr, *dq_p = nullptr, *dk_p = nullptr, *dv_p = nullptr;
  T* den_out = nullptr;  // contiguous [N] of this (batch, head)
  PrefetchQueue pf;      // rows of a later chunk, prefetched between micro-kernel calls

  CpuEngine(int D_, int M_, bool phi_)
      : D(D_), M(M_), Dp(pad_to(D_, kPad)), Mp(pad_to(M_, kPad)), W(std::max(Dp, Mp)), phi(phi_) {
    qf.assign(kChunk * Dp, T(0));
    kf.assign(kChunk * Dp, T(0));
    kft.assign(Dp * kChunk, T(0));
    v.assign(kChunk * Mp, T(0));
    vt.assign(Mp * kChunk, T(0));
    g.assign(kChunk * Mp, T(0));
    a.assign(kChunk * kChunk, T(0));
    p.assign(kChunk * kChunk, T(0));
    acc.assign(kChunk * W, T(0));
    den.assign(kChunk, T(0));
    gd.assign(kChunk, T(0));
    rt.assign(Mp * Dp, T(0));
  }
  static long state_size(int Dp, int Mp) { return (long)Dp * Mp + Dp; }
  long state_size() const { return state_size(Dp, Mp); }
  // Binds the running S and z (or R and r) to buf[state_size()]; own storage when buf is null.
  void bind_s(T* buf, bool transposed) {
    if (!buf) {
      own_.assign(state_size(), T(0));
      buf = own_.data();
    }
    s = buf;
    z = buf + (long)Dp * Mp;
    s_transposed = transposed;
  }
  void bind_r(T* buf) {
    if (!buf) {
      own_.assign(state_size(), T(0));
      buf = own_.data();
    }
    r = buf;
    rv = buf + (long)Dp * Mp;
    transpose(r, Mp, rt.data(), Dp, Dp, Mp);
  }
  int len() const { return L; }

  // ---- loads ----
  // Rows [t0, t0 + L) of x into dst[kChunk][ld] (phi applied if asked), zero elsewhere.
  void load_rows(const View<const S>& x, int X, T* dst, int ld, bool apply_phi) {
    if (L < kChunk || X < ld) std::fill(dst, dst + (long)kChunk * ld, T(0));
    for (int i = 0; i < L; ++i) {
      const S* row = x.row(t0 + i);
      T* d = dst + (long)i * ld;
      if (x.sx == 1) {  // the common contiguous-row case: a vectorisable loop
        for (int c = 0; c < X; ++c) d[c] = static_cast<T>(row[c]);
      } else {
        for (int c = 0; c < X; ++c) d[c] = static_cast<T>(row[c * x.sx]);
      }
      if (apply_phi) {
        phi_inplace(d, ld);
        for (int c = X; c < ld; ++c) d[c] = T(0);
      }
    }
  }
  void load_q(const View<const S>& x) { load_rows(x, D, qf.data(), Dp, phi); }
  void load_k(const View<const S>& x, bool transposed) {
    load_rows(x, D, kf.data(), Dp, phi);
    if (transposed) transpose(kf.data(), Dp, kft.data(), kChunk, kChunk, Dp);
  }
  void load_v(const View<const S>& x, bool transposed) {
    load_rows(x, M, v.data(), Mp, false);
    if (transposed) transpose(v.data(), Mp, vt.data(), kChunk, kChunk, Mp);
  }
  // G = g * inv and gd: from g, out and den (prefix sweep; gd is saved to gd_all[t0 + i]), or from
  // g and the saved gd (suffix sweep, out == nullptr).
  void load_grad(const View<const S>& gv, const View<const S>* ov, const T* den_all, T* gd_all) {
    if (L < kChunk || M < Mp) std::fill(g.begin(), g.end(), T(0));
    std::fill(gd.begin(), gd.end(), T(0));
    for (int i = 0; i < L; ++i) {
      const T inv = cp::inv_den(den_all[t0 + i]);
      const S* grow = gv.row(t0 + i);
      T* row = g.data() + (long)i * Mp;
      if (ov == nullptr) {
        for (int c = 0; c < M; ++c) row[c] = static_cast<T>(grow[c * gv.sx]) * inv;
        gd[i] = gd_all[t0 + i];
        continue;
      }
      const S* orow = ov->row(t0 + i);
      if (ov->sx == 1 && (gv.sx == 1 || gv.sx == 0)) {
        // The sums of cp::grad_row in 16 interleaved partial sums, so that the loop vectorises.
        constexpr int P = 16;
        T part[P] = {};
        int c = 0;
        for (; c + P <= M; c += P)
          for (int j = 0; j < P; ++j) {
            const T gc = static_cast<T>(grow[(c + j) * gv.sx]);
            part[j] += gc * static_cast<T>(orow[c + j]);
            row[c + j] = gc * inv;
          }
        for (; c < M; ++c) {
          const T gc = static_cast<T>(grow[c * gv.sx]);
          part[0] += gc * static_cast<T>(orow[c]);
          row[c] = gc * inv;
        }
        T dot = T(0);
        for (int j = 0; j < P; ++j) dot += part[j];
        gd[i] = cp::grad_den(dot, inv);
      } else {
        gd[i] = cp::grad_row<T>(
            M, inv, [&](int c) { return static_cast<T>(grow[c * gv.sx]); },
            [&](int c) { return static_cast<T>(orow[c * ov->sx]); }, row);
      }
      gd_all[t0 + i] = gd[i];
    }
  }

  // ---- operands ----
  struct AOp {
    const T* p;
    long rs, ks;
    int rows, K;
  };
  struct BOp {
    const T* p;
    long ld;
    int K, cols;
  };
  // A row-major tile [rows][ld] of the chunk.
  bool tile(Slot sl, const T*& ptr, int& rows, int& cols) const {
    switch (sl) {
      case Slot::Qf: ptr = qf.data(), rows = kChunk, cols = Dp; return true;
      case Slot::Kf: ptr = kf.data(), rows = kChunk, cols = Dp; return true;
      case Slot::V: ptr = v.data(), rows = kChunk, cols = Mp; return true;
      case Slot::G: ptr = g.data(), rows = kChunk, cols = Mp; return true;
      case Slot::A: ptr = a.data(), rows = kChunk, cols = kChunk; return true;
      case Slot::P: ptr = p.data(), rows = kChunk, cols = kChunk; return true;
      default: return false;
    }
  }
  AOp aop(Slot sl, bool t) const {
    const T* ptr = nullptr;
    int rows = 0, cols = 0;
    TORCH_CHECK(tile(sl, ptr, rows, cols), "causal_product cpu engine: no A operand for this slot");
    return t ? AOp{ptr, 1, cols, cols, rows} : AOp{ptr, cols, 1, rows, cols};
  }
  // op(b) as a row-major [K][cols] matrix: the transposes the steps need are kept ready.
  BOp bop(Slot sl, bool t) const {
    switch (sl) {
      case Slot::Qf: if (!t) return {qf.data(), Dp, kChunk, Dp}; break;
      case Slot::Kf: return t ? BOp{kft.data(), kChunk, Dp, kChunk} : BOp{kf.data(), Dp, kChunk, Dp};
      case Slot::V: return t ? BOp{vt.data(), kChunk, Mp, kChunk} : BOp{v.data(), Mp, kChunk, Mp};
      case Slot::G: if (!t) return {g.data(), Mp, kChunk, Mp}; break;
      case Slot::S: if (t == s_transposed) return t ? BOp{s, Dp, Mp, Dp} : BOp{s, Mp, Dp, Mp}; break;
      case Slot::R: return t ? BOp{rt.data(), Dp, Mp, Dp} : BOp{r, Mp, Dp, Mp};
      default: break;
    }
    TORCH_CHECK(false, "causal_product cpu engine: no B operand for this slot/transpose");
  }
  void product(const AOp& A, const BOp& B, T* C, long ldc, Tri tri, bool over) {
    gemm(A.p, A.rs, A.ks, B.p, B.ld, C, ldc, A.rows, B.cols, A.K, skip_of(tri), over, [this] { pf.pump(); });
  }
  S* out_rows(Dst d) const {
    switch (d) {
      case Dst::Out: return out_p;
      case Dst::Dq: return dq_p;
      case Dst::Dk: return dk_p;
      case Dst::Dv: return dv_p;
      default: return nullptr;
    }
  }
  int out_cols(Dst d) const { return d == Dst::Out || d == Dst::Dv ? M : D; }
  template <class Epi>
  void epilogue_rows(Dst d, Epi epi) {
    S* base = out_rows(d);
    const int X = out_cols(d);
    for (int i = 0; i < L; ++i) {
      const T* in = acc.data() + (long)i * W;
      S* o = base + (long)(t0 + i) * X;
#if defined(__AVX512F__)
      // fp32 rows of whole cache lines: non-temporal stores, which skip reading each output line
      // into the cache before overwriting it (a quarter of the kernel's memory traffic).
      if constexpr (std::is_same_v<S, float>) {
        if (X % 16 == 0 && reinterpret_cast<uintptr_t>(o) % 64 == 0) {
          using V = typename VecT<float>::type;
          for (int c = 0; c < X; c += 16) {
            V v;
            for (int j = 0; j < 16; ++j) v[j] = epi(i, c + j, in[c + j]);
            _mm512_stream_ps(o + c, (__m512)v);
          }
          continue;
        }
      }
#endif
      for (int c = 0; c < X; ++c) o[c] = static_cast<S>(epi(i, c, in[c]));
    }
  }

  // ---- the engine interface of the shared steps ----
  template <class Pr, class Epi>
  void mm(Dst d, Pr, Epi epi) {
    if (d == Dst::S) {  // the running state: S += op(a) op(b), or S^T += op(b)^T op(a)^T
      if (s_transposed)
        product(aop(Pr::b, !Pr::tb), bop(Pr::a, !Pr::ta), s, Dp, Tri::Full, false);
      else
        product(aop(Pr::a, Pr::ta), bop(Pr::b, Pr::tb), s, Mp, Tri::Full, false);
      return;
    }
    if (d == Dst::R) {
      product(aop(Pr::a, Pr::ta), bop(Pr::b, Pr::tb), r, Mp, Tri::Full, false);
      transpose(r, Mp, rt.data(), Dp, Dp, Mp);  // V R^T needs R^T row-major
      return;
    }
    if (d == Dst::A || d == Dst::P) {
      T* c = d == Dst::A ? a.data() : p.data();
      product(aop(Pr::a, Pr::ta), bop(Pr::b, Pr::tb), c, kChunk, Pr::tri, true);
      for (int i = 0; i < kChunk; ++i)
        for (int j = 0; j < kChunk; ++j) c[i * kChunk + j] = epi(i, j, c[i * kChunk + j]);
      return;
    }
    product(aop(Pr::a, Pr::ta), bop(Pr::b, Pr::tb), acc.data(), W, Pr::tri, true);
    epilogue_rows(d, epi);
  }
  template <class P1, class P2, class Epi>
  void mm2(Dst d, P1, P2, Epi epi) {
    product(aop(P1::a, P1::ta), bop(P1::b, P1::tb), acc.data(), W, P1::tri, true);
    product(aop(P2::a, P2::ta), bop(P2::b, P2::tb), acc.data(), W, P2::tri, false);
    epilogue_rows(d, epi);
  }
  template <class Pr, class Epi>
  void mm_rowsum(Dst d, Pr pr, Epi epi, T* sums) {
    mm(d, pr, epi);
    const T* c = d == Dst::A ? a.data() : p.data();
    for (int i = 0; i < kChunk; ++i) sums[i] += vsum(c + i * kChunk, nullptr, kChunk);
  }
  template <class F>
  void rows(F f) {
    for (int i = 0; i < kChunk; ++i) f(i);
  }
  void sync() {}
  T* vec(Vec which) {
    switch (which) {
      case Vec::den: return den.data();
      case Vec::gd: return gd.data();
      case Vec::z: return z;
      default: return rv;
    }
  }
  // sum_j x[j] (* y[j]) over n (a multiple of the vector width), in vector lanes: an in-order
  // scalar sum would be a chain of dependent adds.
  static T vsum(const T* x, const T* y, int n) {
    using V = typename VecT<T>::type;
    constexpr int VW = VecT<T>::W;
    V acc = V{};
    for (int j = 0; j < n; j += VW) acc += y ? vload<V>(x + j) * vload<V>(y + j) : vload<V>(x + j);
    T s_ = T(0);
    for (int j = 0; j < VW; ++j) s_ += acc[j];
    return s_;
  }
  T dot(Slot sl, int i, const T* x) const {
    return vsum((sl == Slot::Qf ? qf.data() : kf.data()) + (long)i * Dp, x, Dp);
  }
  // The chunk-local column sums, added to the running z or r (the combine).
  void colsum(Vec which, Slot sl, Vec weights = Vec::den) {
    const T* t = sl == Slot::Qf ? qf.data() : kf.data();
    T* out = which == Vec::z ? z : rv;
    const bool weighted = which == Vec::r;
    for (int i = 0; i < L; ++i) {
      const T w = weighted ? gd[i] : T(1);
      const T* row = t + (long)i * Dp;
      for (int d = 0; d < Dp; ++d) out[d] += row[d] * w;
    }
    (void)weights;
  }
  T dphi(Slot sl, int i, int d) const {
    if (!phi) return T(1);
    return cp::dphi_from_phi((sl == Slot::Qf ? qf : kf)[(long)i * Dp + d]);
  }
  void store_den() {
    for (int i = 0; i < L; ++i) den_out[t0 + i] = den[i];
  }
};

// Queues rows [t0, t0 + n) of x (contiguous rows only) for prefetching.
template <typename S>
void prefetch_rows(PrefetchQueue& pf, const View<const S>& x, int t0, int n, int N, int X) {
  if (x.sx != 1) return;
  const int a = std::max(t0, 0), b = std::min(t0 + n, N);
  for (int i = a; i < b; ++i) pf.add(x.row(i), X * (int)sizeof(S));
}

// How many segments to cut each sequence into: 1 when there are at least as many sequences as
// threads (each thread sweeps whole sequences, the cheapest order), else enough to feed the threads
// while keeping segments of at least 8 chunks.
int auto_segments(int64_t bh, int nchunks) {
  const int threads = at::get_num_threads();
  if (bh >= threads) return 1;
  const int want = (int)((threads + bh - 1) / bh);
  return std::max(1, std::min(want, nchunks / 8));
}

// Chunk range [c0, c1) of segment sg of nseg.
inline void segment_chunks(int nchunks, int nseg, int sg, int& c0, int& c1) {
  c0 = (int)((long long)nchunks * sg / nseg);
  c1 = (int)((long long)nchunks * (sg + 1) / nseg);
}

// The inter-segment combine: buf holds nseg states per sequence; replace each by the sum of the
// ones before it (forward) or after it (reverse).
template <typename T>
void scan_segments(T* buf, int64_t bh_count, int nseg, long size, bool reverse) {
  at::parallel_for(0, bh_count, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t bh = b0; bh < b1; ++bh) {
      T* base = buf + bh * nseg * size;
      for (long e = 0; e < size; ++e) {
        T carry = T(0);
        for (int i = 0; i < nseg; ++i) {
          const int sg = reverse ? nseg - 1 - i : i;
          base[sg * size + e] = cp::scan_step(carry, base[sg * size + e]);
        }
      }
    }
  });
}

// Runs body(engine, bh, c0, c1, state) over every (sequence, segment) in parallel; state is the
// segment's slot of `states` (nullptr with one segment: the engine's own running state).
template <typename Acc, typename S, typename Body>
void for_segments(int64_t BH, int nchunks, int nseg, int D, int M, bool phi, std::vector<Acc>& states,
                  Body body) {
  at::parallel_for(0, BH * nseg, 1, [&](int64_t begin, int64_t end) {
    CpuEngine<Acc, S> e(D, M, phi);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / nseg;
      const int sg = (int)(item % nseg);
      int c0, c1;
      segment_chunks(nchunks, nseg, sg, c0, c1);
      Acc* st = nseg > 1 ? states.data() + item * e.state_size() : nullptr;
      body(e, bh, c0, c1, st);
    }
#if defined(__AVX512F__)
    _mm_sfence();  // order the non-temporal stores before the outputs are read
#endif
  });
}

template <typename S, bool Phi>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, at::Tensor& den,
                  int segments) {
  using T = at::opmath_type<S>;
  const int64_t B = q.size(0), H = q.size(1), BH = B * H;
  const int N = q.size(2), D = q.size(3), M = v.size(3);
  const int nchunks = (N + kChunk - 1) / kChunk;
  const int nseg = segments > 0 ? std::min(segments, std::max(nchunks, 1)) : auto_segments(BH, nchunks);
  std::vector<T> states(nseg > 1 ? BH * nseg * CpuEngine<T, S>::state_size(pad_to(D, kPad), pad_to(M, kPad)) : 0);
  auto views = [&](int64_t bh) {
    const long long b = bh / H, h = bh % H;
    return std::make_tuple(view_of<const S>(q, b, h), view_of<const S>(k, b, h), view_of<const S>(v, b, h));
  };
  if (nseg > 1) {  // step 1: segment-local states (chunk_state_kv over the segment's chunks)
    for_segments<T, S>(BH, nchunks, nseg, D, M, Phi, states, [&](auto& e, int64_t bh, int c0, int c1, T* st) {
      auto [qv, kv, vv] = views(bh);
      e.bind_s(st, false);
      std::fill(st, st + e.state_size(), T(0));
      for (int c = c0; c < c1; ++c) {
        e.t0 = c * kChunk;
        e.L = std::min(kChunk, N - e.t0);
        e.load_k(kv, false);
        e.load_v(vv, false);
        cp::chunk_state_kv(e);
      }
    });
    scan_segments(states.data(), BH, nseg, CpuEngine<T, S>::state_size(pad_to(D, kPad), pad_to(M, kPad)), false);
  }
  for_segments<T, S>(BH, nchunks, nseg, D, M, Phi, states, [&](auto& e, int64_t bh, int c0, int c1, T* st) {
    auto [qv, kv, vv] = views(bh);
    e.bind_s(st, false);
    e.out_p = static_cast<S*>(out.data_ptr()) + bh * (int64_t)N * M;
    e.den_out = den.data_ptr<T>() + bh * (int64_t)N;
    for (int c = c0; c < c1; ++c) {
      e.t0 = c * kChunk;
      e.L = std::min(kChunk, N - e.t0);
      const int ahead = e.t0 + kAhead * kChunk;
      e.pf.clear();
      prefetch_rows(e.pf, qv, ahead, kChunk, N, D);
      prefetch_rows(e.pf, kv, ahead, kChunk, N, D);
      prefetch_rows(e.pf, vv, ahead, kChunk, N, M);
      e.pf.plan(24);
      e.load_q(qv);
      e.load_k(kv, true);
      e.load_v(vv, false);
      cp::chunk_forward_output(e);
      cp::chunk_state_kv(e);
    }
  });
}

template <typename S, bool Phi>
void backward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                   const at::Tensor& den, const at::Tensor& gout, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
                   int segments) {
  using T = at::opmath_type<S>;
  const int64_t B = q.size(0), H = q.size(1), BH = B * H;
  const int N = q.size(2), D = q.size(3), M = v.size(3);
  const int nchunks = (N + kChunk - 1) / kChunk;
  const int nseg = segments > 0 ? std::min(segments, std::max(nchunks, 1)) : auto_segments(BH, nchunks);
  const long ssize = CpuEngine<T, S>::state_size(pad_to(D, kPad), pad_to(M, kPad));
  std::vector<T> states(nseg > 1 ? BH * nseg * ssize : 0);
  std::vector<T> gd_all(BH * (int64_t)N);  // dL/dden per token, written by the prefix sweep
  struct Views {
    View<const S> q, k, v, o, g;
  };
  auto views = [&](int64_t bh) {
    const long long b = bh / H, h = bh % H;
    return Views{view_of<const S>(q, b, h), view_of<const S>(k, b, h), view_of<const S>(v, b, h),
                 view_of<const S>(out, b, h), view_of<const S>(gout, b, h)};
  };
  auto den_of = [&](int64_t bh) { return den.data_ptr<T>() + bh * (int64_t)N; };
  auto chunk = [&](auto& e, int c) {
    e.t0 = c * kChunk;
    e.L = std::min(kChunk, N - e.t0);
  };

  // Prefix sweep: dq from the prefix state S (kept as S^T: the product G S^T reads it row-major).
  if (nseg > 1) {
    for_segments<T, S>(BH, nchunks, nseg, D, M, Phi, states, [&](auto& e, int64_t bh, int c0, int c1, T* st) {
      const Views x = views(bh);
      e.bind_s(st, true);
      std::fill(st, st + ssize, T(0));
      for (int c = c0; c < c1; ++c) {
        chunk(e, c);
        e.load_k(x.k, false);
        e.load_v(x.v, false);
        cp::chunk_state_kv(e);
      }
    });
    scan_segments(states.data(), BH, nseg, ssize, false);
  }
  for_segments<T, S>(BH, nchunks, nseg, D, M, Phi, states, [&](auto& e, int64_t bh, int c0, int c1, T* st) {
    const Views x = views(bh);
    e.bind_s(st, true);
    e.dq_p = static_cast<S*>(dq.data_ptr()) + bh * (int64_t)N * D;
    for (int c = c0; c < c1; ++c) {
      chunk(e, c);
      const int ahead = e.t0 + kAhead * kChunk;
      e.pf.clear();
      prefetch_rows(e.pf, x.k, ahead, kChunk, N, D);
      prefetch_rows(e.pf, x.v, ahead, kChunk, N, M);
      prefetch_rows(e.pf, x.g, ahead, kChunk, N, M);
      prefetch_rows(e.pf, x.o, ahead, kChunk, N, M);
      if (Phi) prefetch_rows(e.pf, x.q, ahead, kChunk, N, D);
      e.pf.plan(24);
      e.load_k(x.k, false);
      if (Phi) e.load_q(x.q);  // only for phi'(q) in dq
      e.load_v(x.v, true);
      e.load_grad(x.g, &x.o, den_of(bh), gd_all.data() + bh * (int64_t)N);
      cp::chunk_dq(e);
      cp::chunk_state_kv(e);
    }
  });

  // Suffix sweep: dk and dv from the suffix state R (one state for both).
  if (nseg > 1) {
    for_segments<T, S>(BH, nchunks, nseg, D, M, Phi, states, [&](auto& e, int64_t bh, int c0, int c1, T* st) {
      const Views x = views(bh);
      std::fill(st, st + ssize, T(0));
      e.bind_r(st);
      for (int c = c0; c < c1; ++c) {
        chunk(e, c);
        e.load_q(x.q);
        e.load_grad(x.g, nullptr, den_of(bh), gd_all.data() + bh * (int64_t)N);
        cp::chunk_state_qg(e);
      }
    });
    scan_segments(states.data(), BH, nseg, ssize, true);
  }
  for_segments<T, S>(BH, nchunks, nseg, D, M, Phi, states, [&](auto& e, int64_t bh, int c0, int c1, T* st) {
    const Views x = views(bh);
    e.bind_r(st);
    e.dk_p = static_cast<S*>(dk.data_ptr()) + bh * (int64_t)N * D;
    e.dv_p = static_cast<S*>(dv.data_ptr()) + bh * (int64_t)N * M;
    for (int c = c1 - 1; c >= c0; --c) {
      chunk(e, c);
      const int ahead = e.t0 - kAhead * kChunk;
      e.pf.clear();
      prefetch_rows(e.pf, x.q, ahead, kChunk, N, D);
      prefetch_rows(e.pf, x.k, ahead, kChunk, N, D);
      prefetch_rows(e.pf, x.v, ahead, kChunk, N, M);
      prefetch_rows(e.pf, x.g, ahead, kChunk, N, M);
      e.pf.plan(32);
      e.load_q(x.q);
      e.load_k(x.k, true);
      e.load_v(x.v, true);
      e.load_grad(x.g, nullptr, den_of(bh), gd_all.data() + bh * (int64_t)N);
      cp::chunk_dkdv(e);
      cp::chunk_state_qg(e);
    }
  });
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "causal_product: q, k, v must be 4-D [B, H, N, D]");
  TORCH_CHECK(q.sizes() == k.sizes(), "causal_product: q and k must have one shape");
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              "causal_product: v must be [B, H, N, M] matching q");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "causal_product: q, k, v must share one dtype");
  char buf[256];
  const char* err = cp::shape_error(q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), 0, buf, sizeof(buf));
  TORCH_CHECK(err == nullptr, err);
}

}  // namespace

// Returns (out [B, H, N, M] in q's dtype, den [B, H, N] in the accumulation dtype).
// phi: q, k are raw and the kernel applies phi = elu + 1 itself (else q, k are the features).
// segments: how many pieces each sequence is split into (0: automatic).
std::vector<at::Tensor> causal_product_cpu_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   bool phi, int segments) {
  check_inputs(q, k, v);
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  auto den = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(acc));
  if (out.numel() == 0) return {out, den};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "causal_product_cpu_forward", [&] {
    if (phi)
      forward_impl<scalar_t, true>(q, k, v, out, den, segments);
    else
      forward_impl<scalar_t, false>(q, k, v, out, den, segments);
  });
  return {out, den};
}

// Returns (dq, dk, dv); gout may have any strides, including 0.
std::vector<at::Tensor> causal_product_cpu_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& out, const at::Tensor& den,
                                                    const at::Tensor& gout, bool phi, int segments) {
  check_inputs(q, k, v);
  TORCH_CHECK(gout.sizes() == out.sizes() && gout.scalar_type() == out.scalar_type(),
              "causal_product: grad_out must match out's shape and dtype");
  TORCH_CHECK(den.is_contiguous() && den.sizes() == q.sizes().slice(0, 3),
              "causal_product: den must be the contiguous [B, H, N] normaliser of the forward");
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::empty(k.sizes(), k.options());
  auto dv = at::empty(v.sizes(), v.options());
  if (out.numel() == 0) return {dq, dk, dv};  // N == 0 or B * H == 0: nothing to compute
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "causal_product_cpu_backward", [&] {
    if (phi)
      backward_impl<scalar_t, true>(q, k, v, out, den, gout, dq, dk, dv, segments);
    else
      backward_impl<scalar_t, false>(q, k, v, out, den, gout, dq, dk, dv, segments);
  });
  return {dq, dk, dv};
}

// Tokens per chunk of the CPU kernel (the tests size sequences around it).
int causal_product_cpu_chunk() { return kChunk; }
