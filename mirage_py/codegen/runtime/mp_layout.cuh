// mp_layout.cuh: the per-lane fragment layouts of the warp matrix instructions the runtime
// uses, written once as the PTX ISA states them:
//   - "Matrix Fragments for mma.m16n8k16 with floating point type" (.f16/.bf16 A and B,
//     .f32 C and D), where groupID = %laneid >> 2 and threadID_in_group = %laneid % 4;
//   - "ldmatrix" (.m8n8, .b16): lane 8*m + r supplies the address of row r of matrix m, and
//     each lane receives, for every matrix m, one 32-bit register holding two adjacent
//     elements of row groupID (or, with .trans, of column groupID).
// Elements of a register are numbered low half first (element 2*j is the low 16 bits of
// register j), as the ISA's "Elements (low to high)" column has them.
//
// The CPU emulation (mp_emulate.h) builds the whole operand tiles of an emulated mma from
// these maps, lane by lane, and the runtime (mp_mma.cuh) uses them in epilogues; the tests
// check both against an independent transcription of the ISA in Python.
//
// Plain C++17, no includes: host, device (nvcc, NVRTC) and the emulation share it.
#ifndef MP_LAYOUT_CUH_
#define MP_LAYOUT_CUH_

#if defined(__CUDACC__)
#define MP_LAYOUT_FN __host__ __device__ __forceinline__ constexpr
#else
#define MP_LAYOUT_FN inline constexpr
#endif

namespace mp {
namespace layout {

struct RowCol {
  int row;
  int col;
};

MP_LAYOUT_FN int group_id(int lane) { return lane >> 2; }
MP_LAYOUT_FN int thread_in_group(int lane) { return lane & 3; }

// Multiplicand A of mma.m16n8k16 (16 x 16, row-major), element i in [0, 8) of `lane`:
// row = groupID for a0, a1, a4, a5 and groupID + 8 otherwise;
// col = threadID_in_group * 2 + (i & 1), plus 8 for a4..a7.
MP_LAYOUT_FN RowCol mma_a(int lane, int i) {
  return RowCol{group_id(lane) + ((i & 2) ? 8 : 0), thread_in_group(lane) * 2 + (i & 1) + (i >= 4 ? 8 : 0)};
}

// Multiplicand B of mma.m16n8k16 (16 x 8, K x N, ".col"), element i in [0, 4):
// row (k) = threadID_in_group * 2 + (i & 1), plus 8 for b2, b3; col (n) = groupID.
MP_LAYOUT_FN RowCol mma_b(int lane, int i) {
  return RowCol{thread_in_group(lane) * 2 + (i & 1) + (i >= 2 ? 8 : 0), group_id(lane)};
}

// Accumulators C and D of mma.m16n8k16 (16 x 8, f32), element i in [0, 4):
// row = groupID for c0, c1 and groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 1).
MP_LAYOUT_FN RowCol mma_c(int lane, int i) {
  return RowCol{group_id(lane) + (i >= 2 ? 8 : 0), thread_in_group(lane) * 2 + (i & 1)};
}

// ldmatrix.m8n8.b16: element j in [0, 2) of the register a lane receives for one 8 x 8
// matrix, as (row, col) inside that matrix. Rows are those whose addresses lanes supplied.
MP_LAYOUT_FN RowCol ldmatrix_elem(int lane, int j, bool trans) {
  return trans ? RowCol{thread_in_group(lane) * 2 + j, group_id(lane)}
               : RowCol{group_id(lane), thread_in_group(lane) * 2 + j};
}

// The lane whose address gives row `row` of matrix `m` of an ldmatrix.
MP_LAYOUT_FN int ldmatrix_addr_lane(int m, int row) { return 8 * m + row; }

}  // namespace layout
}  // namespace mp

#endif  // MP_LAYOUT_CUH_
