// mp_emulate.h: a CPU stand-in for the GPU, so that a .cu kernel written against
// mp_runtime.cuh compiles with g++ (C++20) and runs on the host.
//
// Model (see docs/runtime.md):
//   - a launch runs its blocks one after another; the threads of a block are host threads
//     (one std::thread per CUDA thread, reused for every block of the launch);
//   - threadIdx/blockIdx/blockDim/gridDim are thread-locals;
//   - __syncthreads is a barrier of the block; a thread whose kernel body returned no longer
//     takes part (as on the GPU); lanes of a warp share a warp barrier;
//   - dynamic shared memory (MP_SHARED_BASE) is one buffer per launch, refilled with 0xFF
//     bytes (NaN for every float type) at the start of each block;
//   - warp instructions (shuffles, ldmatrix, mma.sync) are emulated lane by lane: every lane
//     posts its registers (or row address) to a per-warp exchange buffer, the warp meets at
//     its barrier, and each lane computes its own result from the PTX fragment layouts in
//     mp_layout.cuh;
//   - cp.async copies land when the issuing thread waits for their group, not before;
//   - every shared-memory access made through the runtime's accessors is logged; at each
//     __syncthreads and at the end of each block an epoch-based race detector compares, byte
//     by byte, the sets of threads that read and wrote it in that epoch (see check_epoch).
// Diagnostics go to stderr; counts are kept in mp::emu::race_count()/error_count().
// Fatal problems (a deadlock, an access far outside shared memory) end the process with 3.
#ifndef MP_EMULATE_H_
#define MP_EMULATE_H_

#if defined(__CUDACC__)
#error "mp_emulate.h emulates the device on the CPU; a CUDA build must not include it"
#endif
#if __cplusplus < 202002L
#error "mp_emulate.h needs C++20 (g++ -std=c++20)"
#endif

#define MP_EMULATE 1

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp_layout.cuh"

// ---------------------------------------------------------------------------------------
// CUDA spellings
// ---------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// Runtime functions take the caller's source location in emulation builds (and nothing in
// GPU builds) so that race reports name kernel lines, not runtime lines.
#define MP_LOC_PARAM , ::std::source_location mp_loc_ = ::std::source_location::current()
#define MP_LOC , mp_loc_
#define MP_LOC_PARAM_ONLY ::std::source_location mp_loc_ = ::std::source_location::current()

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

namespace mp {
namespace emu {

using SrcLoc = std::source_location;

// Largest dynamic shared memory of a block on the targets (sm_90: 227 KB).
constexpr size_t kMaxSharedBytes = 232448;
// Bytes around the shared buffer that absorb a stray access after it is reported.
constexpr size_t kRedzone = 4096;

// ---------------------------------------------------------------------------------------
// 16-bit float types (storage only; arithmetic goes through float)
// ---------------------------------------------------------------------------------------
struct half {
  uint16_t bits;
};
struct bfloat16 {
  uint16_t bits;
};

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu;
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
    const float v = std::ldexp(float(m), -24);
    return sign ? -v : v;
  }
  if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  return f32_from_bits(sign | ((e - 15 + 127) << 23) | (m << 13));
}

// float -> binary16, rounding to nearest even (what __float2half_rn does).
inline uint16_t float_to_half_rn(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // at or above 65520 rounds to infinity
  if (ax < 0x38800000u) {                        // below 2^-14: a subnormal half
    // Scaling by 2^24 is exact; nearbyint rounds half to even in the default mode.
    const float scaled = std::fabs(f) * 16777216.0f;
    return sign | uint16_t(std::nearbyint(scaled));
  }
  uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffffu) >> 13));
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
  return sign | uint16_t(h);
}

inline float bf16_to_float(uint16_t b) { return f32_from_bits(uint32_t(b) << 16); }

inline uint16_t float_to_bf16_rn(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t(((x >> 16) & 0x8000u) | 0x7fc0u);  // NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// ---------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------
struct Counters {
  std::atomic<long> races{0};
  std::atomic<long> errors{0};
  std::atomic<long> launches{0};
  std::atomic<long> printed{0};
};
inline Counters& counters() {
  static Counters c;
  return c;
}
inline long race_count() { return counters().races.load(); }
inline long error_count() { return counters().errors.load(); }
inline long launch_count() { return counters().launches.load(); }

inline long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::strtol(v, nullptr, 10) : fallback;
}
// At most this many race/error reports are printed (MP_EMU_MAX_REPORTS); all are counted.
inline long max_reports() {
  static const long n = env_long("MP_EMU_MAX_REPORTS", 20);
  return n;
}
inline std::mutex& io_mutex() {
  static std::mutex m;
  return m;
}

