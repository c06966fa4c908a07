// mp_reduce.cuh: warp and block reductions (sums in float) and the elementwise functions
// epilogues are made of.
//
// Warp functions use whole-warp shuffles: the block size must be a multiple of 32.
#ifndef MP_REDUCE_CUH_
#define MP_REDUCE_CUH_

#include "mp_core.cuh"

namespace mp {

constexpr u32 kFullWarp = 0xffffffffu;

// Butterfly sum over the warp; every lane gets the total.
MP_DEVICE float warp_sum(float v) {
  MP_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullWarp, v, o);
  return v;
}

MP_DEVICE float warp_max(float v) {
  MP_UNROLL
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullWarp, v, o));
  return v;
}

// Sum of v over the whole block, returned to every thread. `scratch` holds num_warps()
// floats. Every thread of the block must call it (it has two __syncthreads: one before the
// partial sums are read, one before scratch may be written again).
MP_DEVICE float block_sum(float v, Smem<float> scratch MP_LOC_PARAM) {
  v = warp_sum(v);
  const int nw = num_warps();
  if (lane_id() == 0) scratch.store(warp_id(), v MP_LOC);
  MP_SYNCTHREADS();
  float total = 0.0f;
  for (int w = 0; w < nw; ++w) total += scratch.load(w MP_LOC);
  MP_SYNCTHREADS();
  return total;
}

// Sums over one dim of a shared tile seen as [outer][len][inner] with element strides
// (so, sr, si): out(o, i) = sum over r of g(in[o*so + r*sr + i*si]), in float, where g is
// an elementwise function fused into the load (e.g. mp::square). Calls f(o, i, sum) once
// per output, from one thread. Contiguous rows (sr == 1, inner == 1) are summed one warp per
// row with shuffles; otherwise one thread per output. No barrier inside: the input must be
// complete before the call, and f's shared-memory writes need one after.
template <class T, class G, class F>
MP_DEVICE void reduce_sum_map(Smem<T> in, int outer, int so, int len, int sr, int inner, int si, G g,
                              F f MP_LOC_PARAM) {
  if (sr == 1 && inner == 1) {
    const int lane = lane_id(), nw = num_warps();
    for (int o = warp_id(); o < outer; o += nw) {
      float s = 0.0f;
      for (int r = lane; r < len; r += 32) s += g(to_float(in.load(o * so + r MP_LOC)));
      s = warp_sum(s);
      if (lane == 0) f(o, 0, s);
    }
  } else {
    const int nt = block_threads();
    for (int j = thread_rank(); j < outer * inner; j += nt) {
      const int o = j / inner, i = j - o * inner;
      float s = 0.0f;
      for (int r = 0; r < len; ++r) s += g(to_float(in.load(o * so + r * sr + i * si MP_LOC)));
      f(o, i, s);
    }
  }
}

struct IdentityMap {
  MP_DEVICE float operator()(float v) const { return v; }
};

template <class T, class F>
MP_DEVICE void reduce_sum(Smem<T> in, int outer, int so, int len, int sr, int inner, int si, F f MP_LOC_PARAM) {
  reduce_sum_map(in, outer, so, len, sr, inner, si, IdentityMap(), f MP_LOC);
}

// Row sums of g(x) over a rows x cols tile (leading dimension ld): f(row, sum).
template <class T, class G, class F>
MP_DEVICE void reduce_rows_map(Smem<T> in, int ld, int rows, int cols, G g, F f MP_LOC_PARAM) {
  reduce_sum_map(in, rows, ld, cols, 1, 1, 0, g, [&](int o, int, float s) { f(o, s); } MP_LOC);
}
template <class T, class F>
MP_DEVICE void reduce_rows(Smem<T> in, int ld, int rows, int cols, F f MP_LOC_PARAM) {
  reduce_rows_map(in, ld, rows, cols, IdentityMap(), f MP_LOC);
}

// Column sums of a rows x cols tile (leading dimension ld): f(col, sum).
template <class T, class F>
MP_DEVICE void reduce_cols(Smem<T> in, int ld, int rows, int cols, F f MP_LOC_PARAM) {
  reduce_sum_map(in, 1, 0, rows, ld, cols, 1, IdentityMap(), [&](int, int i, float s) { f(i, s); } MP_LOC);
}

// ---------------------------------------------------------------------------------------
// Elementwise functions for epilogues (float in, float out). Fused chains are lambdas that
// call these, e.g. [](int, int, float v) { return mp::silu(v) * 0.5f; }.
// ---------------------------------------------------------------------------------------
MP_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
MP_DEVICE float silu(float x) { return x * sigmoid(x); }
MP_DEVICE float relu(float x) { return fmaxf(x, 0.0f); }
MP_DEVICE float square(float x) { return x * x; }
MP_DEVICE float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }
// gelu by the name of its `approximate` attribute (PyTorch's spelling): none = the erf form.
MP_DEVICE float gelu_none(float x) { return gelu_erf(x); }
MP_DEVICE float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

}  // namespace mp

#endif  // MP_REDUCE_CUH_
