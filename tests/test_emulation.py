"""The device runtime and its CPU emulation (issue 5, items 3 and 4).

The same test kernels (KERNELS_CU) are built twice: by g++ under mp_emulate.h, where they run
here and are checked against NumPy and an independent transcription of the PTX ISA's
fragment layouts, and by nvcc for sm_80 and sm_90 (compile only; nothing runs on a GPU).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mirage_py.codegen import nvcc as nv
from mirage_py.codegen.emulate import (
    RUNTIME_DIR,
    EmulatedProgram,
    EmulationError,
    EmulationResult,
    KernelLaunch,
    build,
    run_kernel,
)

KERNELS_CU = r"""
// Test kernels for the mirage-py device runtime (built for the GPU by nvcc and for the CPU
// under mp_emulate.h).
#include "mp_runtime.cuh"

using mp::bf16;
using mp::f16;
using mp::u16;
using mp::u32;

// Float -> f16 / bf16 -> float, and the bits, for every input value.
extern "C" __global__ void convert_kernel(const float* in, u16* f16_bits, u16* bf16_bits, float* f16_back,
                                          float* bf16_back, int n) {
  mp::for_each_index(n, [&](int i) {
    const f16 h = mp::from_float<f16>(in[i]);
    const bf16 b = mp::from_float<bf16>(in[i]);
    f16_bits[i] = mp::bits_of(h);
    bf16_bits[i] = mp::bits_of(b);
    f16_back[i] = mp::to_float(h);
    bf16_back[i] = mp::to_float(b);
  });
}

// One mma.sync per warp on registers given per lane: a[w][lane][4], b[w][lane][2], c[w][lane][4].
template <class T>
__global__ void mma_raw(const u32* a, const u32* b, const float* c, float* d) {
  const int t = mp::thread_rank();
  mp::FragA fa;
  mp::FragB fb;
  mp::FragC fc, fd;
  for (int i = 0; i < 4; ++i) fa.r[i] = a[t * 4 + i];
  for (int i = 0; i < 2; ++i) fb.r[i] = b[t * 2 + i];
  for (int i = 0; i < 4; ++i) fc.v[i] = c[t * 4 + i];
  mp::mma_16816<T>(fd, fa, fb, fc);
  for (int i = 0; i < 4; ++i) d[t * 4 + i] = fd.v[i];
}

// ldmatrix of NUM 8x8 matrices: mat holds `rows` rows of 8 16-bit values; lane l passes the
// address of row row_of_lane[l]; out[lane][m] receives the lane's register for matrix m.
template <int NUM, bool TRANS>
__global__ void ldmatrix_raw(const u16* mat, int rows, const int* row_of_lane, u32* out) {
  MP_SHARED_BASE(smem);
  const mp::Smem<u16> s = mp::smem_at<u16>(smem, 0);
  mp::copy_g2s(s, 8, mat, 8, rows, 8);
  __syncthreads();
  const int lane = mp::lane_id();
  u32 r[NUM];
  mp::ldmatrix<NUM, TRANS>(r, s + row_of_lane[lane] * 8);
  for (int m = 0; m < NUM; ++m) out[lane * NUM + m] = r[m];
}

// One warp: C (16 x 8*NT, f32) = A (16 x 32) * B (32 x 8*NT), operands stored as LA / LB say,
// staged in shared memory with padded rows and multiplied with ldmatrix + mma.
template <class T, mp::Layout LA, mp::Layout LB, int NT>
__global__ void mma_tile(const T* A, const T* B, float* C) {
  constexpr int M = 16, N = 8 * NT, K = 32;
  constexpr int a_rows = LA == mp::kRowMajor ? M : K, a_cols = LA == mp::kRowMajor ? K : M;
  constexpr int b_rows = LB == mp::kRowMajor ? K : N, b_cols = LB == mp::kRowMajor ? N : K;
  constexpr int lda = a_cols + 8, ldb = b_cols + 8;
  MP_SHARED_BASE(smem);
  const mp::Smem<T> sA = mp::smem_at<T>(smem, 0);
  const mp::Smem<T> sB = mp::smem_at<T>(smem, a_rows * lda * sizeof(T));
  mp::copy_g2s(sA, lda, A, a_cols, a_rows, a_cols);
  mp::copy_g2s(sB, ldb, B, b_cols, b_rows, b_cols);
  __syncthreads();
  mp::WarpAcc<1, NT> acc;
  acc.zero();
  mp::warp_mma<T, LA, LB>(acc, sA, lda, sB, ldb, 0, 0, K);
  mp::store_acc<float>(acc, C, N, 0, 0, mp::Identity());
}

