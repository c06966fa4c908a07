// mp_copy.cuh: block-cooperative tile copies between global and shared memory.
//
// A tile is `rows` x `cols` elements, row-major, with a leading dimension (elements between
// row starts) on each side. Every thread of the block calls the copy with the same
// arguments; the work is split in 16-byte vectors when both sides allow it (every row start
// 16-byte aligned and the row a whole number of vectors), else element by element.
//
// copy_g2s_async issues cp.async (sm_80+, and the emulation) where the synchronous copy would
// use a vector: the data lands only after cp_async_wait<N>() / cp_async_wait_all() in the
// issuing thread, and other threads may read it after the following __syncthreads().
#ifndef MP_COPY_CUH_
#define MP_COPY_CUH_

#include "mp_core.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MP_HAS_CP_ASYNC 1
#endif

namespace mp {

template <class T>
MP_DEVICE bool tile_vectorizable(const void* a, int lda, const void* b, int ldb, int cols) {
  constexpr int kVec = 16 / int(sizeof(T));
  return cols % kVec == 0 && lda % kVec == 0 && ldb % kVec == 0 && is_aligned16(a) && is_aligned16(b);
}

// One 16-byte asynchronous copy global -> shared.
template <class T>
MP_DEVICE void cp_async16(Smem<T> dst, const T* src MP_LOC_PARAM) {
#if defined(MP_EMULATE)
  emu::cp_async(dst.ptr, src, 16, mp_loc_);
#elif defined(MP_HAS_CP_ASYNC)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst.addr()), "l"(src) : "memory");
#else
  dst.template store_vec<uint4>(0, ldg128(src));
#endif
}

// Close the group of cp.async copies issued so far by this thread.
MP_DEVICE void cp_async_commit() {
#if defined(MP_EMULATE)
  emu::cp_async_commit();
#elif defined(MP_HAS_CP_ASYNC)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most N committed groups of this thread are still in flight.
template <int N>
MP_DEVICE void cp_async_wait(MP_LOC_PARAM_ONLY) {
#if defined(MP_EMULATE)
  emu::cp_async_wait(N, mp_loc_);
#elif defined(MP_HAS_CP_ASYNC)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Commit, then wait for every copy of this thread.
MP_DEVICE void cp_async_wait_all(MP_LOC_PARAM_ONLY) {
#if defined(MP_EMULATE)
  emu::cp_async_wait_all(mp_loc_);
#elif defined(MP_HAS_CP_ASYNC)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Global -> shared, synchronous.
template <class T>
MP_DEVICE void copy_g2s(Smem<T> dst, int ld_dst, const T* src, int ld_src, int rows, int cols MP_LOC_PARAM) {
  const int tid = thread_rank(), nt = block_threads();
  if (tile_vectorizable<T>(dst.ptr, ld_dst, src, ld_src, cols)) {
    constexpr int kVec = 16 / int(sizeof(T));
    const int per_row = cols / kVec, total = rows * per_row;
    for (int i = tid; i < total; i += nt) {
      const int r = i / per_row, c = (i - r * per_row) * kVec;
      dst.template store_vec<uint4>(r * ld_dst + c, ldg128(src + r * ld_src + c) MP_LOC);
    }
  } else {
    for (int i = tid; i < rows * cols; i += nt) {
      const int r = i / cols, c = i - r * cols;
      dst.store(r * ld_dst + c, src[r * ld_src + c] MP_LOC);
    }
  }
}

// Global -> shared with cp.async where vectors apply (falls back to copy_g2s otherwise).
// The caller commits/waits (cp_async_commit, cp_async_wait<N>, cp_async_wait_all).
template <class T>
MP_DEVICE void copy_g2s_async(Smem<T> dst, int ld_dst, const T* src, int ld_src, int rows, int cols MP_LOC_PARAM) {
  if (!tile_vectorizable<T>(dst.ptr, ld_dst, src, ld_src, cols)) {
    copy_g2s(dst, ld_dst, src, ld_src, rows, cols MP_LOC);
    return;
  }
  constexpr int kVec = 16 / int(sizeof(T));
  const int tid = thread_rank(), nt = block_threads();
  const int per_row = cols / kVec, total = rows * per_row;
  for (int i = tid; i < total; i += nt) {
    const int r = i / per_row, c = (i - r * per_row) * kVec;
    cp_async16(dst + (r * ld_dst + c), src + r * ld_src + c MP_LOC);
  }
}

// Shared -> global, same element type.
template <class T>
MP_DEVICE void copy_s2g(T* dst, int ld_dst, Smem<T> src, int ld_src, int rows, int cols MP_LOC_PARAM) {
  const int tid = thread_rank(), nt = block_threads();
  if (tile_vectorizable<T>(src.ptr, ld_src, dst, ld_dst, cols)) {
    constexpr int kVec = 16 / int(sizeof(T));
    const int per_row = cols / kVec, total = rows * per_row;
    for (int i = tid; i < total; i += nt) {
      const int r = i / per_row, c = (i - r * per_row) * kVec;
      stg128(dst + r * ld_dst + c, src.template load_vec<uint4>(r * ld_src + c MP_LOC));
    }
  } else {
    for (int i = tid; i < rows * cols; i += nt) {
      const int r = i / cols, c = i - r * cols;
      dst[r * ld_dst + c] = src.load(r * ld_src + c MP_LOC);
    }
  }
}

// Shared -> global through an epilogue: dst[r][c] = from_float<TO>(f(r, c, to_float(src[r][c]))).
template <class TO, class TI, class F>
MP_DEVICE void store_s2g(TO* dst, int ld_dst, Smem<TI> src, int ld_src, int rows, int cols, F f MP_LOC_PARAM) {
  const int tid = thread_rank(), nt = block_threads();
  for (int i = tid; i < rows * cols; i += nt) {
    const int r = i / cols, c = i - r * cols;
    dst[r * ld_dst + c] = from_float<TO>(f(r, c, to_float(src.load(r * ld_src + c MP_LOC))));
  }
}

// Zero the padding of `outer` tiles of rows x cols elements held in a rows_p x cols_p area
// (leading dimension ld, tiles rows_p * ld apart): rows rows..rows_p-1 and columns
// cols..cols_p-1. A warp matrix multiply reads the padded area, so it must hold zeros (the
// products of padded rows are discarded, but 0 * NaN would still poison a sum).
template <class T>
MP_DEVICE void zero_pad(Smem<T> dst, int outer, int rows, int cols, int rows_p, int cols_p, int ld MP_LOC_PARAM) {
  const int tid = thread_rank(), nt = block_threads();
  const T z = from_float<T>(0.0f);
  const int tail_rows = (rows_p - rows) * cols_p, tail_cols = rows * (cols_p - cols);
  for (int b = 0; b < outer; ++b) {
    const Smem<T> t = dst + b * rows_p * ld;
    for (int i = tid; i < tail_rows; i += nt) t.store((rows + i / cols_p) * ld + i % cols_p, z MP_LOC);
    if (cols_p > cols)
      for (int i = tid; i < tail_cols; i += nt) t.store((i / (cols_p - cols)) * ld + cols + i % (cols_p - cols), z MP_LOC);
  }
}

}  // namespace mp

#endif  // MP_COPY_CUH_