inline void vprint(const char* tag, const char* fmt, va_list ap) {
  std::lock_guard<std::mutex> lk(io_mutex());
  std::fprintf(stderr, "mp_emulate: %s: ", tag);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

// kind is "race" or "error"; both are counted, the first max_reports() are printed.
inline void report(const char* kind, const char* fmt, ...) {
  Counters& c = counters();
  (std::strcmp(kind, "race") == 0 ? c.races : c.errors).fetch_add(1);
  if (c.printed.fetch_add(1) >= max_reports()) return;
  va_list ap;
  va_start(ap, fmt);
  vprint(kind, fmt, ap);
  va_end(ap);
}

[[noreturn]] inline void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint("fatal", fmt, ap);
  va_end(ap);
  std::_Exit(3);
}

inline const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

// ---------------------------------------------------------------------------------------
// Launch state
// ---------------------------------------------------------------------------------------
struct Launch;

// Where a blocked thread waits, for deadlock reports.
struct WaitSite {
  std::atomic<const char*> what{nullptr};
  std::atomic<const char*> file{nullptr};
  std::atomic<unsigned> line{0};
};

// A reusable barrier. The last thread to arrive runs on_complete while the others are still
// held, which is where the race detector looks at a finished epoch. A thread that leaves
// (drop) stops being waited for until the next reset, as exited threads on a GPU.
class Barrier {
 public:
  std::function<void(const SrcLoc&)> on_complete;
  const char* what = "barrier";
  bool check_site = true;  // all threads must arrive at the same source line

  void reset(int n) {
    std::lock_guard<std::mutex> lk(m_);
    expected_ = n;
    arrived_ = 0;
    has_site_ = false;
  }
  int expected() {
    std::lock_guard<std::mutex> lk(m_);
    return expected_;
  }
  void arrive_and_wait(const SrcLoc& loc);
  void drop();

 private:
  void complete_locked() {
    if (on_complete) on_complete(site_);
    arrived_ = 0;
    has_site_ = false;
    gen_.fetch_add(1, std::memory_order_release);
    gen_.notify_all();
  }
  std::mutex m_;
  int expected_ = 0;
  int arrived_ = 0;
  bool has_site_ = false;
  SrcLoc site_;
  std::atomic<unsigned> gen_{0};
};

struct Warp {
  Barrier bar;
  int lanes = 0;
  // Double-buffered exchange slots, 64 bytes per lane: a collective writes one buffer and
  // the next collective the other, so one barrier per collective suffices (a lane cannot
  // overwrite a slot before every lane has passed the barrier that follows its reads).
  alignas(64) unsigned char slots[2][32][64];
};

// One shared-memory access, as logged for the race detector.
struct Access {
  uint32_t off;
  uint32_t size;
  int tid;
  bool write;
  const char* file;
  unsigned line;
};

// Per byte of shared memory, in the current epoch: the first two distinct writers and the
// first two distinct readers (more are never needed to decide or report a conflict).
struct ShadowCell {
  const Access* w0;
  const Access* w1;
  const Access* r0;
  const Access* r1;
};

struct Launch {
  std::string name;
  dim3 grid, block;
  size_t smem_bytes = 0;
  int nthreads = 0, nwarps = 0;
  std::unique_ptr<unsigned char[]> smem_alloc;
  unsigned char* smem = nullptr;  // 128-byte aligned, kRedzone bytes of slack on both sides
  Barrier sync;                   // __syncthreads
  Barrier done;                   // end of a block
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<std::vector<Access>> logs;  // per thread, this epoch
  std::vector<ShadowCell> shadow;
  uint3 block_idx{0, 0, 0};
  long epoch = 0;
  bool epoch_open_at_barrier = false;  // false: the epoch began at the block's start
  SrcLoc epoch_start;
  std::unique_ptr<WaitSite[]> sites;
  std::atomic<int> blocked{0};
  std::atomic<int> exited{0};
  std::atomic<long> progress{0};
  long races = 0, errors = 0;
};

inline Launch*& current_launch() {
  static Launch* l = nullptr;
  return l;
}

struct PendingCopy {
  unsigned char* dst;
  unsigned char data[16];
  int bytes;
  SrcLoc loc;
};

struct ThreadCtx {
  Launch* L = nullptr;
  int tid = 0, lane = 0, warp = 0;
  unsigned parity = 0;
  std::vector<PendingCopy> pending;  // issued cp.async copies, oldest first
  std::vector<size_t> group_ends;    // end index in `pending` of each committed group
};
inline thread_local ThreadCtx* t_ctx = nullptr;