// C (M x N, f32) = A (M x K, row-major) * B (K x N, row-major). Block tile 64 x 64, 4 warps
// of 32 x 32, K in steps of 32 through two shared stages filled with cp.async.
// skip = 1 drops the barrier before a stage is refilled (WAR), skip = 2 the one after it
// lands (RAW): the race detector must see both.
template <class T>
__global__ void __launch_bounds__(128) matmul_64x64(const T* A, const T* B, float* C, int, int N, int K, int skip) {
  constexpr int BM = 64, BN = 64, BK = 32, LDA = BK + 8, LDB = BN + 8;
  constexpr unsigned kStage = (BM * LDA + BK * LDB) * sizeof(T);
  MP_SHARED_BASE(smem);
  const int m_blk = blockIdx.y * BM, n_blk = blockIdx.x * BN;
  const int warp = mp::warp_id(), wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  auto stage_a = [&](int s) { return mp::smem_at<T>(smem, s * kStage); };
  auto stage_b = [&](int s) { return mp::smem_at<T>(smem, s * kStage + BM * LDA * sizeof(T)); };
  auto load = [&](int s, int k0) {
    mp::copy_g2s_async(stage_a(s), LDA, A + m_blk * K + k0, K, BM, BK);
    mp::copy_g2s_async(stage_b(s), LDB, B + k0 * N + n_blk, N, BK, BN);
    mp::cp_async_commit();
  };
  mp::WarpAcc<2, 4> acc;
  acc.zero();
  const int nk = K / BK;
  load(0, 0);
  for (int kt = 0; kt < nk; ++kt) {
    if (kt + 1 < nk) {
      load((kt + 1) & 1, (kt + 1) * BK);
      mp::cp_async_wait<1>();
    } else {
      mp::cp_async_wait<0>();
    }
    if (skip != 2) __syncthreads();
    mp::warp_mma<T, mp::kRowMajor, mp::kRowMajor>(acc, stage_a(kt & 1), LDA, stage_b(kt & 1), LDB, wm, wn, BK);
    if (skip != 1) __syncthreads();
  }
  mp::store_acc<float>(acc, C + m_blk * N + n_blk, N, wm, wn, mp::Identity());
}

// Float32 CUDA-core path: C (M x N) = A (M x K, row-major) * B^T, B given as [N][K].
// Block tile 32 x 32, K in steps of 16, 128 threads with 8 accumulators each.
extern "C" __global__ void matmul_simt_f32(const float* A, const float* Bt, float* C, int, int N, int K) {
  constexpr int BM = 32, BN = 32, BK = 16;
  MP_SHARED_BASE(smem);
  const mp::Smem<float> sA = mp::smem_at<float>(smem, 0);
  const mp::Smem<float> sB = mp::smem_at<float>(smem, BM * BK * sizeof(float));
  const int m_blk = blockIdx.y * BM, n_blk = blockIdx.x * BN;
  mp::ThreadAcc<8> acc;
  acc.zero();
  for (int k0 = 0; k0 < K; k0 += BK) {
    mp::copy_g2s(sA, BK, A + m_blk * K + k0, K, BM, BK);
    mp::copy_g2s(sB, BK, Bt + n_blk * K + k0, K, BN, BK);
    __syncthreads();
    mp::simt_mma<mp::kRowMajor, mp::kColMajor>(acc, sA, BK, sB, BK, BM, BN, BK);
    __syncthreads();
  }
  mp::for_each_owned(acc, BM * BN, [&](int i, float v) { C[(m_blk + i / BN) * N + n_blk + i % BN] = v; });
}

// RMSNorm rows: Y = X / sqrt(mean(X^2) + eps) * W; a block takes 8 rows of `cols` (<= 256).
template <class T>
__global__ void rmsnorm_rows(const T* X, const T* W, T* Y, int cols, float eps) {
  constexpr int R = 8;
  MP_SHARED_BASE(smem);
  const mp::Smem<T> sx = mp::smem_at<T>(smem, 0);
  const mp::Smem<float> scale = mp::smem_at<float>(smem, R * 256 * sizeof(T));
  const T* x = X + blockIdx.x * R * cols;
  mp::copy_g2s(sx, cols, x, cols, R, cols);
  __syncthreads();
  mp::reduce_rows_map(sx, cols, R, cols, mp::square,
                      [&](int r, float s) { scale.store(r, rsqrtf(s / float(cols) + eps)); });
  __syncthreads();
  T* y = Y + blockIdx.x * R * cols;
  mp::for_each_index(R * cols, [&](int i) {
    const int r = i / cols, c = i % cols;
    y[i] = mp::from_float<T>(mp::to_float(sx.load(i)) * scale.load(r) * mp::to_float(W[c]));
  });
}

// Column sums of a rows x cols float matrix, and the block-wide sum of all of it.
extern "C" __global__ void sums_kernel(const float* x, int rows, int cols, float* col_sums, float* totals) {
  MP_SHARED_BASE(smem);
  const mp::Smem<float> sx = mp::smem_at<float>(smem, 0);
  const mp::Smem<float> scratch = mp::smem_at<float>(smem, rows * cols * sizeof(float));
  mp::copy_g2s(sx, cols, x, cols, rows, cols);
  __syncthreads();
  mp::reduce_cols(sx, cols, rows, cols, [&](int c, float s) { col_sums[c] = s; });
  float mine = 0.0f;
  mp::for_each_index(rows * cols, [&](int i) { mine += sx.load(i); });
  totals[mp::thread_rank()] = mp::block_sum(mine, scratch);
}

