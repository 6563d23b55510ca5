// Plain parameter structs of pixel_shuffle / pixel_unshuffle, shared by the host
// code and the CUDA kernel. Kernel-safe: no tensor or runtime headers.
//
// Both ops are one bijection between a low-resolution tensor `lo` of shape
// (N, C*r*r, H, W) and a high-resolution tensor `hi` of shape (N, C, H*r, W*r):
//
//     hi[n, c, h*r + i, w*r + j]  ==  lo[n, c*r*r + i*r + j, h, w]
//
// pixel_shuffle copies lo -> hi, pixel_unshuffle copies hi -> lo. Leading batch
// dimensions are flattened into n before a kernel sees the tensors.
#pragma once

#include <cstdint>

namespace kernelzoo {
namespace pixel_shuffle_detail {

// Element strides of a 4-d (N, C, H, W) view.
template <typename index_t>
struct Strides4T {
  index_t n, c, h, w;
};

// Sizes of the problem, in terms of the high-resolution side.
template <typename index_t>
struct ShapeT {
  index_t n;  // batch (leading dims flattened)
  index_t c;  // channels of hi (= channels of lo / r^2)
  index_t h;  // height of lo
  index_t w;  // width of lo
  index_t r;  // factor
};

using Strides4 = Strides4T<int64_t>;
using Shape = ShapeT<int64_t>;

// Arguments of the CUDA kernel (pixel_shuffle_kernel.cuh). The destination is
// dense and walked in its memory order: N, C, H, W or, for channels_last, N, H, W, C.
template <typename index_t>
struct KernelParams {
  ShapeT<index_t> shape;
  Strides4T<index_t> lo, hi;    // lo/hi strides; the destination side is dense
  index_t dst_c, dst_h, dst_w;  // destination sizes (dims 1..3 of its 4-d view)
  index_t total;                // destination elements
  bool shuffle;                 // lo -> hi (else hi -> lo)
  bool channels_last;           // destination memory order is N, H, W, C
};

}  // namespace pixel_shuffle_detail
}  // namespace kernelzoo