inline ThreadCtx& ctx() {
  if (!t_ctx) fatal("a device function was called outside an emulated kernel launch");
  return *t_ctx;
}

inline void format_thread(char* out, size_t n, const Launch& L, int tid) {
  const unsigned bx = L.block.x, by = L.block.y;
  std::snprintf(out, n, "(%u,%u,%u)", tid % bx, (tid / bx) % by, tid / (bx * by));
}

// ---------------------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------------------
inline void Barrier::arrive_and_wait(const SrcLoc& loc) {
  std::unique_lock<std::mutex> lk(m_);
  if (!has_site_) {
    site_ = loc;
    has_site_ = true;
  } else if (check_site && (site_.line() != loc.line() || std::strcmp(site_.file_name(), loc.file_name()) != 0)) {
    report("error", "divergent %s: threads wait at %s:%u and at %s:%u", what, base_name(site_.file_name()),
           site_.line(), base_name(loc.file_name()), loc.line());
  }
  const unsigned g = gen_.load(std::memory_order_relaxed);
  if (++arrived_ >= expected_) {
    complete_locked();
    return;
  }
  lk.unlock();
  Launch* L = current_launch();
  WaitSite* site = (L && t_ctx) ? &L->sites[t_ctx->tid] : nullptr;
  if (site) {
    site->what.store(what);
    site->file.store(loc.file_name());
    site->line.store(loc.line());
    L->blocked.fetch_add(1);
  }
  while (gen_.load(std::memory_order_acquire) == g) gen_.wait(g, std::memory_order_acquire);
  if (site) L->blocked.fetch_sub(1);
}

inline void Barrier::drop() {
  std::lock_guard<std::mutex> lk(m_);
  --expected_;
  if (arrived_ > 0 && arrived_ >= expected_) complete_locked();
}

// ---------------------------------------------------------------------------------------
// Shared memory and the race detector
// ---------------------------------------------------------------------------------------
inline unsigned char* shared_base() { return ctx().L->smem; }

// Log one access of `n` bytes at `p` by the calling thread; check bounds and alignment.
inline void smem_access(const void* p, size_t n, bool write, const SrcLoc& loc) {
  ThreadCtx& c = ctx();
  Launch& L = *c.L;
  const ptrdiff_t off = static_cast<const unsigned char*>(p) - L.smem;
  char who[48];
  if (off < 0 || size_t(off) + n > L.smem_bytes) {
    format_thread(who, sizeof who, L, c.tid);
    if (off < -ptrdiff_t(kRedzone) || off > ptrdiff_t(L.smem_bytes + kRedzone) - ptrdiff_t(n))
      fatal("%s of %zu bytes at shared offset %td, far outside the %zu-byte dynamic shared memory, by thread %s "
            "at %s:%u",
            write ? "write" : "read", n, off, L.smem_bytes, who, base_name(loc.file_name()), loc.line());
    report("error", "shared-memory %s of %zu bytes at offset %td is outside the %zu bytes of kernel '%s', thread %s at %s:%u",
           write ? "write" : "read", n, off, L.smem_bytes, L.name.c_str(), who, base_name(loc.file_name()), loc.line());
    return;
  }
  if ((n == 2 || n == 4 || n == 8 || n == 16) && (off % ptrdiff_t(n)) != 0) {
    format_thread(who, sizeof who, L, c.tid);
    report("error", "misaligned %zu-byte shared-memory %s at offset %td, thread %s at %s:%u", n,
           write ? "write" : "read", off, who, base_name(loc.file_name()), loc.line());
  }
  L.logs[c.tid].push_back(Access{uint32_t(off), uint32_t(n), c.tid, write, loc.file_name(), loc.line()});
}