// Warp shuffles: out[k][t] for a list of shuffle forms, v = 3 t + 1.
extern "C" __global__ void shuffle_kernel(int* out, float* sums) {
  const int t = mp::thread_rank(), n = mp::block_threads();
  const int v = 3 * t + 1;
  const unsigned full = 0xffffffffu;
  int k = 0;
  out[n * k++ + t] = __shfl_xor_sync(full, v, 1);
  out[n * k++ + t] = __shfl_xor_sync(full, v, 16);
  out[n * k++ + t] = __shfl_down_sync(full, v, 3);
  out[n * k++ + t] = __shfl_up_sync(full, v, 5);
  out[n * k++ + t] = __shfl_sync(full, v, 7);
  out[n * k++ + t] = __shfl_xor_sync(full, v, 4, 8);
  out[n * k++ + t] = __shfl_down_sync(full, v, 3, 16);
  out[n * k++ + t] = __shfl_up_sync(full, v, 5, 16);
  out[n * k++ + t] = __shfl_sync(full, v, 3, 8);
  sums[t] = mp::warp_sum(float(v));
}

// Three barriers guard a shared slot per thread; `skip` (1..4) drops one of them.
extern "C" __global__ void race_kernel(const float* in, float* out, int skip) {
  MP_SHARED_BASE(smem);
  const mp::Smem<float> s = mp::smem_at<float>(smem, 0);
  const int t = mp::thread_rank(), n = mp::block_threads();
  s.store(t, in[t]);
  if (skip != 1) __syncthreads();  // RAW: the neighbour's slot is read next
  const float v = s.load((t + 1) % n);
  if (skip != 2) __syncthreads();  // WAR: the slot read above is overwritten next
  s.store(t, v * 2.0f);
  if (skip != 3) __syncthreads();  // WAW: the neighbour's slot is written next
  s.store((t + 1) % n, v);
  if (skip != 4) __syncthreads();  // RAW again
  out[t] = s.load(t);
}

// Misuse the emulator must report: 1 = shared access out of bounds, 2 = divergent
// __syncthreads, 3 = cp.async never waited for, 4 = deadlock (half a warp at __syncthreads,
// the other half at __syncwarp), 5 = an ldmatrix row address not 16-byte aligned.
extern "C" __global__ void misuse_kernel(const float* in, float* out, int what) {
  MP_SHARED_BASE(smem);
  const mp::Smem<float> s = mp::smem_at<float>(smem, 0);
  const int t = mp::thread_rank();
  if (what == 1 && t == 0) s.store(64, 1.0f);
  if (what == 2) {
    if (t < 16) {
      __syncthreads();
    } else {
      __syncthreads();
    }
  }
  if (what == 3 && t < 4) mp::cp_async16(s + 4 * t, in + 4 * t);
  if (what == 4) {
    if (t < 16) {
      __syncthreads();
    } else {
      __syncwarp();
    }
  }
  if (what == 5) {
    mp::fill(s, 64, 0.0f);
    __syncthreads();
    u32 r[1];
    mp::ldmatrix<1, false>(r, s.as<u16>() + (8 * (t & 7) + 1));
  }
  out[t] = in[t];
}
"""

# name -> expression naming the kernel (a template instance or a plain kernel).
KERNELS: dict[str, str] = {
    "convert_kernel": "convert_kernel",
    "mma_raw_f16": "&mma_raw<mp::f16>",
    "mma_raw_bf16": "&mma_raw<mp::bf16>",
    **{
        f"ldm_x{num}_{'t' if trans else 'n'}": f"&ldmatrix_raw<{num}, {'true' if trans else 'false'}>"
        for num in (1, 2, 4)
        for trans in (False, True)
    },
    **{
        f"tile_{t}_{la[0]}{lb[0]}_{nt}": f"&mma_tile<mp::{t}, mp::k{la}Major, mp::k{lb}Major, {nt}>"
        for t in ("f16", "bf16")
        for la in ("Row", "Col")
        for lb in ("Row", "Col")
        for nt in (1, 2)
    },
    "tile_f16_CR_3": "&mma_tile<mp::f16, mp::kColMajor, mp::kRowMajor, 3>",
    "tile_bf16_RC_3": "&mma_tile<mp::bf16, mp::kRowMajor, mp::kColMajor, 3>",
    "matmul_f16": "&matmul_64x64<mp::f16>",
    "matmul_bf16": "&matmul_64x64<mp::bf16>",
    "matmul_simt_f32": "matmul_simt_f32",
    "rms_f16": "&rmsnorm_rows<mp::f16>",
    "rms_bf16": "&rmsnorm_rows<mp::bf16>",
    "rms_f32": "&rmsnorm_rows<float>",
    "sums_kernel": "sums_kernel",
    "shuffle_kernel": "shuffle_kernel",
    "race_kernel": "race_kernel",
    "misuse_kernel": "misuse_kernel",
}

DTYPE_NAMES = ("f16", "bf16")


# ---------------------------------------------------------------------------------------
# NumPy side: 16-bit bit patterns and the PTX ISA's fragment layouts, transcribed here from
# the ISA's text ("Matrix Fragments for mma.m16n8k16 with floating point type", "ldmatrix")
# independently of mp_layout.cuh.
# ---------------------------------------------------------------------------------------
def to_bits(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to `dtype` (nearest even) and return their 16-bit patterns."""
    x32 = np.asarray(x, dtype=np.float32)
    if dtype == "f16":
        return x32.astype(np.float16).view(np.uint16)
    u = x32.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bits(b: np.ndarray, dtype: str) -> np.ndarray:
    b = np.asarray(b, dtype=np.uint16)
    if dtype == "f16":
        return b.view(np.float16).astype(np.float64)
    return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def ptx_a(lane: int, i: int) -> tuple[int, int]:
    group, tig = lane >> 2, lane % 4
    row = group if (0 <= i < 2 or 4 <= i < 6) else group + 8
    col = tig * 2 + (i & 1) if i < 4 else tig * 2 + (i & 1) + 8
    return row, col


