// mp_mma.cuh: warp matrix multiply for 16-bit operands on mma.sync.m16n8k16 (f32
// accumulators) fed by ldmatrix, and a float32 CUDA-core path for any element type.
//
// Fragments are the registers of one lane, laid out as the PTX ISA states (mp_layout.cuh):
//   FragA: 16 x 16 tile of A (4 registers, 8 elements), FragB: 16 x 8 tile of B (2 registers),
//   FragC: 16 x 8 f32 accumulators (4 floats).
// Shared tiles may hold an operand either way round, which is how a transpose is folded
// into the load (ldmatrix .trans does the turning):
//   A (M x K): kRowMajor = stored [M][K];  kColMajor = stored [K][M]
//   B (K x N): kRowMajor = stored [K][N];  kColMajor = stored [N][K] (e.g. a Linear weight)
// Leading dimensions are in elements; every 8-element row segment an ldmatrix reads must
// start 16-byte aligned (ld a multiple of 8, tile start 16-byte aligned). Padding ld (e.g.
// +8) avoids shared-memory bank conflicts. Warp functions need all 32 lanes of the warp.
#ifndef MP_MMA_CUH_
#define MP_MMA_CUH_

#include "mp_core.cuh"

namespace mp {

struct FragA {
  u32 r[4];
};
struct FragB {
  u32 r[2];
};
struct FragC {
  float v[4];
};

enum Layout { kRowMajor = 0, kColMajor = 1 };

MP_DEVICE void zero(FragC& c) {
  c.v[0] = 0.0f;
  c.v[1] = 0.0f;
  c.v[2] = 0.0f;
  c.v[3] = 0.0f;
}

// ldmatrix.sync.aligned.m8n8.x{NUM}{.trans}.shared.b16: lane 8*m + r passes the address of
// row r of matrix m (lanes past 8*NUM pass anything); r[m] receives this lane's part of m.
template <int NUM, bool TRANS, class T>
MP_DEVICE void ldmatrix(u32 (&r)[NUM], Smem<T> row MP_LOC_PARAM) {
  static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix loads 1, 2 or 4 matrices");
  static_assert(sizeof(T) == 2, "ldmatrix moves 16-bit elements");
#if defined(MP_EMULATE)
  emu::ldmatrix<NUM, TRANS>(r, row.ptr, mp_loc_);
#elif defined(__CUDA_ARCH__)
  const u32 a = row.addr();
  if constexpr (NUM == 1 && !TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
  } else if constexpr (NUM == 1 && TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
  } else if constexpr (NUM == 2 && !TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a)
                 : "memory");
  } else if constexpr (NUM == 2 && TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a)
                 : "memory");
  } else if constexpr (NUM == 4 && !TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
  }
#endif
}

// d = a * b + c with mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32;
// T (f16 or bf16) names the operand type. d may be c.
template <class T>
MP_DEVICE void mma_16816(FragC& d, const FragA& a, const FragB& b, const FragC& c MP_LOC_PARAM) {
  static_assert(is_16bit<T>::value, "mma_16816 takes f16 or bf16 operands");
#if defined(MP_EMULATE)
  emu::mma_m16n8k16(d.v, a.r, b.r, c.v, is_same<T, bf16>::value, mp_loc_);
#elif defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
  if constexpr (is_same<T, bf16>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d.v[0]), "=f"(d.v[1]), "=f"(d.v[2]), "=f"(d.v[3])
        : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]), "f"(c.v[0]), "f"(c.v[1]),
          "f"(c.v[2]), "f"(c.v[3]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d.v[0]), "=f"(d.v[1]), "=f"(d.v[2]), "=f"(d.v[3])
        : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]), "f"(c.v[0]), "f"(c.v[1]),
          "f"(c.v[2]), "f"(c.v[3]));
  }
#else
  static_assert(sizeof(T) == 0, "mma.sync m16n8k16 needs sm_80 or newer");
#endif
#endif
}