// The end of an epoch: every access logged since the last barrier is compared as a set.
// A byte is in conflict when two different threads wrote it (write/write) or one thread
// wrote it and another read it (read/write: RAW or WAR, which no barrier orders). The
// order in which threads happened to run plays no part, so the verdict is deterministic.
inline void check_epoch(Launch& L, const SrcLoc* end_site) {
  size_t lo = SIZE_MAX, hi = 0;
  for (const auto& log : L.logs) {
    for (const Access& a : log) {
      lo = std::min<size_t>(lo, a.off);
      hi = std::max<size_t>(hi, size_t(a.off) + a.size);
      for (uint32_t b = a.off; b < a.off + a.size; ++b) {
        ShadowCell& s = L.shadow[b];
        if (a.write) {
          if (!s.w0) s.w0 = &a;
          else if (!s.w1 && s.w0->tid != a.tid) s.w1 = &a;
        } else {
          if (!s.r0) s.r0 = &a;
          else if (!s.r1 && s.r0->tid != a.tid) s.r1 = &a;
        }
      }
    }
  }
  struct Conflict {
    const char* kind = nullptr;
    const Access* x = nullptr;
    const Access* y = nullptr;
    size_t begin = 0, end = 0;
  } cur;
  auto flush = [&]() {
    if (!cur.kind) return;
    ++L.races;
    char tx[48], ty[48], start[160], stop[160];
    format_thread(tx, sizeof tx, L, cur.x->tid);
    format_thread(ty, sizeof ty, L, cur.y->tid);
    if (L.epoch_open_at_barrier)
      std::snprintf(start, sizeof start, "__syncthreads at %s:%u", base_name(L.epoch_start.file_name()),
                    L.epoch_start.line());
    else
      std::snprintf(start, sizeof start, "block start");
    if (end_site)
      std::snprintf(stop, sizeof stop, "__syncthreads at %s:%u", base_name(end_site->file_name()), end_site->line());
    else
      std::snprintf(stop, sizeof stop, "block end");
    report("race",
           "%s conflict in kernel '%s' block (%u,%u,%u), epoch %ld (from %s to %s), shared bytes [%zu, %zu): "
           "thread %s %s at %s:%u, thread %s %s at %s:%u",
           cur.kind, L.name.c_str(), L.block_idx.x, L.block_idx.y, L.block_idx.z, L.epoch, start, stop, cur.begin,
           cur.end, tx, cur.x->write ? "writes" : "reads", base_name(cur.x->file), cur.x->line, ty,
           cur.y->write ? "writes" : "reads", base_name(cur.y->file), cur.y->line);
    cur = Conflict{};
  };
  for (size_t b = lo; b < hi; ++b) {
    const ShadowCell& s = L.shadow[b];
    const char* kind = nullptr;
    const Access *x = nullptr, *y = nullptr;
    if (s.w1) {
      kind = "write/write";
      x = s.w0;
      y = s.w1;
    } else if (s.w0) {
      const Access* r = (s.r0 && s.r0->tid != s.w0->tid) ? s.r0 : (s.r1 && s.r1->tid != s.w0->tid) ? s.r1 : nullptr;
      if (r) {
        kind = "read/write";
        x = s.w0;
        y = r;
      }
    }
    if (kind && cur.kind == kind && cur.x == x && cur.y == y && cur.end == b) {
      cur.end = b + 1;
      continue;
    }
    flush();
    if (kind) cur = Conflict{kind, x, y, b, b + 1};
  }
  flush();
  if (lo < hi) std::fill(L.shadow.begin() + ptrdiff_t(lo), L.shadow.begin() + ptrdiff_t(hi), ShadowCell{});
  for (auto& log : L.logs) log.clear();
  ++L.epoch;
  if (end_site) {
    L.epoch_start = *end_site;
    L.epoch_open_at_barrier = true;
  }
}

// ---------------------------------------------------------------------------------------
// Warp collectives
// ---------------------------------------------------------------------------------------
template <class T>
struct Gathered {
  unsigned char (*slots)[64];
  T operator[](int lane) const {
    T v;
    std::memcpy(&v, slots[lane], sizeof(T));
    return v;
  }
};

inline unsigned warp_full_mask(const Warp& w) { return w.lanes == 32 ? 0xffffffffu : ((1u << w.lanes) - 1u); }

// Every lane of the warp posts `v`; after the warp's barrier each lane can read all posts.
template <class T>
Gathered<T> warp_gather(const T& v, const SrcLoc& loc) {
  static_assert(sizeof(T) <= 64 && std::is_trivially_copyable_v<T>, "exchange slot holds 64 bytes");
  ThreadCtx& c = ctx();
  Warp& w = *c.L->warps[size_t(c.warp)];
  auto& buf = w.slots[c.parity];
  c.parity ^= 1u;
  std::memcpy(buf[c.lane], &v, sizeof(T));
  w.bar.arrive_and_wait(loc);
  return Gathered<T>{buf};
}

inline void require_full_warp(const char* what, const SrcLoc& loc) {
  ThreadCtx& c = ctx();
  Warp& w = *c.L->warps[size_t(c.warp)];
  if (w.lanes != 32 || w.bar.expected() != 32)
    fatal("%s at %s:%u needs all 32 lanes of warp %d (it has %d active)", what, base_name(loc.file_name()),
          loc.line(), c.warp, w.bar.expected());
}

inline void check_mask(unsigned mask, const char* what, const SrcLoc& loc) {
  ThreadCtx& c = ctx();
  const Warp& w = *c.L->warps[size_t(c.warp)];
  if (mask != warp_full_mask(w))
    report("error", "%s at %s:%u with mask 0x%08x: the emulator supports whole-warp masks only (0x%08x)", what,
           base_name(loc.file_name()), loc.line(), mask, warp_full_mask(w));
}

