// A stand-in for libcuda.so that lets CubeCL run up to (and through) NVRTC without a GPU:
// device memory is host memory, launches do nothing, and every PTX module handed to
// cuModuleLoadData is written to $FAKE_CUDA_PTX_DIR for ptxas. Results are meaningless;
// only the compilation is real.
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

static int ptx_count = 0;
#define OK return CUDA_SUCCESS

CUresult cuInit(unsigned int f) { OK; }
CUresult cuDriverGetVersion(int *v) { *v = 12090; OK; }
CUresult cuDeviceGetCount(int *c) { *c = 1; OK; }
CUresult cuDeviceGet(CUdevice *d, int o) { *d = 0; OK; }
CUresult cuDeviceGetName(char *n, int len, CUdevice d) { strncpy(n, "fake H200 (offline compile)", len); OK; }
CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice d) { *b = (size_t)16 << 30; OK; }
CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d) { memset(u, 0, sizeof(*u)); OK; }
CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) { memset(u, 0, sizeof(*u)); OK; }
CUresult cuDeviceComputeCapability(int *ma, int *mi, CUdevice d) { *ma = 9; *mi = 0; OK; }
CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute a, CUdevice d) {
  switch (a) {
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *pi = 1024; break;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *pi = 1024; break;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *pi = 64; break;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *pi = 2147483647; break;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *pi = 65535; break;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *pi = 65535; break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *pi = 49152; break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *pi = 232448; break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *pi = 233472; break;
  case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *pi = 32; break;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = 132; break;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; break;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; break;
  case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *pi = 65536; break;
  case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *pi = 65536; break;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *pi = 2048; break;
  case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *pi = 52428800; break;
  case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *pi = 1980000; break;
  case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *pi = 2619000; break;
  case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *pi = 6144; break;
  case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: *pi = 512; break;
  default: *pi = 1; break;
  }
  OK;
}
static int ctx_dummy;
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { *c = (CUcontext)&ctx_dummy; OK; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { OK; }
CUresult cuCtxCreate_v2(CUcontext *c, unsigned int f, CUdevice d) { *c = (CUcontext)&ctx_dummy; OK; }
CUresult cuCtxSetCurrent(CUcontext c) { OK; }
CUresult cuCtxGetCurrent(CUcontext *c) { *c = (CUcontext)&ctx_dummy; OK; }
CUresult cuCtxPushCurrent_v2(CUcontext c) { OK; }
CUresult cuCtxPopCurrent_v2(CUcontext *c) { if (c) *c = (CUcontext)&ctx_dummy; OK; }
CUresult cuCtxSynchronize(void) { OK; }
CUresult cuCtxSetLimit(CUlimit l, size_t v) { OK; }
CUresult cuCtxGetDevice(CUdevice *d) { *d = 0; OK; }
static int stream_dummy;
CUresult cuStreamCreate(CUstream *s, unsigned int f) { *s = (CUstream)&stream_dummy; OK; }
CUresult cuStreamCreateWithPriority(CUstream *s, unsigned int f, int p) { *s = (CUstream)&stream_dummy; OK; }
CUresult cuStreamDestroy_v2(CUstream s) { OK; }
CUresult cuStreamSynchronize(CUstream s) { OK; }
CUresult cuStreamQuery(CUstream s) { OK; }
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int f) { OK; }
CUresult cuMemGetInfo_v2(size_t *fr, size_t *t) { *fr = (size_t)15 << 30; *t = (size_t)16 << 30; OK; }
static void *alloc(size_t n) { void *p = NULL; if (posix_memalign(&p, 256, n ? n : 1)) return NULL; return p; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) { *p = (CUdeviceptr)alloc(n); return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { return cuMemAlloc_v2(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)p); OK; }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { free((void *)p); OK; }
CUresult cuMemAllocHost_v2(void **p, size_t n) { *p = alloc(n); OK; }
CUresult cuMemHostAlloc(void **p, size_t n, unsigned int f) { *p = alloc(n); OK; }
CUresult cuMemFreeHost(void *p) { free(p); OK; }
CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int f) { OK; }
CUresult cuMemHostUnregister(void *p) { OK; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { memcpy((void *)d, s, n); OK; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, CUstream st) { memcpy((void *)d, s, n); OK; }
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { memcpy(d, (void *)s, n); OK; }
CUresult cuMemcpyDtoHAsync_v2(void *d, CUdeviceptr s, size_t n, CUstream st) { memcpy(d, (void *)s, n); OK; }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { memmove((void *)d, (void *)s, n); OK; }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) { memmove((void *)d, (void *)s, n); OK; }
CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *c, CUstream s) {
  for (size_t r = 0; r < c->Height; r++) {
    const char *src = (c->srcMemoryType == CU_MEMORYTYPE_HOST ? (const char *)c->srcHost : (const char *)c->srcDevice) + (c->srcY + r) * c->srcPitch + c->srcXInBytes;
    char *dst = (c->dstMemoryType == CU_MEMORYTYPE_HOST ? (char *)c->dstHost : (char *)c->dstDevice) + (c->dstY + r) * c->dstPitch + c->dstXInBytes;
    memmove(dst, src, c->WidthInBytes);
  }
  OK;
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { memset((void *)d, v, n); OK; }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) { memset((void *)d, v, n); OK; }
CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) { for (size_t i = 0; i < n; i++) ((unsigned int *)d)[i] = v; OK; }
CUresult cuModuleLoadData(CUmodule *m, const void *image) {
  const char *dir = getenv("FAKE_CUDA_PTX_DIR");
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/module_%03d.ptx", dir, ptx_count);
    FILE *f = fopen(path, "w");
    if (f) { fputs((const char *)image, f); fclose(f); }
  }
  ptx_count++;
  *m = (CUmodule)(size_t)ptx_count;
  OK;
}
CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int n, CUjit_option *o, void **v) { return cuModuleLoadData(m, image); }
CUresult cuModuleUnload(CUmodule m) { OK; }
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) { *f = (CUfunction)m; OK; }
CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) { OK; }
CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute a, CUfunction f) { *pi = 0; OK; }
CUresult cuFuncSetCacheConfig(CUfunction f, CUfunc_cache c) { OK; }
CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int sm, CUstream s, void **p, void **e) { OK; }
CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **e) { OK; }
static int event_dummy;
CUresult cuEventCreate(CUevent *e, unsigned int f) { *e = (CUevent)&event_dummy; OK; }
CUresult cuEventRecord(CUevent e, CUstream s) { OK; }
CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int f) { OK; }
CUresult cuEventSynchronize(CUevent e) { OK; }
CUresult cuEventQuery(CUevent e) { OK; }
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { *ms = 0.001f; OK; }
CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) { *ms = 0.001f; OK; }
CUresult cuEventDestroy_v2(CUevent e) { OK; }
CUresult cuGetErrorString(CUresult r, const char **s) { *s = "fake cuda error"; OK; }
CUresult cuGetErrorName(CUresult r, const char **s) { *s = "FAKE_CUDA_ERROR"; OK; }
CUresult cuPointerGetAttribute(void *d, CUpointer_attribute a, CUdeviceptr p) { OK; }
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, CUfunction f, int b, size_t s) { *n = 1; OK; }
/* Tensor maps (TMA): checks the encoding rules the real driver enforces, so an offline run
   reports a map the GPU would refuse, then leaves the (opaque) map zeroed. */
