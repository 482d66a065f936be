// The emulated CUDA device: the runtime API (host) plus the device-side language (kernels).
#pragma once
#include "cuda_runtime_api.h"
#include "lowbit_emu/device.h"
#include "lowbit_emu/launch.h"
