// CUDA's vector types for the emulated device, with CUDA's sizes and alignments (a misaligned
// 16-byte load faults here too: the compiler may use aligned vector loads, and UBSan checks).
#pragma once

#define LOWBIT_EMU_VEC2(T, N, A) \
  struct alignas(A) N {          \
    T x, y;                      \
  };
#define LOWBIT_EMU_VEC3(T, N) \
  struct N {                  \
    T x, y, z;                \
  };
#define LOWBIT_EMU_VEC4(T, N, A) \
  struct alignas(A) N {          \
    T x, y, z, w;                \
  };

LOWBIT_EMU_VEC4(signed char, char4, 4)
LOWBIT_EMU_VEC4(unsigned char, uchar4, 4)
LOWBIT_EMU_VEC2(short, short2, 4)
LOWBIT_EMU_VEC2(unsigned short, ushort2, 4)
LOWBIT_EMU_VEC4(short, short4, 8)
LOWBIT_EMU_VEC4(unsigned short, ushort4, 8)
LOWBIT_EMU_VEC2(int, int2, 8)
LOWBIT_EMU_VEC2(unsigned int, uint2, 8)
LOWBIT_EMU_VEC3(int, int3)
LOWBIT_EMU_VEC4(int, int4, 16)
LOWBIT_EMU_VEC4(unsigned int, uint4, 16)
LOWBIT_EMU_VEC2(float, float2, 8)
LOWBIT_EMU_VEC3(float, float3)
LOWBIT_EMU_VEC4(float, float4, 16)
LOWBIT_EMU_VEC2(double, double2, 16)
LOWBIT_EMU_VEC2(long long, longlong2, 16)
LOWBIT_EMU_VEC2(unsigned long long, ulonglong2, 16)

#undef LOWBIT_EMU_VEC2
#undef LOWBIT_EMU_VEC3
#undef LOWBIT_EMU_VEC4

inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