template <class T>
T shfl_impl(unsigned mask, T v, int src, bool keep_own, const char* what, const SrcLoc& loc) {
  check_mask(mask, what, loc);
  auto all = warp_gather(v, loc);
  const Warp& w = *ctx().L->warps[size_t(ctx().warp)];
  if (keep_own || src < 0 || src >= w.lanes) return v;
  return all[src];
}

// ldmatrix.sync.aligned.m8n8.x{NUM}{.trans}.shared.b16, lane by lane: lanes 0..8*NUM-1
// supply row addresses (16 bytes each); lane l receives element (row, col) of matrix m as
// mp::layout::ldmatrix_elem says, read from the row that lane 8*m + row supplied.
template <int NUM, bool TRANS>
void ldmatrix(uint32_t (&r)[NUM], const void* row_addr, const SrcLoc& loc) {
  static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix loads 1, 2 or 4 matrices");
  ThreadCtx& c = ctx();
  require_full_warp("ldmatrix", loc);
  // Each address lane reads one 16-byte row (smem_access also checks its alignment).
  if (c.lane < 8 * NUM) smem_access(row_addr, 16, false, loc);
  auto rows = warp_gather(row_addr, loc);
  for (int m = 0; m < NUM; ++m) {
    uint32_t reg = 0;
    for (int j = 0; j < 2; ++j) {
      const layout::RowCol e = layout::ldmatrix_elem(c.lane, j, TRANS);
      const auto* row = static_cast<const unsigned char*>(rows[layout::ldmatrix_addr_lane(m, e.row)]);
      uint16_t v;
      std::memcpy(&v, row + 2 * e.col, 2);
      reg |= uint32_t(v) << (16 * j);
    }
    r[m] = reg;
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, lane by lane: each
// lane posts its A and B registers; every lane rebuilds the operand tiles from all posts
// through the ISA's fragment maps and computes the four accumulators it owns.
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                         bool bf16, const SrcLoc& loc) {
  require_full_warp("mma.sync", loc);
  struct Regs {
    uint32_t a[4];
    uint32_t b[2];
  } mine;
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  auto all = warp_gather(mine, loc);
  auto elem = [bf16](uint32_t reg, int half_idx) {
    const uint16_t bits = uint16_t(reg >> (16 * half_idx));
    return bf16 ? bf16_to_float(bits) : half_to_float(bits);
  };
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const Regs x = all[lane];
    for (int i = 0; i < 8; ++i) {
      const layout::RowCol p = layout::mma_a(lane, i);
      A[p.row][p.col] = elem(x.a[i / 2], i % 2);
    }
    for (int i = 0; i < 4; ++i) {
      const layout::RowCol p = layout::mma_b(lane, i);
      B[p.row][p.col] = elem(x.b[i / 2], i % 2);
    }
  }
  float out[4];
  const int lane = ctx().lane;
  for (int i = 0; i < 4; ++i) {
    const layout::RowCol p = layout::mma_c(lane, i);
    float acc = c[i];
    // Products of 16-bit floats are exact in float; the sum is rounded once per term.
    for (int k = 0; k < 16; ++k) acc += A[p.row][k] * B[k][p.col];
    out[i] = acc;
  }
  std::memcpy(d, out, sizeof out);
}

// ---------------------------------------------------------------------------------------
// cp.async: the copy is logged as a write when issued and again when it lands, and lands
// only when the issuing thread waits for its group.
// ---------------------------------------------------------------------------------------
inline void cp_async(void* dst, const void* src, int bytes, const SrcLoc& loc) {
  ThreadCtx& c = ctx();
  if (!(bytes == 4 || bytes == 8 || bytes == 16)) fatal("cp.async of %d bytes (4, 8 or 16 only)", bytes);
  if (reinterpret_cast<uintptr_t>(src) % uintptr_t(bytes) != 0)
    report("error", "cp.async source %p is not %d-byte aligned (%s:%u)", src, bytes, base_name(loc.file_name()),
           loc.line());
  smem_access(dst, size_t(bytes), true, loc);
  PendingCopy p{static_cast<unsigned char*>(dst), {}, bytes, loc};
  std::memcpy(p.data, src, size_t(bytes));
  c.pending.push_back(p);
}

inline void cp_async_commit() {
  ThreadCtx& c = ctx();
  c.group_ends.push_back(c.pending.size());
}

