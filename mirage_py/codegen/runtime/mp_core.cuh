// mp_core.cuh: build configuration, element types, thread indexing, and the shared-memory
// accessor through which every shared-memory access of a kernel goes.
//
// Two builds of the same source:
//   - GPU (nvcc or NVRTC, __CUDACC__ defined): C++17, no headers beyond cuda_fp16.h and
//     cuda_bf16.h; warp instructions are inline PTX.
//   - CPU emulation (g++ -std=c++20, mp_emulate.h): the same functions, with shared-memory
//     accesses logged for the race detector and warp instructions emulated lane by lane.
#ifndef MP_CORE_CUH_
#define MP_CORE_CUH_

#if !defined(__CUDACC__)
#include "mp_emulate.h"
#endif
#include "mp_layout.cuh"

#if defined(__CUDACC__)
#if !defined(MP_NO_CUDA_FP_HEADERS)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif
#define MP_DEVICE __device__ __forceinline__
#define MP_LOC_PARAM
#define MP_LOC_PARAM_ONLY
#define MP_LOC
#define MP_SMEM_RECORD(ptr, bytes, is_write) ((void)0)
#define MP_SYNCTHREADS() __syncthreads()
#define MP_UNROLL _Pragma("unroll")
// Declares `name` (unsigned char*) as the start of the block's dynamic shared memory. Kernels
// place every shared tile at a planned byte offset from it (mp::smem_at). The array is
// declared once, in mp::dynamic_smem, so kernels of either linkage can share it.
#define MP_SHARED_BASE(name) unsigned char* const name = ::mp::dynamic_smem()
#else
#define MP_DEVICE inline
#define MP_SMEM_RECORD(ptr, bytes, is_write) ::mp::emu::smem_access((ptr), (bytes), (is_write), mp_loc_)
// A __syncthreads inside a runtime function, attributed to the kernel line that called it.
#define MP_SYNCTHREADS() __syncthreads(mp_loc_)
#define MP_UNROLL
#define MP_SHARED_BASE(name) unsigned char* const name = ::mp::emu::shared_base()
#endif

namespace mp {

#if defined(__CUDACC__)
MP_DEVICE unsigned char* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char mp_dynamic_smem_[];
  return mp_dynamic_smem_;
}
#endif

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

// ---------------------------------------------------------------------------------------
// Element types: f16 (IEEE binary16), bf16 (bfloat16), float. Kernels convert through
// to_float / from_float<T>, which round to nearest even, in both builds.
// ---------------------------------------------------------------------------------------
#if defined(MP_EMULATE)
using f16 = ::mp::emu::half;
using bf16 = ::mp::emu::bfloat16;
MP_DEVICE float to_float(f16 x) { return emu::half_to_float(x.bits); }
MP_DEVICE float to_float(bf16 x) { return emu::bf16_to_float(x.bits); }
MP_DEVICE u16 bits_of(f16 x) { return x.bits; }
MP_DEVICE u16 bits_of(bf16 x) { return x.bits; }
#else
using f16 = __half;
using bf16 = __nv_bfloat16;
MP_DEVICE float to_float(f16 x) { return __half2float(x); }
MP_DEVICE float to_float(bf16 x) { return __bfloat162float(x); }
MP_DEVICE u16 bits_of(f16 x) { return __half_as_ushort(x); }
MP_DEVICE u16 bits_of(bf16 x) { return __bfloat16_as_ushort(x); }
#endif
MP_DEVICE float to_float(float x) { return x; }

template <class T>
MP_DEVICE T from_float(float x);
template <>
MP_DEVICE float from_float<float>(float x) {
  return x;
}
#if defined(MP_EMULATE)
template <>
MP_DEVICE f16 from_float<f16>(float x) {
  return f16{emu::float_to_half_rn(x)};
}
template <>
MP_DEVICE bf16 from_float<bf16>(float x) {
  return bf16{emu::float_to_bf16_rn(x)};
}
#else
template <>
MP_DEVICE f16 from_float<f16>(float x) {
  return __float2half_rn(x);
}
template <>
MP_DEVICE bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}
#endif

// Two 16-bit values in one 32-bit register, `lo` in the low half (PTX's element order).
template <class T>
MP_DEVICE u32 pack2(T lo, T hi) {
  return u32(bits_of(lo)) | (u32(bits_of(hi)) << 16);
}

template <class A, class B>
struct is_same {
  static constexpr bool value = false;
};
template <class A>
struct is_same<A, A> {
  static constexpr bool value = true;
};

template <class T>
struct is_16bit {
  static constexpr bool value = false;
};
template <>
struct is_16bit<f16> {
  static constexpr bool value = true;
};
template <>
struct is_16bit<bf16> {
  static constexpr bool value = true;
};

// A check of the runtime's preconditions: reported as an error by the emulation, not
// compiled into GPU builds.
#if defined(MP_EMULATE)
#define MP_CHECK(cond, msg) \
  ((cond) ? (void)0 : ::mp::emu::report("error", "%s (%s:%u)", msg, ::mp::emu::base_name(mp_loc_.file_name()), mp_loc_.line()))
