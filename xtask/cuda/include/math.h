// <math.h> for NVRTC: the math functions are NVRTC builtins; this adds the macros dfdx's GELU and
// comparison kernels use. Values: C99 §7.12 (INFINITY) and the POSIX/XSI constants M_SQRT2, M_SQRT1_2
// (√2, 1/√2) and M_2_SQRTPI (2/√π), to double precision.
#pragma once
#define INFINITY __int_as_float(0x7f800000)
#define M_SQRT2 1.41421356237309504880
#define M_SQRT1_2 0.70710678118654752440
#define M_2_SQRTPI 1.12837916709551257390
