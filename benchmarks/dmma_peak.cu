// Peak float64 tensor-core (DMMA) rate per mma.sync shape: m8n8k4 (the Ampere shape) and the
// Hopper shapes m16n8k4, m16n8k8, m16n8k16; 132 x 8 blocks, 4 independent accumulator chains per
// warp. Built and run by bench_fp64_ceilings.py (nvcc -O3 -gencode=arch=compute_90a,code=sm_90a).
#include <cstdio>
#include <cuda_runtime.h>
#define CH 4
__global__ void k884(double *out, int iters) {
  double a = threadIdx.x * 1e-3, b = 1.0 + threadIdx.x * 1e-4;
  double c[CH][2] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < CH; ++j)
      asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};"
                   : "+d"(c[j][0]), "+d"(c[j][1]) : "d"(a), "d"(b));
  }
  double s = 0; for (int j = 0; j < CH; ++j) s += c[j][0] + c[j][1];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
__global__ void k1684(double *out, int iters) {
  double a0 = threadIdx.x * 1e-3, a1 = a0 + 1, b = 1.0 + threadIdx.x * 1e-4;
  double c[CH][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < CH; ++j)
      asm volatile("mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                   : "+d"(c[j][0]), "+d"(c[j][1]), "+d"(c[j][2]), "+d"(c[j][3]) : "d"(a0), "d"(a1), "d"(b));
  }
  double s = 0; for (int j = 0; j < CH; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
__global__ void k1688(double *out, int iters) {
  double a[4], b[2];
  for (int q = 0; q < 4; ++q) a[q] = threadIdx.x * 1e-3 + q;
  for (int q = 0; q < 2; ++q) b[q] = 1.0 + threadIdx.x * 1e-4 + q;
  double c[CH][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < CH; ++j)
      asm volatile("mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                   : "+d"(c[j][0]), "+d"(c[j][1]), "+d"(c[j][2]), "+d"(c[j][3])
                   : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b[0]), "d"(b[1]));
  }
  double s = 0; for (int j = 0; j < CH; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
__global__ void k16816(double *out, int iters) {
  double a[8], b[4];
  for (int q = 0; q < 8; ++q) a[q] = threadIdx.x * 1e-3 + q;
  for (int q = 0; q < 4; ++q) b[q] = 1.0 + threadIdx.x * 1e-4 + q;
  double c[CH][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < CH; ++j)
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5,%6,%7,%8,%9,%10,%11}, {%12,%13,%14,%15}, {%0,%1,%2,%3};"
                   : "+d"(c[j][0]), "+d"(c[j][1]), "+d"(c[j][2]), "+d"(c[j][3])
                   : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(a[4]), "d"(a[5]), "d"(a[6]), "d"(a[7]),
                     "d"(b[0]), "d"(b[1]), "d"(b[2]), "d"(b[3]));
  }
  double s = 0; for (int j = 0; j < CH; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
template <typename F> void bench(const char *name, F kern, double flops_per_mma, int warps) {
  int blocks = 132 * 8, threads = 32 * warps, iters = 20000;
  double *out; cudaMalloc(&out, sizeof(double) * blocks * threads);
  kern<<<blocks, threads>>>(out, 100); cudaDeviceSynchronize();
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  cudaEventRecord(e0); kern<<<blocks, threads>>>(out, iters); cudaEventRecord(e1);
  cudaEventSynchronize(e1); float ms; cudaEventElapsedTime(&ms, e0, e1);
  double fl = flops_per_mma * CH * (double)iters * blocks * warps;
  printf("%-10s warps/block=%d  %.2f ms  %.1f TFLOP/s  (%s)\n", name, warps, ms, fl / ms / 1e9,
         cudaGetErrorString(cudaGetLastError()));
  cudaFree(out);
}
int main() {
  for (int w : {4, 8}) {
    bench("m8n8k4", k884, 2.0 * 8 * 8 * 4, w);
    bench("m16n8k4", k1684, 2.0 * 16 * 8 * 4, w);
    bench("m16n8k8", k1688, 2.0 * 16 * 8 * 8, w);
    bench("m16n8k16", k16816, 2.0 * 16 * 8 * 16, w);
  }
}