inline void land_copies(ThreadCtx& c, size_t count, const SrcLoc& loc) {
  for (size_t i = 0; i < count; ++i) {
    const PendingCopy& p = c.pending[i];
    smem_access(p.dst, size_t(p.bytes), true, loc);
    std::memcpy(p.dst, p.data, size_t(p.bytes));
  }
  c.pending.erase(c.pending.begin(), c.pending.begin() + ptrdiff_t(count));
}

// cp.async.wait_group keep: all but the newest `keep` committed groups have landed.
inline void cp_async_wait(int keep, const SrcLoc& loc) {
  ThreadCtx& c = ctx();
  if (c.group_ends.size() <= size_t(keep)) return;
  const size_t ndone = c.group_ends.size() - size_t(keep);
  const size_t upto = c.group_ends[ndone - 1];
  land_copies(c, upto, loc);
  c.group_ends.erase(c.group_ends.begin(), c.group_ends.begin() + ptrdiff_t(ndone));
  for (size_t& e : c.group_ends) e -= upto;
}

inline void cp_async_wait_all(const SrcLoc& loc) {
  cp_async_commit();
  cp_async_wait(0, loc);
}

// ---------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------
struct LaunchStats {
  long races = 0;
  long errors = 0;
};

inline void thread_main(Launch& L, int tid, const std::function<void()>& body) {
  ThreadCtx c;
  c.L = &L;
  c.tid = tid;
  c.lane = tid % 32;
  c.warp = tid / 32;
  t_ctx = &c;
  threadIdx = uint3{tid % L.block.x, (tid / L.block.x) % L.block.y, tid / (L.block.x * L.block.y)};
  blockDim = L.block;
  gridDim = L.grid;
  const long nblocks = long(L.grid.x) * L.grid.y * L.grid.z;
  static const SrcLoc block_end = SrcLoc::current();
  for (long b = 0; b < nblocks; ++b) {
    blockIdx = uint3{unsigned(b % L.grid.x), unsigned((b / L.grid.x) % L.grid.y),
                     unsigned(b / (long(L.grid.x) * L.grid.y))};
    body();
    if (!c.pending.empty()) {
      char who[48];
      format_thread(who, sizeof who, L, tid);
      report("error", "kernel '%s': thread %s ended with %zu cp.async copies it never waited for", L.name.c_str(), who,
             c.pending.size());
      land_copies(c, c.pending.size(), block_end);
      c.group_ends.clear();
    }
    L.warps[size_t(c.warp)]->bar.drop();
    L.sync.drop();
    L.done.arrive_and_wait(block_end);
  }
  t_ctx = nullptr;
  L.exited.fetch_add(1);
}

inline void fill_poison(Launch& L) { std::memset(L.smem, 0xff, L.smem_bytes); }

