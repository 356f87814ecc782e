"""Small, dependency-free (numpy only) GGUF v2/v3 reader and writer.

Independent reference code for testing Trinity's BitNet engine. Written from the
GGUF format description and from the block layouts of ggml's quant types; it
shares no code with the engine.

Reader:  GGUFFile(path)  -> .version, .metadata (dict key -> value),
         .metadata_types (key -> (type, elem_type)), .tensors (name -> TensorInfo),
         .alignment, .data_offset, .tensor_bytes(name), .dequantize(name),
         .ternary(name) (codes + scales of I2_S / TQ1_0 / TQ2_0 tensors).
Writer:  GGUFWriter(); w.add_*(key, value); w.add_tensor(name, ne, type, raw);
         w.write(path).  encode_*() helpers produce the raw bytes per type.

Shapes follow ggml: ne = [ne0, ne1, ...], ne0 contiguous.  A 2-D tensor with
ne = [in, out] corresponds to a row-major numpy array of shape (out, in).

Only little-endian files are supported (every file in practice).
"""

import mmap
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ---- metadata value types ----------------------------------------------------
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, \
    T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(13)

_SCALAR_FMT = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h",
    T_UINT32: "<I", T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?",
    T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d",
}
_SCALAR_NP = {
    T_UINT8: "<u1", T_INT8: "<i1", T_UINT16: "<u2", T_INT16: "<i2",
    T_UINT32: "<u4", T_INT32: "<i4", T_FLOAT32: "<f4", T_BOOL: "<u1",
    T_UINT64: "<u8", T_INT64: "<i8", T_FLOAT64: "<f8",
}
VALUE_TYPE_NAMES = {
    T_UINT8: "UINT8", T_INT8: "INT8", T_UINT16: "UINT16", T_INT16: "INT16",
    T_UINT32: "UINT32", T_INT32: "INT32", T_FLOAT32: "FLOAT32", T_BOOL: "BOOL",
    T_STRING: "STRING", T_ARRAY: "ARRAY", T_UINT64: "UINT64", T_INT64: "INT64",
    T_FLOAT64: "FLOAT64",
}

# ---- tensor types ------------------------------------------------------------
GGML_F32 = 0
GGML_F16 = 1
GGML_Q8_0 = 8
GGML_Q6_K = 14
GGML_BF16 = 30
GGML_TQ1_0 = 34
GGML_TQ2_0 = 35
GGML_I2_S = 36          # Microsoft BitNet fork only; see i2s_allowed()

QK_K = 256

# type -> (values per block, bytes per block)
_BLOCK = {
    GGML_F32: (1, 4),
    GGML_F16: (1, 2),
    GGML_BF16: (1, 2),
    GGML_Q8_0: (32, 34),
    GGML_Q6_K: (256, 210),
    GGML_TQ1_0: (256, 54),
    GGML_TQ2_0: (256, 66),
}
TYPE_NAMES = {
    GGML_F32: "F32", GGML_F16: "F16", GGML_Q8_0: "Q8_0", GGML_Q6_K: "Q6_K",
    GGML_BF16: "BF16", GGML_TQ1_0: "TQ1_0", GGML_TQ2_0: "TQ2_0", GGML_I2_S: "I2_S",
}
I2S_ARCHS = ("bitnet-b1.58", "bitnet-25")


def i2s_allowed(arch):
    """Type id 36 means I2_S only in files of Microsoft's BitNet architectures."""
    return arch in I2S_ARCHS


def tensor_nbytes(ggml_type, ne, arch=None):
    n = int(np.prod(ne, dtype=np.int64)) if len(ne) else 1
    if ggml_type == GGML_I2_S:
        if not i2s_allowed(arch):
            raise ValueError("tensor type 36 (I2_S) in a file whose architecture is %r; "
                             "only %s define it" % (arch, ", ".join(I2S_ARCHS)))
        if n % 128:
            raise ValueError("I2_S tensor with %d values (not a multiple of 128)" % n)
        return n // 4 + 32
    if ggml_type not in _BLOCK:
        raise ValueError("unsupported tensor type %d" % ggml_type)
    bs, nb = _BLOCK[ggml_type]
    if ne[0] % bs:
        raise ValueError("ne0=%d is not a multiple of the block size %d of type %s"
                         % (ne[0], bs, TYPE_NAMES[ggml_type]))
    return n // bs * nb


def _align(x, a):
    return (x + a - 1) // a * a


# ==============================================================================
# Reader
# ==============================================================================

