// Group-wise safe rational y = P(x) / (1 + sum_j |b_j| |x|^j): fused CPU forward and backward.
//
// Plain C++ (no torch headers, so it compiles in seconds), OpenMP over rows, SIMD over the
// channels of a group. x is viewed as (rows, G, Cg) contiguous; a is (G, m+1), b holds |b| as
// (G, n). Rows go in blocks to the threads. The backward reads x and grad_out once, writes grad_x,
// and accumulates the coefficient gradients per SIMD lane in fp32 over a block's rows (an L1-sized
// array), then sums them in double into partial[block][G][K] (precise over millions of elements,
// and the same bits whatever the thread count).
// Loaded through ctypes by nora/kernels/cpu.py; the OpenMP runtime it links (soname
// libgomp.so.1) is the one torch already loaded, so both share one thread pool.

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// fp32 runs with flush-to-zero / denormals-are-zero on its own threads (restored on exit): fitted
// coefficients can be denormal (the shipped GELU fit has |b_1| ~ 8e-41) and every FMA with a
// denormal operand takes a microcode assist on x86 (the forward ran 9x slower). A denormal
// contributes nothing to Q >= 1 or to any fp32 sum. fp64 keeps exact IEEE semantics.
template <typename T>
struct DenormalsAreZero {
#if defined(__x86_64__) || defined(__i386__)
  unsigned saved = 0;
  DenormalsAreZero() {
    if (sizeof(T) == 4) {
      saved = _mm_getcsr();
      _mm_setcsr(saved | 0x8040u);  // FTZ | DAZ
    }
  }
  ~DenormalsAreZero() {
    if (sizeof(T) == 4) _mm_setcsr(saved);
  }
#endif
};

// Sum of n values in double, in a fixed order over 8 interleaved partial sums (vectorizable:
// a plain running sum is a chain of dependent adds, which the compiler may not reorder).
template <typename A>
double lane_sum(const A* v, int64_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int j = 0; j < 8; ++j) s[j] += double(v[c + j]);
  for (; c < n; ++c) s[c % 8] += double(v[c]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

template <typename T, int M, int N>
void forward_rows(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ a,
                  const T* __restrict__ b, int64_t r0, int64_t r1, int64_t G, int64_t Cg,
                  int m_rt, int n_rt) {
  const int m = M >= 0 ? M : m_rt;
  const int n = N >= 0 ? N : n_rt;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const T* __restrict__ ag = a + g * (m + 1);
      const T* __restrict__ bg = b + g * n;
      const int64_t off = (r * G + g) * Cg;
      const T* __restrict__ xr = x + off;
      T* __restrict__ yr = y + off;
#pragma omp simd
      for (int64_t c = 0; c < Cg; ++c) {
        const T v = xr[c];
        T p = ag[m];
        for (int k = m - 1; k >= 0; --k) p = p * v + ag[k];
        const T av = std::fabs(v);
        T s = bg[n - 1];
        for (int j = n - 2; j >= 0; --j) s = s * av + bg[j];
        yr[c] = p / (T(1) + s * av);
      }
    }
  }
}

// Accumulates into acc[g][k][c] (k < m+1: d/da_k, then n entries d/d|b_j|) for rows [r0, r1).
template <typename T, typename A, int M, int N, bool DX, bool COEF>
void backward_rows(const T* __restrict__ x, const T* __restrict__ go, T* __restrict__ dx,
                   const T* __restrict__ a, const T* __restrict__ b, A* __restrict__ acc,
                   int64_t r0, int64_t r1, int64_t G, int64_t Cg, int m_rt, int n_rt) {
  const int m = M >= 0 ? M : m_rt;
  const int n = N >= 0 ? N : n_rt;
  const int K = m + 1 + n;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const T* __restrict__ ag = a + g * (m + 1);
      const T* __restrict__ bg = b + g * n;
      const int64_t off = (r * G + g) * Cg;
      const T* __restrict__ xr = x + off;
      const T* __restrict__ gr = go + off;
      T* __restrict__ dxr = DX ? dx + off : nullptr;
      A* __restrict__ accg = COEF ? acc + g * K * Cg : nullptr;
#pragma omp simd
      for (int64_t c = 0; c < Cg; ++c) {
        const T v = xr[c];
        T p = ag[m], dp = T(0);
        for (int k = m - 1; k >= 0; --k) {
          dp = dp * v + p;
          p = p * v + ag[k];
        }
        const T av = std::fabs(v);
        T s = bg[n - 1], ds = T(0);  // s(av) = sum_j |b_j| av^(j-1), Q = 1 + av s
        for (int j = n - 2; j >= 0; --j) {
          ds = ds * av + s;
          s = s * av + bg[j];
        }
        const T iq = T(1) / (T(1) + av * s);
        const T ratio = p * iq;
        const T gq = gr[c] * iq;
        if (DX) {
          const T sign = T((v > T(0)) - (v < T(0)));
          dxr[c] = (dp - ratio * (s + av * ds) * sign) * gq;
        }
        if (COEF) {
          T t = gq;  // g x^k / Q
          for (int k = 0; k <= m; ++k) {
            accg[k * Cg + c] += A(t);
            t *= v;
          }
          T u = -ratio * gq;  // -g P |x|^j / Q^2
          for (int j = 0; j < n; ++j) {
            u *= av;
            accg[(m + 1 + j) * Cg + c] += A(u);
          }
        }
      }
    }
  }
}

