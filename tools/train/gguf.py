"""Minimal pure-Python GGUF v3 writer and reader (numpy only), with the I2_S ternary type.

I2_S (type id 36, Microsoft BitNet fork, x86 layout): values coded -1->0, 0->1, +1->2, cut into
blocks of 128 values (32 bytes); byte b of block i holds value 128i+b in bits 7-6, 128i+b+32 in
bits 5-4, 128i+b+64 in bits 3-2, 128i+b+96 in bits 1-0.  After the n/4 packed bytes: one
little-endian f32 scale, then 28 zero bytes.  Data size n/4 + 32.
"""
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
ALIGNMENT = 32

# value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}

# tensor types
GGML_F32, GGML_F16, GGML_I2_S = 0, 1, 36


def pack_i2s(codes_pm1, scale):
    """codes_pm1: int array of -1/0/1 in row-major order (ggml order).  Returns bytes."""
    c = (np.asarray(codes_pm1, dtype=np.int16).reshape(-1) + 1).astype(np.uint8)
    n = c.size
    assert n % 128 == 0, n
    c = c.reshape(n // 128, 4, 32)
    packed = (c[:, 0, :] << 6) | (c[:, 1, :] << 4) | (c[:, 2, :] << 2) | c[:, 3, :]
    return packed.astype(np.uint8).tobytes() + struct.pack("<f", scale) + b"\0" * 28


def unpack_i2s(buf, n):
    """Returns (int8 values in {-1,0,1}, scale)."""
    p = np.frombuffer(buf, dtype=np.uint8, count=n // 4).reshape(n // 128, 32)
    c = np.stack([(p >> 6) & 3, (p >> 4) & 3, (p >> 2) & 3, p & 3], axis=1)  # (blocks, 4, 32)
    vals = c.reshape(-1).astype(np.int8) - 1
    scale = struct.unpack("<f", bytes(buf[n // 4:n // 4 + 4]))[0]
    return vals, scale


class Writer:
    def __init__(self):
        self.kv = []          # (key, type, value, elem_type)
        self.tensors = []     # (name, dims(ggml order), type, bytes)

    def add(self, key, vtype, value, elem_type=None):
        self.kv.append((key, vtype, value, elem_type))

    def add_tensor(self, name, dims, ttype, data):
        self.tensors.append((name, list(dims), ttype, data))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, vtype, value, elem_type):
        if vtype == STRING:
            return self._str(value)
        if vtype == ARRAY:
            out = [struct.pack("<IQ", elem_type, len(value))]
            if elem_type == STRING:
                out += [self._str(v) for v in value]
            else:
                out.append(np.asarray(value, dtype=np.dtype(_SCALAR[elem_type])).tobytes())
            return b"".join(out)
        return struct.pack(_SCALAR[vtype], value)

    def write(self, path):
        head = [GGUF_MAGIC, struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))]
        for key, vtype, value, et in self.kv:
            head.append(self._str(key) + struct.pack("<I", vtype) + self._val(vtype, value, et))
        offset = 0
        offsets = []
        for name, dims, ttype, data in self.tensors:
            offsets.append(offset)
            head.append(self._str(name) + struct.pack("<I", len(dims))
                        + struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", ttype, offset))
            offset += len(data)
            offset += (-offset) % ALIGNMENT
        hb = b"".join(head)
        with open(path, "wb") as f:
            f.write(hb)
            f.write(b"\0" * ((-len(hb)) % ALIGNMENT))
            pos = 0
            for (name, dims, ttype, data), off in zip(self.tensors, offsets):
                assert pos == off
                f.write(data)
                pos += len(data)
                pad = (-pos) % ALIGNMENT
                f.write(b"\0" * pad)
                pos += pad


def tensor_nbytes(dims, ttype):
    n = int(np.prod(dims))
    if ttype == GGML_F32:
        return 4 * n
    if ttype == GGML_F16:
        return 2 * n
    if ttype == GGML_I2_S:
        return n // 4 + 32
    raise ValueError(f"unsupported tensor type {ttype}")


def read(path):
    """Returns (kv dict, kv order list, tensors dict name -> (dims, type, memoryview of data))."""
    buf = memoryview(open(path, "rb").read())
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def rstr():
        nonlocal pos
        n = take("<Q")
        s = bytes(buf[pos:pos + n]).decode("utf-8")
        pos += n
        return s

    def rval(t):
        nonlocal pos
        if t == STRING:
            return rstr()
        if t == ARRAY:
            et, n = take("<IQ")
            if et == STRING:
                return [rstr() for _ in range(n)]
            dt = np.dtype(_SCALAR[et])
            a = np.frombuffer(buf, dtype=dt, count=n, offset=pos)
            pos += n * dt.itemsize
            return a
        return take(_SCALAR[t])

    assert bytes(buf[:4]) == GGUF_MAGIC, "not a GGUF file"
    pos = 4
    version, n_t, n_kv = take("<IQQ")
    assert version == 3, version
    kv, order = {}, []
    for _ in range(n_kv):
        k = rstr()
        t = take("<I")
        kv[k] = rval(t)
        order.append((k, t))
    infos = []
    for _ in range(n_t):
        name = rstr()
        nd = take("<I")
        dims = [take("<Q") for _ in range(nd)]
        ttype, off = take("<IQ")
        infos.append((name, dims, ttype, off))
    align = int(kv.get("general.alignment", ALIGNMENT))
    data_start = pos + ((-pos) % align)
    tensors = {}
    for name, dims, ttype, off in infos:
        assert off % align == 0
        nb = tensor_nbytes(dims, ttype)
        assert data_start + off + nb <= len(buf), f"tensor {name} runs past end of file"
        tensors[name] = (dims, ttype, buf[data_start + off:data_start + off + nb])
    return kv, order, tensors