def ptx_b(lane: int, i: int) -> tuple[int, int]:
    group, tig = lane >> 2, lane % 4
    row = tig * 2 + (i & 1) if i < 2 else tig * 2 + (i & 1) + 8
    return row, group


def ptx_c(lane: int, i: int) -> tuple[int, int]:
    group, tig = lane >> 2, lane % 4
    row = group if i < 2 else group + 8
    return row, tig * 2 + (i & 1)


def pack_regs(bits: np.ndarray, coord: Callable[[int, int], tuple[int, int]], nelem: int) -> np.ndarray:
    """Per-lane 32-bit registers of a 16-bit matrix (element 2j low half of register j)."""
    regs = np.zeros((32, nelem // 2), dtype=np.uint32)
    for lane in range(32):
        for i in range(nelem):
            r, c = coord(lane, i)
            regs[lane, i // 2] |= np.uint32(bits[r, c]) << np.uint32(16 * (i % 2))
    return regs


# ---------------------------------------------------------------------------------------
# Build once per session (cached by content across sessions)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kernels") / "kernels.cu"
    path.write_text(KERNELS_CU)
    return path


@pytest.fixture(scope="module")
def prog(kernel_file: Path) -> EmulatedProgram:
    return build([kernel_file], [f"{name}={expr}" for name, expr in KERNELS.items()])


def launch1(
    prog: EmulatedProgram,
    kernel: str,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    smem: int,
    args: tuple[str | int | float, ...],
    buffers: dict[str, np.ndarray],
    env: dict[str, str] | None = None,
) -> EmulationResult:
    return prog.run([KernelLaunch(kernel, grid, block, smem, args)], buffers, env=env)


# ---------------------------------------------------------------------------------------
# Element types
# ---------------------------------------------------------------------------------------
def test_conversions_round_to_nearest_even(prog: EmulatedProgram) -> None:
    rng = np.random.default_rng(0)
    special = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            65519.0,
            65520.0,
            1e6,
            -1e6,
            6.0e-8,
            3.0e-8,
            2.98e-8,
            6.1e-5,
            1e-40,
            np.inf,
            -np.inf,
            np.nan,
            1.00048828125,
            1.000732421875,
            3.3895e38,
        ],
        dtype=np.float32,
    )
    ties = (np.arange(1, 200, dtype=np.uint32) << 13 | 0x1000).view(np.float32) * np.float32(1.0)
    x = np.concatenate(
        [special, ties, rng.normal(0, 100, 2000).astype(np.float32), (rng.normal(0, 1, 500) * 1e-6).astype(np.float32)]
    )
    n = x.size
    bufs = {
        "x": x,
        "h": np.zeros(n, np.uint16),
        "b": np.zeros(n, np.uint16),
        "hb": np.zeros(n, np.float32),
        "bb": np.zeros(n, np.float32),
    }
    res = launch1(prog, "convert_kernel", (4, 1, 1), (128, 1, 1), 0, ("@x", "@h", "@b", "@hb", "@bb", n), bufs)
    res.check()
    with np.errstate(over="ignore"):
        want_h = x.astype(np.float16)
    got_h = res.buffers["h"].view(np.float16)
    assert np.array_equal(got_h, want_h, equal_nan=True)
    assert np.array_equal(res.buffers["h"][~np.isnan(x)], want_h.view(np.uint16)[~np.isnan(x)])
    assert np.array_equal(res.buffers["b"][~np.isnan(x)], to_bits(x, "bf16")[~np.isnan(x)])
    assert np.all(np.isnan(from_bits(res.buffers["b"][np.isnan(x)], "bf16")))
    assert np.array_equal(res.buffers["hb"], want_h.astype(np.float32), equal_nan=True)
    assert np.array_equal(res.buffers["bb"], from_bits(res.buffers["b"], "bf16").astype(np.float32), equal_nan=True)


# ---------------------------------------------------------------------------------------
# mma.sync m16n8k16 and ldmatrix, lane by lane
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("values", ["integers", "normal"])
def test_mma_sync_m16n8k16_against_numpy(prog: EmulatedProgram, dtype: str, values: str) -> None:
    """Registers packed here from the ISA's layout; two warps, one problem each. Small
    integers make every product and sum exact, so any layout slip changes the answer."""
    rng = np.random.default_rng(1 if dtype == "f16" else 2)
    nwarps = 2
    a_regs, b_regs, c_regs, want = [], [], [], []
    for _ in range(nwarps):
        if values == "integers":
            A = rng.integers(-8, 9, (16, 16)).astype(np.float32)
            B = rng.integers(-8, 9, (16, 8)).astype(np.float32)
            C = rng.integers(-64, 65, (16, 8)).astype(np.float32)
        else:
            A = rng.normal(0, 1, (16, 16)).astype(np.float32)
            B = rng.normal(0, 1, (16, 8)).astype(np.float32)
            C = rng.normal(0, 1, (16, 8)).astype(np.float32)
        Ab, Bb = to_bits(A, dtype), to_bits(B, dtype)
        a_regs.append(pack_regs(Ab, ptx_a, 8))
        b_regs.append(pack_regs(Bb, ptx_b, 4))
        c_regs.append(np.array([[C[ptx_c(lane, i)] for i in range(4)] for lane in range(32)], np.float32))
        want.append(from_bits(Ab, dtype) @ from_bits(Bb, dtype) + C.astype(np.float64))
    bufs = {
        "a": np.concatenate(a_regs),
        "b": np.concatenate(b_regs),
        "c": np.concatenate(c_regs),
        "d": np.zeros((32 * nwarps, 4), np.float32),
    }
    res = launch1(prog, f"mma_raw_{dtype}", (1, 1, 1), (32 * nwarps, 1, 1), 0, ("@a", "@b", "@c", "@d"), bufs)
    res.check()
    d = res.buffers["d"]
    for w in range(nwarps):
        got = np.zeros((16, 8))
        for lane in range(32):
            for i in range(4):
                got[ptx_c(lane, i)] = d[32 * w + lane, i]
        if values == "integers":
            assert np.array_equal(got, want[w])
        else:
            np.testing.assert_allclose(got, want[w], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_against_isa(prog: EmulatedProgram, num: int, trans: bool) -> None:
    """Each lane passes the address of a row picked at random; the registers must hold the
    elements the ISA assigns to that lane, from the rows the address lanes named."""
    rng = np.random.default_rng(10 * num + trans)
    rows = 40
    mat = rng.permutation(rows * 8).astype(np.uint16).reshape(rows, 8) + np.uint16(1000)
    row_of_lane = rng.integers(0, rows, 32).astype(np.int32)
    bufs = {"mat": mat, "rol": row_of_lane, "out": np.zeros((32, num), np.uint32)}
    kernel = f"ldm_x{num}_{'t' if trans else 'n'}"
    res = launch1(prog, kernel, (1, 1, 1), (32, 1, 1), rows * 16, ("@mat", rows, "@rol", "@out"), bufs)
    res.check()
    want = np.zeros((32, num), np.uint32)
    for lane in range(32):
        group, tig = lane >> 2, lane % 4
        for m in range(num):
            for j in range(2):
                r, c = (tig * 2 + j, group) if trans else (group, tig * 2 + j)
                want[lane, m] |= np.uint32(mat[row_of_lane[8 * m + r], c]) << np.uint32(16 * j)
    assert np.array_equal(res.buffers["out"], want)


TILE_CASES = [(t, la, lb, nt) for t in DTYPE_NAMES for la in "RC" for lb in "RC" for nt in (1, 2)]
TILE_CASES += [("f16", "C", "R", 3), ("bf16", "R", "C", 3)]


@pytest.mark.parametrize(("dtype", "la", "lb", "nt"), TILE_CASES)
def test_ldmatrix_mma_tile(prog: EmulatedProgram, dtype: str, la: str, lb: str, nt: int) -> None:
    """A (16 x 32) and B (32 x 8*nt) staged in shared memory either way round (a transpose
    folded into ldmatrix .trans), loaded with ldmatrix, multiplied with mma.sync."""
    rng = np.random.default_rng(hash((dtype, la, lb, nt)) % 2**32)
    n = 8 * nt
    A = rng.integers(-6, 7, (16, 32)).astype(np.float32)
    B = rng.integers(-6, 7, (32, n)).astype(np.float32)
    a_store = A if la == "R" else np.ascontiguousarray(A.T)
    b_store = B if lb == "R" else np.ascontiguousarray(B.T)
    smem = (a_store.shape[0] * (a_store.shape[1] + 8) + b_store.shape[0] * (b_store.shape[1] + 8)) * 2
    bufs = {"A": to_bits(a_store, dtype), "B": to_bits(b_store, dtype), "C": np.zeros((16, n), np.float32)}
    res = launch1(prog, f"tile_{dtype}_{la}{lb}_{nt}", (1, 1, 1), (32, 1, 1), smem, ("@A", "@B", "@C"), bufs)
    res.check()
    assert np.array_equal(res.buffers["C"], A.astype(np.float64) @ B.astype(np.float64))


# ---------------------------------------------------------------------------------------
# Kernels made of the runtime's parts
# ---------------------------------------------------------------------------------------
MATMUL_SMEM = 2 * (64 * 40 + 32 * 72) * 2


def run_matmul(prog: EmulatedProgram, dtype: str, skip: int, seed: int = 3) -> tuple[EmulationResult, np.ndarray]:
    rng = np.random.default_rng(seed)
    M = N = K = 128
    A = rng.normal(0, 1, (M, K)).astype(np.float32)
    B = rng.normal(0, 1, (K, N)).astype(np.float32)
    bufs = {"A": to_bits(A, dtype), "B": to_bits(B, dtype), "C": np.zeros((M, N), np.float32)}
    res = launch1(
        prog,
        f"matmul_{dtype}",
        (N // 64, M // 64, 1),
        (128, 1, 1),
        MATMUL_SMEM,
        ("@A", "@B", "@C", M, N, K, skip),
        bufs,
    )
    want = from_bits(bufs["A"], dtype) @ from_bits(bufs["B"], dtype)
    return res, want


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_warp_tiled_matmul(prog: EmulatedProgram, dtype: str) -> None:
    """128 x 128 x 128 in 64 x 64 blocks of 4 warps, two cp.async stages, against NumPy."""
    res, want = run_matmul(prog, dtype, skip=0)
    res.check()
    np.testing.assert_allclose(res.buffers["C"], want, rtol=1e-4, atol=1e-4)


def test_simt_f32_matmul(prog: EmulatedProgram) -> None:
    rng = np.random.default_rng(4)
    M, N, K = 64, 96, 48
    A = rng.normal(0, 1, (M, K)).astype(np.float32)
    B = rng.normal(0, 1, (K, N)).astype(np.float32)
    bufs = {"A": A, "Bt": np.ascontiguousarray(B.T), "C": np.zeros((M, N), np.float32)}
    res = launch1(
        prog, "matmul_simt_f32", (N // 32, M // 32, 1), (128, 1, 1), 2 * 32 * 16 * 4, ("@A", "@Bt", "@C", M, N, K), bufs
    )
    res.check()
    np.testing.assert_allclose(res.buffers["C"], A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32"])
def test_rmsnorm_with_row_reduction(prog: EmulatedProgram, dtype: str) -> None:
    rng = np.random.default_rng(5)
    rows, cols, eps = 32, 192, 1e-6
    X = rng.normal(0, 2, (rows, cols)).astype(np.float32)
    W = rng.normal(1, 0.1, cols).astype(np.float32)
    if dtype == "f32":
        xs, ws, y0 = X, W, np.zeros_like(X)
        xf, wf = X.astype(np.float64), W.astype(np.float64)
    else:
        xs, ws, y0 = to_bits(X, dtype), to_bits(W, dtype), np.zeros((rows, cols), np.uint16)
        xf, wf = from_bits(xs, dtype), from_bits(ws, dtype)
    itemsize = 4 if dtype == "f32" else 2
    res = launch1(
        prog,
        f"rms_{dtype}",
        (rows // 8, 1, 1),
        (128, 1, 1),
        8 * 256 * itemsize + 8 * 4,
        ("@X", "@W", "@Y", cols, eps),
        {"X": xs, "W": ws, "Y": y0},
    )
    res.check()
    want = xf / np.sqrt(np.mean(xf**2, axis=1, keepdims=True) + eps) * wf
    got = res.buffers["Y"].astype(np.float64) if dtype == "f32" else from_bits(res.buffers["Y"], dtype)
    tol = {"f32": 1e-5, "f16": 2e-3, "bf16": 1.6e-2}[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_column_and_block_sums(prog: EmulatedProgram) -> None:
    rng = np.random.default_rng(6)
    rows, cols, threads = 24, 40, 96
    x = rng.normal(0, 1, (rows, cols)).astype(np.float32)
    bufs = {"x": x, "cs": np.zeros(cols, np.float32), "tot": np.zeros(threads, np.float32)}
    res = launch1(
        prog,
        "sums_kernel",
        (1, 1, 1),
        (threads, 1, 1),
        (rows * cols + threads // 32) * 4,
        ("@x", rows, cols, "@cs", "@tot"),
        bufs,
    )
    res.check()
    np.testing.assert_allclose(res.buffers["cs"], x.sum(axis=0, dtype=np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.buffers["tot"], np.full(threads, x.sum(dtype=np.float64)), rtol=1e-5, atol=1e-4)
    assert len(set(res.buffers["tot"].tolist())) == 1  # every thread got the same total


def test_warp_shuffles(prog: EmulatedProgram) -> None:
    n = 64
    bufs = {"out": np.zeros((9, n), np.int32), "sums": np.zeros(n, np.float32)}
    res = launch1(prog, "shuffle_kernel", (1, 1, 1), (n, 1, 1), 0, ("@out", "@sums"), bufs)
    res.check()

    def v(t: int) -> int:
        return 3 * t + 1

    def xor(t: int, m: int, w: int = 32) -> int:
        lane, base = t % 32, t - t % 32
        src = lane ^ m
        return v(t) if src // w > lane // w else v(base + src)

    def down(t: int, d: int, w: int = 32) -> int:
        return v(t) if (t % 32) % w + d >= w else v(t + d)

    def up(t: int, d: int, w: int = 32) -> int:
        return v(t) if (t % 32) % w < d else v(t - d)

    def idx(t: int, s: int, w: int = 32) -> int:
        lane, base = t % 32, t - t % 32
        return v(base + (lane // w) * w + s % w)

    forms = [
        lambda t: xor(t, 1),
        lambda t: xor(t, 16),
        lambda t: down(t, 3),
        lambda t: up(t, 5),
        lambda t: idx(t, 7),
        lambda t: xor(t, 4, 8),
        lambda t: down(t, 3, 16),
        lambda t: up(t, 5, 16),
        lambda t: idx(t, 3, 8),
    ]
    want = np.array([[f(t) for t in range(n)] for f in forms], np.int32)
    assert np.array_equal(res.buffers["out"], want)
    warp_sums = [sum(v(t) for t in range(w * 32, w * 32 + 32)) for w in range(2)]
    assert res.buffers["sums"].tolist() == [float(warp_sums[t // 32]) for t in range(n)]


# ---------------------------------------------------------------------------------------
# The race detector
# ---------------------------------------------------------------------------------------
def run_race(prog: EmulatedProgram, skip: int) -> EmulationResult:
    n = 64
    x = np.arange(n, dtype=np.float32) + 1
    return launch1(
        prog,
        "race_kernel",
        (1, 1, 1),
        (n, 1, 1),
        n * 4,
        ("@in", "@out", skip),
        {"in": x, "out": np.zeros(n, np.float32)},
        env={"MP_EMU_MAX_REPORTS": "1000"},
    )


def test_race_free_kernel_reports_nothing(prog: EmulatedProgram) -> None:
    res = run_race(prog, 0)
    res.check()
    assert res.race_reports == []
    assert np.array_equal(res.buffers["out"], np.arange(64, dtype=np.float32) + 1)


@pytest.mark.parametrize(
    ("skip", "hazard", "kind"),
    [(1, "RAW", "read/write"), (2, "WAR", "read/write"), (3, "WAW", "write/write"), (4, "RAW", "read/write")],
)
def test_missing_barrier_is_reported_deterministically(
    prog: EmulatedProgram, skip: int, hazard: str, kind: str
) -> None:
    """Each dropped barrier leaves one conflict per shared slot (64), whatever order the
    threads ran in: three runs give the same reports, line for line."""
    runs = [run_race(prog, skip) for _ in range(3)]
    for res in runs:
        assert res.returncode == 1 and res.errors == 0
        assert res.races == 64, hazard
        assert len(res.race_reports) == 64
        assert all(f"{kind} conflict in kernel 'race_kernel'" in r for r in res.race_reports)
    assert runs[0].race_reports == runs[1].race_reports == runs[2].race_reports
    # The report names both accesses by thread and line.
    first = runs[0].race_reports[0]
    assert re.search(r"thread \(\d+,0,0\) (reads|writes) at kernels\.cu:\d+, thread \(\d+,0,0\) (reads|writes)", first)


@pytest.mark.parametrize("skip", [1, 2], ids=["WAR", "RAW"])
def test_matmul_without_a_barrier_races(prog: EmulatedProgram, skip: int) -> None:
    """The warp-tiled matmul with one of its two barriers removed: the stage being refilled
    by cp.async (WAR) or read before every thread's copy landed (RAW)."""
    counts = set()
    for _ in range(2):
        res, _ = run_matmul(prog, "f16", skip=skip)
        assert res.returncode == 1 and res.races > 0 and res.errors == 0
        assert all("read/write conflict in kernel 'matmul_f16'" in r for r in res.race_reports)
        counts.add(res.races)
    assert len(counts) == 1


# ---------------------------------------------------------------------------------------
# Other misuse the emulator reports
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("what", "message"),
    [
        (1, "outside the 256 bytes"),
        (2, "divergent __syncthreads"),
        (3, "never waited for"),
        (5, "misaligned 16-byte shared-memory read"),
    ],
)
def test_misuse_is_reported(prog: EmulatedProgram, what: int, message: str) -> None:
    n = 32
    x = np.arange(n, dtype=np.float32)
    res = launch1(
        prog,
        "misuse_kernel",
        (1, 1, 1),
        (n, 1, 1),
        256,
        ("@in", "@out", what),
        {"in": x, "out": np.zeros(n, np.float32)},
    )
    assert res.returncode == 1 and res.errors >= 1
    assert any(message in r for r in res.error_reports), res.stderr
    assert np.array_equal(res.buffers["out"], x)


def test_deadlock_is_fatal_and_explained(prog: EmulatedProgram) -> None:
    n = 32
    res = launch1(
        prog,
        "misuse_kernel",
        (1, 1, 1),
        (n, 1, 1),
        256,
        ("@in", "@out", 4),
        {"in": np.zeros(n, np.float32), "out": np.zeros(n, np.float32)},
        env={"MP_EMU_DEADLOCK_MS": "300"},
    )
    assert res.returncode == 3
    assert "deadlock" in res.stderr
    assert "waits at __syncthreads" in res.stderr and "waits at warp collective" in res.stderr


def test_bad_launch_arguments_are_errors(prog: EmulatedProgram) -> None:
    with pytest.raises(EmulationError, match="could not start|takes 3 arguments"):
        launch1(prog, "race_kernel", (1, 1, 1), (64, 1, 1), 256, ("@in",), {"in": np.zeros(64, np.float32)}).check()
    with pytest.raises(ValueError):
        KernelLaunch("k", (0, 1, 1), (1, 1, 1), 0, ()).command()


def test_run_kernel_and_build_cache(kernel_file: Path, prog: EmulatedProgram, tmp_path: Path) -> None:
    again = build([kernel_file], [f"{name}={expr}" for name, expr in KERNELS.items()])
    assert again.path == prog.path  # same content, same cached program
    # A copy of the runtime (as an emitted OUT/runtime holds) builds the same way.
    runtime_copy = shutil.copytree(RUNTIME_DIR, tmp_path / "runtime")
    n = 64
    res = run_kernel(
        kernel_file,
        "race_kernel",
        (1, 1, 1),
        (n, 1, 1),
        n * 4,
        [np.ones(n, np.float32), np.zeros(n, np.float32), 0],
        runtime_dir=runtime_copy,
    )
    res.check()
    assert np.array_equal(res.buffers["arg1"], np.ones(n, np.float32))
    with pytest.raises(EmulationError, match="no mp_emulate.h"):
        build([kernel_file], ["race_kernel"], runtime_dir=tmp_path)


# ---------------------------------------------------------------------------------------
# The GPU build: nvcc -cubin for sm_80 and sm_90 with ptxas's resource report
# ---------------------------------------------------------------------------------------
PTXAS_SAMPLE = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z7mma_rawI6__halfEvPKjS2_PKfPf' for 'sm_80'
ptxas info    : Function properties for _Z7mma_rawI6__halfEvPKjS2_PKfPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 26 registers, used 0 barriers, 384 bytes cmem[0]
ptxas info    : Compile time = 1.2 ms
ptxas info    : Function properties for __internal_helper
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'race_kernel' for 'sm_90'
ptxas info    : Function properties for race_kernel
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 14 registers, used 1 barriers, 256 bytes smem
"""


def test_parse_ptxas_verbose() -> None:
    res = nv.parse_ptxas_verbose(PTXAS_SAMPLE)
    assert set(res) == {"_Z7mma_rawI6__halfEvPKjS2_PKfPf", "race_kernel"}
    mma = res["_Z7mma_rawI6__halfEvPKjS2_PKfPf"]
    assert (mma.arch, mma.registers, mma.shared_bytes, mma.barriers, mma.constant_bytes) == ("sm_80", 26, 0, 0, 384)
    race = res["race_kernel"]
    assert (race.arch, race.registers, race.shared_bytes, race.barriers) == ("sm_90", 14, 256, 1)
    assert (race.stack_bytes, race.spill_stores, race.spill_loads, race.constant_bytes) == (16, 8, 12, None)


needs_nvcc = pytest.mark.skipif(nv.find_nvcc() is None, reason="nvcc not found: the GPU build is not checked")


@pytest.fixture(scope="module")
def nvcc_unit(kernel_file: Path) -> Path:
    """The kernels file plus references that make nvcc instantiate every template kernel."""
    unit = kernel_file.with_name("kernels_nvcc.cu")
    refs = ",\n  ".join(f"(void*)({expr})" for expr in KERNELS.values())
    unit.write_text(f'#include "kernels.cu"\nvoid* mp_test_kernels[] = {{\n  {refs}}};\n')
    return unit


@needs_nvcc
@pytest.mark.parametrize("arch", nv.TARGETS)
def test_nvcc_builds_test_kernels(nvcc_unit: Path, arch: str) -> None:
    build_ = nv.compile_cubin(nvcc_unit, arch)
    assert build_.cubin.stat().st_size > 0
    assert "warning" not in build_.log.lower(), build_.log
    assert len(build_.kernels) == len(KERNELS)
    for k in build_.kernels.values():
        assert k.arch == arch and k.registers > 0
        assert k.spill_stores == 0 and k.spill_loads == 0, k
    mm = build_.find("matmul_64x64<__half>")
    assert mm.registers <= 128 and mm.barriers == 1  # fits the 128-thread launch bound
    print(f"\n{nv.resource_table([build_])}")


@needs_nvcc
def test_gpu_build_uses_the_intended_instructions(nvcc_unit: Path) -> None:
    ptx = nv.compile_ptx(nvcc_unit, "sm_80")
    for instr in [
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        *(f"ldmatrix.sync.aligned.m8n8.x{n}{t}.shared.b16" for n in (1, 2, 4) for t in ("", ".trans")),
        "cp.async.cg.shared.global",
        "cp.async.wait_group",
        "shfl.sync.bfly.b32",
    ]:
        assert instr in ptx, instr


@pytest.mark.skipif(nv.find_nvrtc() is None, reason="libnvrtc not found: NVRTC (CuPy's compiler) not checked")
def test_nvrtc_accepts_runtime_and_kernels() -> None:
    """The same source through NVRTC, as CuPy's RawModule compiles it (C++17, no host headers)."""
    exprs = [e for e in KERNELS.values() if "<" in e]
    try:
        res = nv.nvrtc_compile(KERNELS_CU, "compute_80", name_expressions=exprs)
    except OSError as exc:  # a libnvrtc that cannot load its builtins library
        pytest.skip(f"libnvrtc unusable here: {exc}")
    if not res.ok and "libnvrtc-builtins" in res.log:
        pytest.skip(f"libnvrtc unusable here: {res.log.strip()}")
    assert res.ok, res.log
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in res.ptx
    assert all(name.startswith("_Z") for name in res.lowered_names.values())