template <typename T, int M, int N>
void forward(const T* x, T* y, const T* a, const T* b, int64_t rows, int64_t G, int64_t Cg,
             int m, int n, int64_t block, int nt) {
  const int64_t blocks = (rows + block - 1) / block;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsAreZero<T> daz;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < blocks; ++k)
      forward_rows<T, M, N>(x, y, a, b, k * block, std::min(rows, (k + 1) * block), G, Cg, m, n);
  }
}

// Each thread takes a contiguous range of row blocks (static: measured faster than dynamic
// hand-out, also on a loaded machine); each block writes its own coefficient sums to
// partial[block][G][K], summed by the caller in block order, so the result has the same bits
// whatever the number of threads.
template <typename T, int M, int N, bool DX, bool COEF>
void backward(const T* x, const T* go, T* dx, const T* a, const T* b, double* partial,
              int64_t rows, int64_t G, int64_t Cg, int m, int n, int64_t block, int nt) {
  using A = T;  // per-lane accumulator over one block's rows, reduced into double per block
  const int K = m + 1 + n;
  const int64_t blocks = (rows + block - 1) / block;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsAreZero<T> daz;
    std::vector<A> acc(COEF ? G * K * Cg : 0);
#pragma omp for schedule(static)
    for (int64_t k = 0; k < blocks; ++k) {
      if (COEF) std::fill(acc.begin(), acc.end(), A(0));
      backward_rows<T, A, M, N, DX, COEF>(x, go, dx, a, b, acc.data(), k * block,
                                          std::min(rows, (k + 1) * block), G, Cg, m, n);
      if (COEF) {
        double* out = partial + k * G * K;
        for (int64_t gk = 0; gk < G * K; ++gk) out[gk] = lane_sum(acc.data() + gk * Cg, Cg);
      }
    }
  }
}

template <typename T>
void forward_dispatch(const T* x, T* y, const T* a, const T* b, int64_t rows, int64_t G,
                      int64_t Cg, int m, int n, int64_t block, int nt) {
  if (m == 5 && n == 4) return forward<T, 5, 4>(x, y, a, b, rows, G, Cg, m, n, block, nt);
  if (m == 3 && n == 2) return forward<T, 3, 2>(x, y, a, b, rows, G, Cg, m, n, block, nt);
  return forward<T, -1, -1>(x, y, a, b, rows, G, Cg, m, n, block, nt);
}

template <typename T, bool DX, bool COEF>
void backward_degrees(const T* x, const T* go, T* dx, const T* a, const T* b, double* partial,
                      int64_t rows, int64_t G, int64_t Cg, int m, int n, int64_t block, int nt) {
  if (m == 5 && n == 4)
    return backward<T, 5, 4, DX, COEF>(x, go, dx, a, b, partial, rows, G, Cg, m, n, block, nt);
  if (m == 3 && n == 2)
    return backward<T, 3, 2, DX, COEF>(x, go, dx, a, b, partial, rows, G, Cg, m, n, block, nt);
  return backward<T, -1, -1, DX, COEF>(x, go, dx, a, b, partial, rows, G, Cg, m, n, block, nt);
}

template <typename T>
void backward_dispatch(const T* x, const T* go, T* dx, const T* a, const T* b, double* partial,
                       int64_t rows, int64_t G, int64_t Cg, int m, int n, int want_dx,
                       int want_coef, int64_t block, int nt) {
  if (want_dx && want_coef)
    return backward_degrees<T, true, true>(x, go, dx, a, b, partial, rows, G, Cg, m, n, block, nt);
  if (want_dx)
    return backward_degrees<T, true, false>(x, go, dx, a, b, partial, rows, G, Cg, m, n, block, nt);
  if (want_coef)
    return backward_degrees<T, false, true>(x, go, dx, a, b, partial, rows, G, Cg, m, n, block, nt);
}

}  // namespace

extern "C" {

int nora_abi_version() { return 2; }

void nora_rational_forward_f32(const float* x, float* y, const float* a, const float* b,
                               int64_t rows, int64_t G, int64_t Cg, int m, int n, int64_t block,
                               int nt) {
  forward_dispatch<float>(x, y, a, b, rows, G, Cg, m, n, block, nt);
}

void nora_rational_forward_f64(const double* x, double* y, const double* a, const double* b,
                               int64_t rows, int64_t G, int64_t Cg, int m, int n, int64_t block,
                               int nt) {
  forward_dispatch<double>(x, y, a, b, rows, G, Cg, m, n, block, nt);
}

void nora_rational_backward_f32(const float* x, const float* go, float* dx, const float* a,
                                const float* b, double* partial, int64_t rows, int64_t G,
                                int64_t Cg, int m, int n, int want_dx, int want_coef,
                                int64_t block, int nt) {
  backward_dispatch<float>(x, go, dx, a, b, partial, rows, G, Cg, m, n, want_dx, want_coef, block,
                           nt);
}

void nora_rational_backward_f64(const double* x, const double* go, double* dx, const double* a,
                                const double* b, double* partial, int64_t rows, int64_t G,
                                int64_t Cg, int m, int n, int want_dx, int want_coef,
                                int64_t block, int nt) {
  backward_dispatch<double>(x, go, dx, a, b, partial, rows, G, Cg, m, n, want_dx, want_coef, block,
                            nt);
}

}  // extern "C"
