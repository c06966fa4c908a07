// mp_emulate_main.h: a generic host program for emulated kernels (one translation unit of
// an emulation build includes it after registering kernels with MP_EMU_REGISTER).
//
//   program DIR
// reads DIR/launches.txt, one command a line:
//   buffer NAME NBYTES FILE|-         device buffer, filled from DIR/FILE (or zeros)
//   launch KERNEL GX GY GZ BX BY BZ SHARED_BYTES ARG...
//                                     ARG: @NAME for a buffer, else a number
// runs the launches in order, writes every buffer to DIR/NAME.out, and prints
//   mp_emulate: launches=N races=R errors=E
// on stdout. Exit status: 0 clean, 1 races or errors were reported, 2 a bad command file,
// 3 a fatal emulation error (deadlock, wild shared-memory access).
#ifndef MP_EMULATE_MAIN_H_
#define MP_EMULATE_MAIN_H_

#include <fstream>
#include <sstream>

#include "mp_emulate.h"

namespace mp {
namespace emu {

// Global buffers are 256-byte aligned (as cudaMalloc's) with guard bytes on both sides that
// are checked after the last launch.
constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0xa5;

struct HostBuffer {
  std::unique_ptr<unsigned char[]> alloc;
  unsigned char* data = nullptr;
  size_t size = 0;
};

inline int runner_main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR (reads DIR/launches.txt)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream spec(dir + "/launches.txt");
  if (!spec) {
    std::fprintf(stderr, "mp_emulate: cannot read %s/launches.txt\n", dir.c_str());
    return 2;
  }
  std::map<std::string, HostBuffer> buffers;
  BufferMap views;
  std::vector<std::string> order;
  std::string line;
  int lineno = 0;
  while (std::getline(spec, line)) {
    ++lineno;
    std::istringstream in(line);
    std::vector<std::string> tok;
    for (std::string t; in >> t;) tok.push_back(t);
    if (tok.empty() || tok[0][0] == '#') continue;
    if (tok[0] == "buffer" && tok.size() == 4) {
      HostBuffer b;
      b.size = std::stoull(tok[2]);
      b.alloc.reset(new unsigned char[b.size + 3 * kGuard]);
      const uintptr_t raw = reinterpret_cast<uintptr_t>(b.alloc.get()) + kGuard;
      b.data = reinterpret_cast<unsigned char*>((raw + kGuard - 1) & ~uintptr_t(kGuard - 1));
      std::memset(b.alloc.get(), kGuardByte, b.size + 3 * kGuard);
      std::memset(b.data, 0, b.size);
      if (tok[3] != "-") {
        std::ifstream f(dir + "/" + tok[3], std::ios::binary);
        if (!f.read(reinterpret_cast<char*>(b.data), std::streamsize(b.size))) {
          std::fprintf(stderr, "mp_emulate: line %d: cannot read %zu bytes from %s\n", lineno, b.size, tok[3].c_str());
          return 2;
        }
      }
      views[tok[1]] = ArgBuffer{b.data, b.size};
      order.push_back(tok[1]);
      buffers[tok[1]] = std::move(b);
    } else if (tok[0] == "launch" && tok.size() >= 9) {
      auto it = registry().find(tok[1]);
      if (it == registry().end()) {
        std::fprintf(stderr, "mp_emulate: line %d: no kernel named '%s' is registered\n", lineno, tok[1].c_str());
        return 2;
      }
      auto num = [&](size_t i) { return unsigned(std::stoul(tok[i])); };
      const dim3 grid(num(2), num(3), num(4)), block(num(5), num(6), num(7));
      const size_t smem = std::stoull(tok[8]);
      it->second(grid, block, smem, std::vector<std::string>(tok.begin() + 9, tok.end()), views);
    } else {
      std::fprintf(stderr, "mp_emulate: line %d: cannot parse '%s'\n", lineno, line.c_str());
      return 2;
    }
  }
  for (const std::string& name : order) {
    const HostBuffer& b = buffers[name];
    const unsigned char* lo = b.alloc.get();
    const unsigned char* data = b.data;
    const unsigned char* hi = data + b.size;
    const size_t after = size_t(b.alloc.get() + b.size + 3 * kGuard - hi);
    if (std::any_of(lo, data, [](unsigned char c) { return c != kGuardByte; }) ||
        std::any_of(hi, hi + after, [](unsigned char c) { return c != kGuardByte; }))
      report("error", "a kernel wrote outside global buffer '%s' (%zu bytes)", name.c_str(), b.size);
    std::ofstream f(dir + "/" + name + ".out", std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data), std::streamsize(b.size));
  }
  std::printf("mp_emulate: launches=%ld races=%ld errors=%ld\n", launch_count(), race_count(), error_count());
  std::fflush(stdout);
  return (race_count() || error_count()) ? 1 : 0;
}

}  // namespace emu
}  // namespace mp

int main(int argc, char** argv) { return mp::emu::runner_main(argc, argv); }

#endif  // MP_EMULATE_MAIN_H_
