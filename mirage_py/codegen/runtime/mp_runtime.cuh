// mp_runtime.cuh: the device library emitted kernels include (one header for all of it).
//
//   mp_core.cuh    types (f16, bf16, float), conversions, thread indexing, Smem<T>, MP_SHARED_BASE
//   mp_copy.cuh    global <-> shared tile copies (128-bit vectors, cp.async on sm_80+)
//   mp_mma.cuh     ldmatrix + mma.sync m16n8k16 warp tiles, the float32 CUDA-core path, accumulators
//   mp_reduce.cuh  warp/block reductions, elementwise epilogue functions
//   mp_layout.cuh  the PTX fragment layouts (shared with the emulation)
//
// Built as CUDA (nvcc / NVRTC, C++17) it is a GPU library; built with g++ -std=c++20 it pulls
// in mp_emulate.h and runs on the CPU with the race detector on. See docs/runtime.md.
#ifndef MP_RUNTIME_CUH_
#define MP_RUNTIME_CUH_

#include "mp_core.cuh"
#include "mp_copy.cuh"
#include "mp_mma.cuh"
#include "mp_reduce.cuh"

#endif  // MP_RUNTIME_CUH_