class TensorInfo:
    __slots__ = ("name", "ne", "type", "offset", "nbytes")

    def __init__(self, name, ne, ggml_type, offset):
        self.name, self.ne, self.type, self.offset = name, list(ne), ggml_type, offset
        self.nbytes = None

    @property
    def shape(self):
        """numpy (row-major) shape: reversed ne."""
        return tuple(reversed(self.ne))

    def __repr__(self):
        return "TensorInfo(%s, ne=%s, type=%s, offset=%d)" % (
            self.name, self.ne, TYPE_NAMES.get(self.type, self.type), self.offset)


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise ValueError("GGUF truncated at byte %d" % self.pos)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def scalar(self, t):
        fmt = _SCALAR_FMT[t]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def u32(self):
        return self.scalar(T_UINT32)

    def u64(self):
        return self.scalar(T_UINT64)

    def string(self):
        n = self.u64()
        return bytes(self.take(n)).decode("utf-8", errors="surrogateescape")

    def _string_array(self, n):
        buf, pos, end = self.buf, self.pos, len(self.buf)
        u64 = struct.Struct("<Q").unpack_from
        out = [None] * n
        for i in range(n):
            ln = u64(buf, pos)[0]
            pos += 8
            if pos + ln > end:
                raise ValueError("GGUF truncated in a string array")
            out[i] = bytes(buf[pos:pos + ln]).decode("utf-8", errors="surrogateescape")
            pos += ln
        self.pos = pos
        return out

    def value(self, t):
        if t == T_STRING:
            return self.string()
        if t == T_ARRAY:
            et = self.u32()
            n = self.u64()
            if et == T_STRING:
                return self._string_array(n)
            if et == T_ARRAY:
                return [self.value(T_ARRAY) for _ in range(n)]
            if et not in _SCALAR_NP:
                raise ValueError("bad array element type %d" % et)
            dt = np.dtype(_SCALAR_NP[et])
            arr = np.frombuffer(self.take(n * dt.itemsize), dtype=dt).copy()
            return arr.astype(bool) if et == T_BOOL else arr
        if t in _SCALAR_FMT:
            return self.scalar(t)
        raise ValueError("bad metadata value type %d" % t)