// A fragment for rows m0..m0+15, columns k0..k0+15 of A, from a shared tile (ldmatrix.x4).
// Matrix q of the x4 covers A rows m0 + 8*(q & 1), columns k0 + 8*(q >> 1): registers
// a0a1, a2a3, a4a5, a6a7 in the ISA's order.
template <Layout L, class T>
MP_DEVICE void load_frag_a(FragA& a, Smem<T> tile, int ld, int m0, int k0 MP_LOC_PARAM) {
  const int lane = lane_id(), q = lane >> 3, r = lane & 7;
  if constexpr (L == kRowMajor) {
    ldmatrix<4, false>(a.r, tile + ((m0 + 8 * (q & 1) + r) * ld + k0 + 8 * (q >> 1)) MP_LOC);
  } else {  // stored [K][M]: the 8 x 8 blocks are transposed on the way
    ldmatrix<4, true>(a.r, tile + ((k0 + 8 * (q >> 1) + r) * ld + m0 + 8 * (q & 1)) MP_LOC);
  }
}

// B fragments for rows k0..k0+15 and two adjacent 8-column tiles n0.. and n0+8.. (ldmatrix.x4).
// Matrix q covers B rows k0 + 8*(q & 1), columns n0 + 8*(q >> 1): b0b1, b2b3 of each tile.
template <Layout L, class T>
MP_DEVICE void load_frag_b2(FragB& b0, FragB& b1, Smem<T> tile, int ld, int k0, int n0 MP_LOC_PARAM) {
  const int lane = lane_id(), q = lane >> 3, r = lane & 7;
  u32 x[4];
  if constexpr (L == kRowMajor) {  // stored [K][N]: columns of B are turned into rows
    ldmatrix<4, true>(x, tile + ((k0 + 8 * (q & 1) + r) * ld + n0 + 8 * (q >> 1)) MP_LOC);
  } else {  // stored [N][K]
    ldmatrix<4, false>(x, tile + ((n0 + 8 * (q >> 1) + r) * ld + k0 + 8 * (q & 1)) MP_LOC);
  }
  b0.r[0] = x[0];
  b0.r[1] = x[1];
  b1.r[0] = x[2];
  b1.r[1] = x[3];
}

// One B fragment (rows k0..k0+15, columns n0..n0+7), ldmatrix.x2.
template <Layout L, class T>
MP_DEVICE void load_frag_b(FragB& b, Smem<T> tile, int ld, int k0, int n0 MP_LOC_PARAM) {
  const int lane = lane_id() & 15, q = lane >> 3, r = lane & 7;
  if constexpr (L == kRowMajor) {
    ldmatrix<2, true>(b.r, tile + ((k0 + 8 * q + r) * ld + n0) MP_LOC);
  } else {
    ldmatrix<2, false>(b.r, tile + ((n0 + r) * ld + k0 + 8 * q) MP_LOC);
  }
}

// Accumulators of a (16*MT) x (8*NT) warp tile, kept in registers across a for-loop.
template <int MT, int NT>
struct WarpAcc {
  FragC c[MT][NT];
  MP_DEVICE void zero() {
    MP_UNROLL
    for (int i = 0; i < MT; ++i) {
      MP_UNROLL
      for (int j = 0; j < NT; ++j) ::mp::zero(c[i][j]);
    }
  }
};

// acc += A[m0 : m0 + 16*MT, 0 : K] * B[0 : K, n0 : n0 + 8*NT] for shared tiles A, B (K a
// multiple of 16). Coordinates are in the operands' logical (untransposed) index space.
template <class T, Layout LA, Layout LB, int MT, int NT>
MP_DEVICE void warp_mma(WarpAcc<MT, NT>& acc, Smem<T> A, int lda, Smem<T> B, int ldb, int m0, int n0,
                        int K MP_LOC_PARAM) {
  MP_CHECK(K % 16 == 0, "warp_mma: K must be a multiple of 16");
  for (int k = 0; k < K; k += 16) {
    FragA a[MT];
    FragB b[NT];
    MP_UNROLL
    for (int i = 0; i < MT; ++i) load_frag_a<LA>(a[i], A, lda, m0 + 16 * i, k MP_LOC);
    MP_UNROLL
    for (int j = 0; j + 1 < NT; j += 2) load_frag_b2<LB>(b[j], b[j + 1], B, ldb, k, n0 + 8 * j MP_LOC);
    if constexpr (NT % 2 == 1) load_frag_b<LB>(b[NT - 1], B, ldb, k, n0 + 8 * (NT - 1) MP_LOC);
    MP_UNROLL
    for (int i = 0; i < MT; ++i) {
      MP_UNROLL
      for (int j = 0; j < NT; ++j) mma_16816<T>(acc.c[i][j], a[i], b[j], acc.c[i][j] MP_LOC);
    }
  }
}