CUresult cuTensorMapEncodeTiled(CUtensorMap *map, CUtensorMapDataType ty, cuuint32_t rank,
                                void *addr, const cuuint64_t *dims, const cuuint64_t *strides,
                                const cuuint32_t *box, const cuuint32_t *elem_strides,
                                CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  static const unsigned sizes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  unsigned es = (unsigned)ty < sizeof sizes / sizeof *sizes ? sizes[ty] : 0;
  int bad = es == 0 || rank < 1 || rank > 5 || ((uintptr_t)addr % 16) != 0;
  for (cuuint32_t i = 0; !bad && i < rank; i++) {
    bad |= dims[i] == 0 || box[i] == 0 || box[i] > 256 || elem_strides[i] == 0 || elem_strides[i] > 8;
    if (i + 1 < rank) bad |= strides[i] % 16 != 0;
  }
  if (!bad) bad |= (box[0] * es) % 16 != 0;
  if (bad) {
    fprintf(stderr, "fake cuda: cuTensorMapEncodeTiled refused (type %d, rank %u, addr %p, box0 %u)\n",
            (int)ty, rank, addr, rank ? box[0] : 0);
    return CUDA_ERROR_INVALID_VALUE;
  }
  memset(map, 0, sizeof(*map));
  OK;
}