#else
#define MP_CHECK(cond, msg) ((void)0)
#endif

// ---------------------------------------------------------------------------------------
// Thread indexing (linear rank in the block, as CUDA numbers threads into warps)
// ---------------------------------------------------------------------------------------
MP_DEVICE int thread_rank() { return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }
MP_DEVICE int block_threads() { return int(blockDim.x * blockDim.y * blockDim.z); }
MP_DEVICE int lane_id() { return thread_rank() & 31; }
MP_DEVICE int warp_id() { return thread_rank() >> 5; }
MP_DEVICE int num_warps() { return (block_threads() + 31) >> 5; }

// Calls f(i) for i = rank, rank + nthreads, ... < n: the block-strided loop of elementwise
// work. A thread always gets the same indices, so per-thread state may follow them.
template <class F>
MP_DEVICE void for_each_index(int n, F f) {
  const int nt = block_threads();
  for (int i = thread_rank(); i < n; i += nt) f(i);
}

// ---------------------------------------------------------------------------------------
// 128-bit global-memory moves (the caller guarantees 16-byte alignment)
// ---------------------------------------------------------------------------------------
MP_DEVICE bool is_aligned16(const void* p) { return (reinterpret_cast<u64>(p) & 15u) == 0; }

MP_DEVICE uint4 ldg128(const void* p) {
#if defined(MP_EMULATE)
  uint4 v;
  std::memcpy(&v, p, 16);
  return v;
#else
  return *reinterpret_cast<const uint4*>(p);
#endif
}

MP_DEVICE void stg128(void* p, uint4 v) {
#if defined(MP_EMULATE)
  std::memcpy(p, &v, 16);
#else
  *reinterpret_cast<uint4*>(p) = v;
#endif
}

// ---------------------------------------------------------------------------------------
// Shared memory: Smem<T> is a typed pointer into the block's shared memory. All loads and
// stores go through it (the emulation logs each one for the race detector; on the GPU it is
// a plain pointer). Indices are in elements of T.
// ---------------------------------------------------------------------------------------
template <class T>
struct Smem {
  T* ptr;

  MP_DEVICE T load(int i MP_LOC_PARAM) const {
    MP_SMEM_RECORD(ptr + i, sizeof(T), false);
    return ptr[i];
  }
  MP_DEVICE void store(int i, T v MP_LOC_PARAM) const {
    MP_SMEM_RECORD(ptr + i, sizeof(T), true);
    ptr[i] = v;
  }
  // Element (row, col) of a row-major tile with leading dimension ld.
  MP_DEVICE T load(int row, int col, int ld MP_LOC_PARAM) const { return load(row * ld + col MP_LOC); }
  MP_DEVICE void store(int row, int col, int ld, T v MP_LOC_PARAM) const { store(row * ld + col, v MP_LOC); }

  // A vector V (e.g. uint4 for 128 bits) starting at element i; must be aligned to sizeof(V).
  template <class V>
  MP_DEVICE V load_vec(int i MP_LOC_PARAM) const {
    MP_SMEM_RECORD(ptr + i, sizeof(V), false);
#if defined(MP_EMULATE)
    V v;
    std::memcpy(&v, ptr + i, sizeof(V));
    return v;
#else
    return *reinterpret_cast<const V*>(ptr + i);
#endif
  }
  template <class V>
  MP_DEVICE void store_vec(int i, V v MP_LOC_PARAM) const {
    MP_SMEM_RECORD(ptr + i, sizeof(V), true);
#if defined(MP_EMULATE)
    std::memcpy(ptr + i, &v, sizeof(V));
#else
    *reinterpret_cast<V*>(ptr + i) = v;
#endif
  }

  MP_DEVICE Smem<T> operator+(int i) const { return Smem<T>{ptr + i}; }
  template <class U>
  MP_DEVICE Smem<U> as() const {
    return Smem<U>{reinterpret_cast<U*>(ptr)};
  }
  // The 32-bit shared-window address PTX instructions take (GPU build only).
#if !defined(MP_EMULATE)
  MP_DEVICE u32 addr(int i = 0) const { return u32(__cvta_generic_to_shared(ptr + i)); }
#endif
};

// A tile of T at `byte_offset` from the dynamic shared memory base (see MP_SHARED_BASE).
template <class T>
MP_DEVICE Smem<T> smem_at(unsigned char* base, unsigned byte_offset) {
  return Smem<T>{reinterpret_cast<T*>(base + byte_offset)};
}

// Block-strided fill of n elements.
template <class T>
MP_DEVICE void fill(Smem<T> dst, int n, T value MP_LOC_PARAM) {
  const int nt = block_threads();
  for (int i = thread_rank(); i < n; i += nt) dst.store(i, value MP_LOC);
}

}  // namespace mp

#endif  // MP_CORE_CUH_