// Calls f(row, col, value) for each accumulator this lane holds, at its coordinates in the
// tile whose warp part starts at (m0, n0) (from the ISA's accumulator layout).
template <int MT, int NT, class F>
MP_DEVICE void for_each_acc(const WarpAcc<MT, NT>& acc, int m0, int n0, F f) {
  const int lane = lane_id();
  MP_UNROLL
  for (int i = 0; i < MT; ++i) {
    MP_UNROLL
    for (int j = 0; j < NT; ++j) {
      MP_UNROLL
      for (int e = 0; e < 4; ++e) {
        const layout::RowCol p = layout::mma_c(lane, e);
        f(m0 + 16 * i + p.row, n0 + 8 * j + p.col, acc.c[i][j].v[e]);
      }
    }
  }
}

// The identity epilogue.
struct Identity {
  MP_DEVICE float operator()(int, int, float v) const { return v; }
};

// dst[row * ld + col] = from_float<TO>(f(row, col, acc)) for the warp tile at (m0, n0).
template <class TO, int MT, int NT, class F>
MP_DEVICE void store_acc(const WarpAcc<MT, NT>& acc, TO* dst, int ld, int m0, int n0, F f) {
  for_each_acc(acc, m0, n0, [&](int r, int c, float v) { dst[r * ld + c] = from_float<TO>(f(r, c, v)); });
}
template <class TO, int MT, int NT, class F>
MP_DEVICE void store_acc(const WarpAcc<MT, NT>& acc, Smem<TO> dst, int ld, int m0, int n0, F f MP_LOC_PARAM) {
  for_each_acc(acc, m0, n0, [&](int r, int c, float v) { dst.store(r * ld + c, from_float<TO>(f(r, c, v)) MP_LOC); });
}

// ---------------------------------------------------------------------------------------
// Float32 CUDA-core path. A thread owns the outputs i = rank + j * nthreads (j < N) of a
// tile, so its accumulators stay in registers across a for-loop.
// ---------------------------------------------------------------------------------------
template <int N>
struct ThreadAcc {
  float v[N];
  MP_DEVICE void zero() {
    MP_UNROLL
    for (int j = 0; j < N; ++j) v[j] = 0.0f;
  }
};

// acc += A * B for shared tiles A (M x K) and B (K x Ncols), any element types, products and
// sums in float. Output i of the M x Ncols tile is (i / Ncols, i % Ncols).
template <Layout LA, Layout LB, int N, class TA, class TB>
MP_DEVICE void simt_mma(ThreadAcc<N>& acc, Smem<TA> A, int lda, Smem<TB> B, int ldb, int M, int Ncols,
                        int K MP_LOC_PARAM) {
  const int nt = block_threads(), tid = thread_rank();
  MP_CHECK(N * nt >= M * Ncols, "simt_mma: too few accumulators per thread for the tile");
  MP_UNROLL
  for (int j = 0; j < N; ++j) {
    const int i = tid + j * nt;
    if (i >= M * Ncols) break;
    const int r = i / Ncols, c = i - r * Ncols;
    float s = acc.v[j];
    for (int k = 0; k < K; ++k) {
      const float a = to_float(LA == kRowMajor ? A.load(r * lda + k MP_LOC) : A.load(k * lda + r MP_LOC));
      const float b = to_float(LB == kRowMajor ? B.load(k * ldb + c MP_LOC) : B.load(c * ldb + k MP_LOC));
      s += a * b;
    }
    acc.v[j] = s;
  }
}

// acc[j] += x[i] for the owned elements i < n of a tile (accum_sum over a for-loop).
template <int N, class T>
MP_DEVICE void accum_add(ThreadAcc<N>& acc, Smem<T> x, int n MP_LOC_PARAM) {
  const int nt = block_threads(), tid = thread_rank();
  MP_CHECK(N * nt >= n, "accum_add: too few accumulators per thread for the tile");
  MP_UNROLL
  for (int j = 0; j < N; ++j) {
    const int i = tid + j * nt;
    if (i < n) acc.v[j] += to_float(x.load(i MP_LOC));
  }
}

// Calls f(i, value) for each owned element i < n.
template <int N, class F>
MP_DEVICE void for_each_owned(const ThreadAcc<N>& acc, int n, F f) {
  const int nt = block_threads(), tid = thread_rank();
  MP_UNROLL
  for (int j = 0; j < N; ++j) {
    const int i = tid + j * nt;
    if (i < n) f(i, acc.v[j]);
  }
}

}  // namespace mp

#endif  // MP_MMA_CUH_