// Run `body` as every thread of every block of a launch; returns this launch's counts.
inline LaunchStats run_launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes,
                              const std::function<void()>& body) {
  const long nthreads = long(block.x) * block.y * block.z;
  if (nthreads < 1 || nthreads > 1024) fatal("kernel '%s': %ld threads per block (1..1024)", name, nthreads);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    fatal("kernel '%s': invalid grid (%u,%u,%u)", name, grid.x, grid.y, grid.z);
  if (shared_bytes > kMaxSharedBytes)
    fatal("kernel '%s': %zu bytes of dynamic shared memory exceed the %zu a block can have", name, shared_bytes,
          kMaxSharedBytes);
  if (current_launch()) fatal("kernel '%s' launched while another emulated launch runs", name);
  counters().launches.fetch_add(1);
  const long races_before = race_count(), errors_before = error_count();

  Launch L;
  L.name = name;
  L.grid = grid;
  L.block = block;
  L.smem_bytes = shared_bytes;
  L.nthreads = int(nthreads);
  L.nwarps = int((nthreads + 31) / 32);
  L.smem_alloc.reset(new unsigned char[shared_bytes + 2 * kRedzone + 128]);
  const uintptr_t raw = reinterpret_cast<uintptr_t>(L.smem_alloc.get()) + kRedzone;
  L.smem = reinterpret_cast<unsigned char*>((raw + 127) & ~uintptr_t(127));
  L.shadow.assign(shared_bytes, ShadowCell{});
  L.logs.resize(size_t(nthreads));
  L.sites.reset(new WaitSite[size_t(nthreads)]);
  for (int w = 0; w < L.nwarps; ++w) {
    auto warp = std::make_unique<Warp>();
    warp->lanes = std::min(32, L.nthreads - 32 * w);
    warp->bar.what = "warp collective";
    warp->bar.reset(warp->lanes);
    warp->bar.on_complete = [&L](const SrcLoc&) { L.progress.fetch_add(1); };
    L.warps.push_back(std::move(warp));
  }
  L.sync.what = "__syncthreads";
  L.sync.reset(L.nthreads);
  L.sync.on_complete = [&L](const SrcLoc& site) {
    check_epoch(L, &site);
    L.progress.fetch_add(1);
  };
  L.done.what = "block end";
  L.done.check_site = false;
  L.done.reset(L.nthreads);
  L.done.on_complete = [&L](const SrcLoc&) {
    check_epoch(L, nullptr);
    L.epoch = 0;
    L.epoch_open_at_barrier = false;
    const long b = long(L.block_idx.x) + long(L.grid.x) * (L.block_idx.y + long(L.grid.y) * L.block_idx.z) + 1;
    L.block_idx = uint3{unsigned(b % L.grid.x), unsigned((b / L.grid.x) % L.grid.y),
                        unsigned(b / (long(L.grid.x) * L.grid.y))};
    L.sync.reset(L.nthreads);
    for (auto& w : L.warps) w->bar.reset(w->lanes);
    fill_poison(L);
    L.progress.fetch_add(1);
  };
  fill_poison(L);
  current_launch() = &L;

  std::vector<std::thread> threads;
  threads.reserve(size_t(nthreads));
  for (int t = 0; t < L.nthreads; ++t) threads.emplace_back(thread_main, std::ref(L), t, std::cref(body));

  // Watchdog: when every live thread waits at a barrier and nothing moves for a while, no
  // thread can ever release the others.
  const long deadlock_ms = env_long("MP_EMU_DEADLOCK_MS", 10000);
  long last_progress = -1;
  auto still_since = std::chrono::steady_clock::now();
  while (L.exited.load() < L.nthreads) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const long p = L.progress.load();
    const int alive = L.nthreads - L.exited.load();
    const auto now = std::chrono::steady_clock::now();
    if (p != last_progress || alive == 0 || L.blocked.load() < alive) {
      last_progress = p;
      still_since = now;
      continue;
    }
    if (now - still_since > std::chrono::milliseconds(deadlock_ms)) {
      std::lock_guard<std::mutex> lk(io_mutex());
      std::fprintf(stderr, "mp_emulate: fatal: deadlock in kernel '%s' block (%u,%u,%u): every thread waits\n", name,
                   L.block_idx.x, L.block_idx.y, L.block_idx.z);
      for (int t = 0, shown = 0; t < L.nthreads && shown < 64; ++t) {
        const char* what = L.sites[t].what.load();
        if (!what) continue;
        char who[48];
        format_thread(who, sizeof who, L, t);
        std::fprintf(stderr, "  thread %s waits at %s (%s:%u)\n", who, what, base_name(L.sites[t].file.load()),
                     L.sites[t].line.load());
        ++shown;
      }
      std::fflush(stderr);
      std::_Exit(3);
    }
  }
  for (auto& t : threads) t.join();
  current_launch() = nullptr;
  return LaunchStats{race_count() - races_before, error_count() - errors_before};
}

// ---------------------------------------------------------------------------------------
// Kernel registry, for the generic runner in mp_emulate_main.h
// ---------------------------------------------------------------------------------------
struct ArgBuffer {
  unsigned char* data;
  size_t size;
};
using BufferMap = std::map<std::string, ArgBuffer>;
using Invoker = std::function<LaunchStats(dim3, dim3, size_t, const std::vector<std::string>&, const BufferMap&)>;

inline std::map<std::string, Invoker>& registry() {
  static std::map<std::string, Invoker> r;
  return r;
}

// A launch argument from its text: "@name" is a buffer, anything else a number.
template <class P>
P parse_arg(const std::string& tok, const BufferMap& bufs) {
  if constexpr (std::is_pointer_v<P>) {
    if (tok.empty() || tok[0] != '@') fatal("argument '%s' given where the kernel takes a pointer", tok.c_str());
    auto it = bufs.find(tok.substr(1));
    if (it == bufs.end()) fatal("no buffer named '%s'", tok.c_str() + 1);
    return reinterpret_cast<P>(it->second.data);
  } else if constexpr (std::is_integral_v<P>) {
    char* end = nullptr;
    const long long v = std::strtoll(tok.c_str(), &end, 0);
    if (tok.empty() || *end) fatal("argument '%s' is not an integer", tok.c_str());
    return static_cast<P>(v);
  } else if constexpr (std::is_floating_point_v<P>) {
    char* end = nullptr;
    const double v = std::strtod(tok.c_str(), &end);
    if (tok.empty() || *end) fatal("argument '%s' is not a number", tok.c_str());
    return static_cast<P>(v);
  } else {
    static_assert(std::is_pointer_v<P>, "kernel parameters must be pointers or numbers");
  }
}

