"""The named-array container of the format fixtures (tests/data/formats/*.json + *.bin): each
array little-endian in one blob, the JSON index giving its dtype, shape, offset and size.
Shared by make_format_fixtures.py and make_fp8_fixtures.py (read by tests/test_formats.cpp)."""
import numpy as np


class Container:
    def __init__(self):
        self.index = {}
        self.blob = bytearray()

    def add(self, name, array):
        array = np.ascontiguousarray(array)
        dtype = {np.dtype(np.float32): "f32", np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8"}[array.dtype]
        assert name not in self.index, name
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        self.index[name] = {"dtype": dtype, "shape": list(array.shape), "offset": len(self.blob), "nbytes": len(data)}
        self.blob += data
        return name