class GGUFFile:
    def __init__(self, path):
        self.path = path
        self._f = open(path, "rb")
        self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        c = _Cursor(memoryview(self._mm))
        if bytes(c.take(4)) != GGUF_MAGIC:
            raise ValueError("%s: not a GGUF file" % path)
        self.version = c.u32()
        if self.version not in (2, 3):
            raise ValueError("%s: unsupported GGUF version %d" % (path, self.version))
        n_tensors = c.u64()
        n_kv = c.u64()
        self.metadata, self.metadata_types = {}, {}
        for _ in range(n_kv):
            key = c.string()
            t = c.u32()
            pos = c.pos
            val = c.value(t)
            et = None
            if t == T_ARRAY:
                et = struct.unpack("<I", bytes(c.buf[pos:pos + 4]))[0]
            self.metadata[key] = val
            self.metadata_types[key] = (t, et)
        self.tensors = {}
        self.tensor_order = []
        for _ in range(n_tensors):
            name = c.string()
            nd = c.u32()
            ne = [c.u64() for _ in range(nd)]
            t = c.u32()
            off = c.u64()
            if name in self.tensors:
                raise ValueError("duplicate tensor %s" % name)
            self.tensors[name] = TensorInfo(name, ne, t, off)
            self.tensor_order.append(name)
        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise ValueError("bad general.alignment %d" % self.alignment)
        self.data_offset = _align(c.pos, self.alignment)
        self.arch = self.metadata.get("general.architecture")
        for ti in self.tensors.values():
            ti.nbytes = tensor_nbytes(ti.type, ti.ne, self.arch)
            if ti.offset % self.alignment:
                raise ValueError("tensor %s offset %d not aligned" % (ti.name, ti.offset))
            end = self.data_offset + ti.offset + ti.nbytes
            if end > len(self._mm):
                raise ValueError("tensor %s runs past the end of the file" % ti.name)

    def close(self):
        self._mm.close()
        self._f.close()

    def tensor_bytes(self, name):
        ti = self.tensors[name]
        return np.frombuffer(self._mm, dtype=np.uint8, count=ti.nbytes,
                             offset=self.data_offset + ti.offset)

    def dequantize(self, name, dtype=np.float64):
        """Tensor values as a numpy array of shape reversed(ne)."""
        ti = self.tensors[name]
        raw = self.tensor_bytes(name)
        n = int(np.prod(ti.ne, dtype=np.int64))
        if ti.type in (GGML_I2_S, GGML_TQ1_0, GGML_TQ2_0):
            codes, scale, bd = self.ternary(name)
            if scale is not None:
                v = codes.astype(np.float64) * scale
            else:
                rows, cols = codes.shape
                v = (codes.astype(np.float64).reshape(rows, cols // QK_K, QK_K)
                     * bd[:, :, None]).reshape(rows, cols)
            return v.reshape(ti.shape).astype(dtype)
        return dequantize_raw(ti.type, raw, n).reshape(ti.shape).astype(dtype, copy=False)

    def ternary(self, name):
        """(codes int8 [rows, ne0], per-tensor scale or None, per-256-block d [rows, ne0/256] or None)."""
        ti = self.tensors[name]
        raw = self.tensor_bytes(name)
        ne0 = ti.ne[0]
        rows = int(np.prod(ti.ne[1:], dtype=np.int64)) if len(ti.ne) > 1 else 1
        n = ne0 * rows
        if ti.type == GGML_I2_S:
            codes, scale = decode_i2s(raw, n)
            return codes.reshape(rows, ne0), scale, None
        if ti.type == GGML_TQ2_0:
            codes, d = decode_tq2_0(raw, n)
        elif ti.type == GGML_TQ1_0:
            codes, d = decode_tq1_0(raw, n)
        else:
            raise ValueError("%s: type %s is not ternary" % (name, TYPE_NAMES.get(ti.type, ti.type)))
        return codes.reshape(rows, ne0), None, d.reshape(rows, ne0 // QK_K)


# ---- per-type decoders (vectorised) ------------------------------------------

_F16_TABLE = None


def f16_bits_to_f64(u16):
    """IEEE half bits -> float64 (table lookup: much faster than numpy's f16 cast)."""
    global _F16_TABLE
    if _F16_TABLE is None:
        _F16_TABLE = np.arange(65536, dtype=np.uint32).astype("<u2").view(np.float16).astype(np.float64)
    return _F16_TABLE[np.asarray(u16, dtype="<u2")]


def bf16_bits_to_f32(u16):
    return (np.asarray(u16, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def dequantize_raw(ggml_type, raw, n):
    raw = np.asarray(raw, dtype=np.uint8)
    if ggml_type == GGML_F32:
        return raw[:4 * n].view("<f4").astype(np.float64)
    if ggml_type == GGML_F16:
        return f16_bits_to_f64(raw[:2 * n].view("<u2"))
    if ggml_type == GGML_BF16:
        return bf16_bits_to_f32(raw[:2 * n].view("<u2")).astype(np.float64)
    if ggml_type == GGML_Q8_0:
        b = raw.reshape(-1, 34)
        d = f16_bits_to_f64(b[:, 0:2].copy().view("<u2")[:, 0])
        q = b[:, 2:].view(np.int8).astype(np.float64)
        return (q * d[:, None]).reshape(-1)[:n]
    if ggml_type == GGML_Q6_K:
        return _dequant_q6_k(raw).reshape(-1)[:n]
    raise ValueError("cannot dequantize type %s" % TYPE_NAMES.get(ggml_type, ggml_type))


def _dequant_q6_k(raw):
    # block_q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d
    b = raw.reshape(-1, 210)
    nb = b.shape[0]
    ql = b[:, 0:128].astype(np.int32)
    qh = b[:, 128:192].astype(np.int32)
    sc = b[:, 192:208].view(np.int8).astype(np.float64)
    d = f16_bits_to_f64(b[:, 208:210].copy().view("<u2")[:, 0])
    q = np.empty((nb, 256), dtype=np.int32)
    for h in range(2):             # two halves of 128 values
        L = ql[:, 64 * h:64 * h + 64]
        H = qh[:, 32 * h:32 * h + 32]
        o = 128 * h
        q[:, o + 0:o + 32] = (L[:, :32] & 0xF) | (((H >> 0) & 3) << 4)
        q[:, o + 32:o + 64] = (L[:, 32:] & 0xF) | (((H >> 2) & 3) << 4)
        q[:, o + 64:o + 96] = (L[:, :32] >> 4) | (((H >> 4) & 3) << 4)
        q[:, o + 96:o + 128] = (L[:, 32:] >> 4) | (((H >> 6) & 3) << 4)
    q -= 32
    scale = sc[:, np.arange(256) // 16]          # element e uses scales[e // 16]
    return d[:, None] * scale * q


def decode_i2s(raw, n):
    """I2_S (x86 layout): 128-value blocks of 32 bytes; byte b of block i holds values
    128i+b (bits 7-6), +32 (5-4), +64 (3-2), +96 (1-0); code 0,1,2 -> -1,0,+1.
    Followed by one f32 scale and 28 unused bytes."""
    raw = np.asarray(raw, dtype=np.uint8)
    packed = raw[:n // 4].reshape(-1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8)
    c = (packed[:, None, :] >> shifts[None, :, None]) & 3          # [blk, group, byte]
    c = c.reshape(-1)
    if np.any(c == 3):
        raise ValueError("I2_S tensor contains the invalid code 3")
    scale = float(raw[n // 4:n // 4 + 4].view("<f4")[0])
    return (c.astype(np.int8) - 1), scale


def decode_tq2_0(raw, n):
    """block_tq2_0: qs[64], f16 d.  Value 128j+32l+m = ((qs[32j+m] >> 2l) & 3) - 1."""
    b = np.asarray(raw, dtype=np.uint8).reshape(-1, 66)
    qs = b[:, :64].reshape(-1, 2, 1, 32)                               # [blk, j, 1, m]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)  # l
    c = ((qs >> shifts) & 3).reshape(-1, 256)
    if np.any(c == 3):
        raise ValueError("TQ2_0 tensor contains code 3 (not ternary)")
    d = f16_bits_to_f64(b[:, 64:66].copy().view("<u2")[:, 0])
    return c.astype(np.int8).reshape(-1)[:n] - 1, d


_POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.uint16)


def _trits(q, count):
    """q: uint8 array [..., m]; returns [..., count, m] trits (0..2), most significant first."""
    q = q.astype(np.uint16)[..., None, :]
    p = _POW3[:count].reshape((1,) * (q.ndim - 2) + (count, 1))
    qq = (q * p) & 0xFF                 # uint8 multiply wraps
    return (qq * 3) >> 8


def decode_tq1_0(raw, n):
    """block_tq1_0: qs[48] (5 trits per byte), qh[4] (4 trits per byte), f16 d.
    Values 0..159: trit n of qs[m] (m<32) -> 32n+m; 160..239: trit n of qs[32+m] (m<16)
    -> 160+16n+m; 240..255: trit n of qh[j] -> 240+4n+j."""
    b = np.asarray(raw, dtype=np.uint8).reshape(-1, 54)
    nb = b.shape[0]
    c = np.empty((nb, 256), dtype=np.int16)
    c[:, 0:160] = _trits(b[:, 0:32], 5).reshape(nb, 160)
    c[:, 160:240] = _trits(b[:, 32:48], 5).reshape(nb, 80)
    c[:, 240:256] = _trits(b[:, 48:52], 4).reshape(nb, 16)
    d = f16_bits_to_f64(b[:, 52:54].copy().view("<u2")[:, 0])
    return (c.astype(np.int8) - 1).reshape(-1)[:n], d


# ==============================================================================
# Encoders (raw bytes for the writer)
# ==============================================================================

def encode_f32(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def encode_f16(a):
    return np.ascontiguousarray(a, dtype="<f2").tobytes()


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bits (NaN kept as a quiet NaN)."""
    f = np.ascontiguousarray(a, dtype="<f4")
    u = f.view("<u4")
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
    nan = np.isnan(f)
    if nan.any():
        r[nan] = 0x7FC0
    return r


def encode_bf16(a):
    return f32_to_bf16_bits(a).tobytes()


def encode_q8_0(a):
    """Reference Q8_0 quantizer (d = amax/127, q = round(x/d)); n must be a multiple of 32."""
    x = np.asarray(a, dtype=np.float32).reshape(-1, 32)
    amax = np.max(np.abs(x), axis=1)
    d = amax / 127.0
    idv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0.0).astype(np.float32)
    q = np.clip(np.round(x * idv[:, None]), -128, 127).astype(np.int8)
    out = np.empty((x.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def pack_q6_k(q, scales, d):
    """Pack a Q6_K tensor from its integer parts: q [nb,256] in -32..31, scales [nb,16] int8,
    d [nb] (rounded to f16).  value[e] = d * scales[e//16] * q[e]."""
    q = np.asarray(q, dtype=np.int32).reshape(-1, 256) + 32
    if q.min() < 0 or q.max() > 63:
        raise ValueError("Q6_K quants out of range")
    nb = q.shape[0]
    out = np.zeros((nb, 210), dtype=np.uint8)
    for h in range(2):
        o = 128 * h
        q1, q2, q3, q4 = (q[:, o + 32 * k:o + 32 * k + 32] for k in range(4))
        out[:, 64 * h:64 * h + 32] = (q1 & 0xF) | ((q3 & 0xF) << 4)
        out[:, 64 * h + 32:64 * h + 64] = (q2 & 0xF) | ((q4 & 0xF) << 4)
        out[:, 128 + 32 * h:128 + 32 * h + 32] = ((q1 >> 4) | ((q2 >> 4) << 2)
                                                   | ((q3 >> 4) << 4) | ((q4 >> 4) << 6))
    out[:, 192:208] = np.asarray(scales, dtype=np.int8).reshape(nb, 16).view(np.uint8)
    out[:, 208:210] = np.asarray(d, dtype="<f2").reshape(nb, 1).view(np.uint8)
    return out.tobytes()


def encode_q6_k(a):
    """Simple (not error-optimal) Q6_K quantizer, for crafting test files."""
    x = np.asarray(a, dtype=np.float64).reshape(-1, 256)
    g = x.reshape(-1, 16, 16)
    gs = np.max(np.abs(g), axis=2) / 31.0                     # per-16 scale
    d = (np.max(gs, axis=1) / 127.0).astype(np.float16).astype(np.float64)
    sc = np.where(d[:, None] > 0, np.rint(gs / np.where(d[:, None] > 0, d[:, None], 1)), 0)
    sc = np.clip(sc, -128, 127)
    step = d[:, None] * sc
    q = np.where(step[:, :, None] > 0, np.rint(g / np.where(step[:, :, None] > 0, step[:, :, None], 1)), 0)
    q = np.clip(q, -32, 31).reshape(-1, 256)
    return pack_q6_k(q, sc.astype(np.int8), d)


def encode_i2s(codes, scale, pad=None):
    """codes: ternary ints (-1,0,1), any shape, row-major; total multiple of 128."""
    c = np.asarray(codes).reshape(-1).astype(np.int16) + 1
    if c.size % 128:
        raise ValueError("I2_S needs a multiple of 128 values")
    if c.min() < 0 or c.max() > 2:
        raise ValueError("I2_S codes must be -1, 0 or +1")
    c = c.reshape(-1, 4, 32).astype(np.uint8)                    # [blk, group, byte]
    packed = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    if pad is None:
        pad = bytes(28)
    if len(pad) != 28:
        raise ValueError("I2_S padding must be 28 bytes")
    return packed.astype(np.uint8).tobytes() + struct.pack("<f", scale) + bytes(pad)


def encode_tq2_0(codes, d):
    """codes: [rows, ne0] ternary; d: [rows, ne0/256] block scales (stored as f16)."""
    c = (np.asarray(codes).reshape(-1, 256).astype(np.int16) + 1).astype(np.uint8)
    nb = c.shape[0]
    c = c.reshape(nb, 2, 4, 32)                                   # [blk, j, l, m]
    qs = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    out = np.empty((nb, 66), dtype=np.uint8)
    out[:, :64] = qs.reshape(nb, 64)
    out[:, 64:66] = np.asarray(d, dtype="<f2").reshape(nb, 1).view(np.uint8)
    return out.tobytes()


def _pack_trits(t):
    """t: [..., k, m] trits, first most significant -> ceil(value * 256 / 243) as uint8,
    with k=4 groups shifted up one trit (as llama.cpp's qh)."""
    k = t.shape[-2]
    v = np.zeros(t.shape[:-2] + t.shape[-1:], dtype=np.int32)
    for i in range(k):
        v = v * 3 + t[..., i, :]
    if k == 4:
        v = v * 3
    return ((v * 256 + 242) // 243).astype(np.uint8)


def encode_tq1_0(codes, d):
    c = (np.asarray(codes).reshape(-1, 256).astype(np.int32) + 1)
    nb = c.shape[0]
    out = np.empty((nb, 54), dtype=np.uint8)
    out[:, 0:32] = _pack_trits(c[:, 0:160].reshape(nb, 5, 32))
    out[:, 32:48] = _pack_trits(c[:, 160:240].reshape(nb, 5, 16))
    out[:, 48:52] = _pack_trits(c[:, 240:256].reshape(nb, 4, 4))
    out[:, 52:54] = np.asarray(d, dtype="<f2").reshape(nb, 1).view(np.uint8)
    return out.tobytes()


# ==============================================================================
# Writer
# ==============================================================================

def _enc_string(s):
    b = s.encode("utf-8", errors="surrogateescape") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _enc_value(t, v, et=None):
    if t == T_STRING:
        return _enc_string(v)
    if t == T_ARRAY:
        if et is None:
            raise ValueError("array needs an element type")
        head = struct.pack("<IQ", et, len(v))
        if et == T_STRING:
            return head + b"".join(_enc_string(s) for s in v)
        if et == T_ARRAY:
            raise ValueError("nested arrays: not supported by this writer")
        return head + np.asarray(v).astype(_SCALAR_NP[et]).tobytes()
    return struct.pack(_SCALAR_FMT[t], v)


class GGUFWriter:
    def __init__(self, version=3, alignment=None):
        self.version = version
        self.kv = []              # (key, type, elem_type, value)
        self.tensors = []         # (name, ne, type, raw bytes)
        self.alignment = alignment if alignment is not None else DEFAULT_ALIGNMENT
        if alignment is not None:
            self.add_uint32("general.alignment", alignment)

    def add(self, key, t, value, elem_type=None):
        self.kv.append((key, t, elem_type, value))

    def add_string(self, k, v): self.add(k, T_STRING, v)
    def add_uint8(self, k, v): self.add(k, T_UINT8, v)
    def add_int8(self, k, v): self.add(k, T_INT8, v)
    def add_uint16(self, k, v): self.add(k, T_UINT16, v)
    def add_int16(self, k, v): self.add(k, T_INT16, v)
    def add_uint32(self, k, v): self.add(k, T_UINT32, v)
    def add_int32(self, k, v): self.add(k, T_INT32, v)
    def add_uint64(self, k, v): self.add(k, T_UINT64, v)
    def add_int64(self, k, v): self.add(k, T_INT64, v)
    def add_float32(self, k, v): self.add(k, T_FLOAT32, v)
    def add_float64(self, k, v): self.add(k, T_FLOAT64, v)
    def add_bool(self, k, v): self.add(k, T_BOOL, bool(v))
    def add_array(self, k, values, elem_type): self.add(k, T_ARRAY, values, elem_type)

    def add_tensor(self, name, ne, ggml_type, raw):
        self.tensors.append((name, [int(x) for x in ne], int(ggml_type), bytes(raw)))

    def _header(self):
        out = [GGUF_MAGIC, struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv))]
        for key, t, et, v in self.kv:
            out.append(_enc_string(key))
            out.append(struct.pack("<I", t))
            out.append(_enc_value(t, v, et))
        off = 0
        offsets = []
        for name, ne, t, raw in self.tensors:
            off = _align(off, self.alignment)
            offsets.append(off)
            off += len(raw)
        for (name, ne, t, raw), o in zip(self.tensors, offsets):
            out.append(_enc_string(name))
            out.append(struct.pack("<I", len(ne)))
            out.append(struct.pack("<%dQ" % len(ne), *ne))
            out.append(struct.pack("<IQ", t, o))
        head = b"".join(out)
        return head + bytes(_align(len(head), self.alignment) - len(head)), offsets

    def write_to(self, f):
        head, offsets = self._header()
        f.write(head)
        pos = 0
        for (name, ne, t, raw), o in zip(self.tensors, offsets):
            f.write(bytes(o - pos))
            f.write(raw)
            pos = o + len(raw)

    def to_bytes(self):
        import io
        b = io.BytesIO()
        self.write_to(b)
        return b.getvalue()

    def write(self, path):
        with open(path, "wb") as f:
            self.write_to(f)


def dump(path):
    g = GGUFFile(path)
    print("GGUF v%d, %d kv, %d tensors, alignment %d, data at %d"
          % (g.version, len(g.metadata), len(g.tensors), g.alignment, g.data_offset))
    for k, v in g.metadata.items():
        t, et = g.metadata_types[k]
        if isinstance(v, (list, np.ndarray)):
            s = "[%s x %d] %s" % (VALUE_TYPE_NAMES[et], len(v), list(v[:4]))
        else:
            s = repr(v)
            if len(s) > 100:
                s = s[:100] + "..."
        print("  %-50s %-8s %s" % (k, VALUE_TYPE_NAMES[t], s))
    for name in g.tensor_order:
        print("  ", g.tensors[name])


if __name__ == "__main__":
    import sys
    for p in sys.argv[1:]:
        dump(p)