template <class... P, size_t... I>
LaunchStats invoke_from_text(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                             const std::vector<std::string>& toks, const BufferMap& bufs, std::index_sequence<I...>) {
  std::tuple<std::decay_t<P>...> params(parse_arg<std::decay_t<P>>(toks[I], bufs)...);
  return run_launch(name, grid, block, smem, [&] { std::apply(kernel, params); });
}

template <class... P>
bool register_kernel(const char* name, void (*kernel)(P...)) {
  const std::string key(name);
  registry()[key] = [key, kernel](dim3 g, dim3 b, size_t smem, const std::vector<std::string>& toks,
                                  const BufferMap& bufs) {
    if (toks.size() != sizeof...(P))
      fatal("kernel '%s' takes %zu arguments, %zu given", key.c_str(), sizeof...(P), toks.size());
    return invoke_from_text(key.c_str(), kernel, g, b, smem, toks, bufs, std::index_sequence_for<P...>{});
  };
  return true;
}

}  // namespace emu
}  // namespace mp

#define MP_EMU_CAT2(a, b) a##b
#define MP_EMU_CAT(a, b) MP_EMU_CAT2(a, b)
// Make a kernel launchable by name from the generic runner (mp_emulate_main.h). The second
// form takes any expression naming a kernel, e.g. a template instance.
#define MP_EMU_REGISTER(kernel) MP_EMU_REGISTER_AS(kernel, kernel)
#define MP_EMU_REGISTER_AS(name, ...) \
  static const bool MP_EMU_CAT(mp_emu_registered_, __COUNTER__) = ::mp::emu::register_kernel(#name, __VA_ARGS__);

// ---------------------------------------------------------------------------------------
// Launching: mp_launch(kernel, grid, block, shared_bytes, args...) stands for
// kernel<<<grid, block, shared_bytes>>>(args...) and returns this launch's race/error counts.
// ---------------------------------------------------------------------------------------
template <class... P, class... A>
mp::emu::LaunchStats mp_launch_named(const char* name, void (*kernel)(P...), dim3 grid, dim3 block,
                                     size_t shared_bytes, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "mp_launch: wrong number of kernel arguments");
  std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
  return mp::emu::run_launch(name, grid, block, shared_bytes, [&] { std::apply(kernel, params); });
}
template <class... P, class... A>
mp::emu::LaunchStats mp_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes, A&&... args) {
  return mp_launch_named("kernel", kernel, grid, block, shared_bytes, std::forward<A>(args)...);
}
#define MP_LAUNCH(kernel, grid, block, shared_bytes, ...) \
  mp_launch_named(#kernel, kernel, grid, block, shared_bytes, __VA_ARGS__)

// ---------------------------------------------------------------------------------------
// CUDA device built-ins
// ---------------------------------------------------------------------------------------
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  mp::emu::ctx().L->sync.arrive_and_wait(loc);
}

// A warp barrier. It orders execution only: the race detector's epochs end at
// __syncthreads, so shared memory handed between lanes of one warp must use a block barrier.
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  mp::emu::ThreadCtx& c = mp::emu::ctx();
  mp::emu::check_mask(mask, "__syncwarp", loc);
  c.L->warps[size_t(c.warp)]->bar.arrive_and_wait(loc);
}

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
              std::source_location loc = std::source_location::current()) {
  const int lane = mp::emu::ctx().lane;
  return mp::emu::shfl_impl(mask, var, (lane / width) * width + (src_lane % width), false, "__shfl_sync", loc);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  std::source_location loc = std::source_location::current()) {
  const int lane = mp::emu::ctx().lane;
  const int src = lane ^ lane_mask;
  // Lanes may read from their own or an earlier group of `width`, not from a later one.
  return mp::emu::shfl_impl(mask, var, src, src / width > lane / width, "__shfl_xor_sync", loc);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                   std::source_location loc = std::source_location::current()) {
  const int lane = mp::emu::ctx().lane;
  return mp::emu::shfl_impl(mask, var, lane + int(delta), (lane % width) + int(delta) >= width, "__shfl_down_sync",
                            loc);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                 std::source_location loc = std::source_location::current()) {
  const int lane = mp::emu::ctx().lane;
  return mp::emu::shfl_impl(mask, var, lane - int(delta), (lane % width) < int(delta), "__shfl_up_sync", loc);
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T>
T atomicAdd(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_add(val);
}
template <class T>
T atomicMax(T* address, T val) {
  std::atomic_ref<T> a(*address);
  T old = a.load();
  while (old < val && !a.compare_exchange_weak(old, val)) {
  }
  return old;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

#endif  // MP_EMULATE_H_
