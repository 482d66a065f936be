#!/usr/bin/env python3
# Writes a C++ translation unit that includes one kernel file as it is (meson compiles .cu files
# with nvcc; the emulated build compiles the same files with the host compiler through this).
import sys

src, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    f.write('#include "%s"\n' % src.replace("\\", "/"))
