// Compile check of csrc/common/mma.cuh under nvcc (ctest: nvcc_compiles_ptx_wrappers):
// instantiates every wrapper so that nvcc and ptxas see all of their inline PTX.
// Not part of the extension; nothing runs it.
#include "common/mma.cuh"

namespace kz_nvcc_check {

template <typename T>
__global__ void use_every_wrapper(const T* a, const float* g, float* out) {
  __shared__ __align__(16) T tile[32][8];
  __shared__ __align__(16) float stage[128];
  using namespace kernelzoo::mma;
  const int lane = threadIdx.x % 32;
  cp_async<4>(&stage[lane], g + lane);
  cp_async<8>(&stage[32 + 2 * (lane % 16)], g + 32 + 2 * (lane % 16));
  cp_async<16>(&stage[64 + 4 * (lane % 16)], g + 64 + 4 * (lane % 16));
  cp_async_zfill<16>(&stage[64 + 4 * (lane % 16)], g + 64, lane % 2 ? 16 : 0);
  cp_async_commit();
  cp_async_wait<1>();
  cp_async_wait<0>();
  cp_async_wait_all();
  for (int i = 0; i < 8; ++i) tile[lane][i] = a[lane * 8 + i];
  __syncthreads();
  uint32_t r1[1], r2[2], r4[4];
  ldmatrix(r1, &tile[lane % 8][0]);
  ldmatrix(r2, &tile[lane % 16][0]);
  ldmatrix(r4, &tile[lane][0]);
  ldmatrix_trans(r1, &tile[lane % 8][0]);
  ldmatrix_trans(r2, &tile[lane % 16][0]);
  ldmatrix_trans(r4, &tile[lane][0]);
  float acc[4] = {stage[lane], 0.f, 0.f, 0.f};
  const uint32_t b[2] = {r2[0] ^ r1[0], pack2<T>(1.0f, 2.0f)};
  mma_m16n8k16<T>(acc, r4, b, acc);
  for (int i = 0; i < 4; ++i) {
    const Coord c = c_coord(lane, i);
    out[c.row * 8 + c.col] = acc[i] + unpack_lo<T>(r4[i]) + unpack_hi<T>(r4[i]);
  }
}

template __global__ void use_every_wrapper<c10::Half>(const c10::Half*, const float*, float*);
template __global__ void use_every_wrapper<c10::BFloat16>(const c10::BFloat16*, const float*, float*);

}  // namespace kz_nvcc_check
