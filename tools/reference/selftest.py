#!/usr/bin/python3
"""Self-test of the reference tools.  Run:  /usr/bin/python3 tools/reference/selftest.py

Checks
 1. bit layouts: hand-computed bytes for I2_S, TQ2_0, TQ1_0; vectorised decoders against
    literal loop transcriptions of the layouts (TQ1_0, TQ2_0, Q6_K, Q8_0, I2_S) on random
    blocks; encoder/decoder round trips; GGUF metadata round trip (all value types,
    v2 and v3, custom alignment).
 2. activation quantisation: hand-computed values (round half to even, clamp, 1e-5 floor).
 3. a 1-layer toy model: bitnet_ref.py against an independent scalar-loop evaluation of the
    model formula (per position, per head, explicit RoPE pairs and softmax).
 4. the 'tiny' shape (256 hidden, 4 layers, 128256 vocab) written as a Hugging Face packed
    checkpoint (f32 and bf16 weight_scale), and as GGUF I2_S (with the Llama 3 tokenizer
    metadata), TQ2_0, TQ1_0 (same codes and scales): all give the same logits.  On the
    'micro' shape: I2_S under 'bitnet-25' with garbage padding, GGUF v2 with alignment 64,
    I2_S with a halved scale plus a llama.cpp `.scale` tensor of 2, F16 linears holding
    {-s, 0, +s} (recognised as already ternary) == the HF checkpoint;
    a Q8_0 embedding stays close; arch `bitnet` without the override runs SiLU.
    bf16 master checkpoints: HF dir == GGUF BF16 == GGUF F32 linears (ternarised at load).
 5. greedy decoding with the KV cache == teacher forcing of the extended sequence;
    command-line round trip through bitnet_ref.py and compare_logits.py.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_py as G          # noqa: E402
import bitnet_ref as R       # noqa: E402
import make_hf_checkpoint as M  # noqa: E402

PY = sys.executable
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def f16(b0, b1):
    return float(np.frombuffer(bytes([b0, b1]), dtype="<f2")[0])


# ---------------------------------------------------------------------------------------
# 1. layouts
# ---------------------------------------------------------------------------------------

def naive_i2s(raw, n):
    """Doc section 3: block of 128 = 32 bytes; byte b holds 128i+b (bits 7-6), +32, +64, +96."""
    out = [0] * n
    for i in range(n // 128):
        for b in range(32):
            byte = raw[32 * i + b]
            for g in range(4):
                out[128 * i + b + 32 * g] = ((byte >> (6 - 2 * g)) & 3) - 1
    return out


def naive_tq2_0(blk):
    d = f16(blk[64], blk[65])
    y = []
    for j in (0, 32):
        for l in range(4):
            for m in range(32):
                y.append((((blk[j + m] >> (2 * l)) & 3) - 1) * d)
    return y


def naive_tq1_0(blk):
    pow3 = [1, 3, 9, 27, 81, 243]
    qs, qh = blk[0:48], blk[48:52]
    d = f16(blk[52], blk[53])
    y = []
    for n in range(5):
        for m in range(32):
            q = (qs[m] * pow3[n]) & 0xFF
            y.append((((q * 3) >> 8) - 1) * d)
    for n in range(5):
        for m in range(16):
            q = (qs[32 + m] * pow3[n]) & 0xFF
            y.append((((q * 3) >> 8) - 1) * d)
    for n in range(4):
        for j in range(4):
            q = (qh[j] * pow3[n]) & 0xFF
            y.append((((q * 3) >> 8) - 1) * d)
    return y


def naive_q6_k(blk):
    ql, qh = blk[0:128], blk[128:192]
    sc = [v - 256 if v > 127 else v for v in blk[192:208]]
    d = f16(blk[208], blk[209])
    y = [0.0] * 256
    for h in range(2):
        L, Hh, S, o = ql[64 * h:], qh[32 * h:], sc[8 * h:], 128 * h
        for l in range(32):
            is_ = l // 16
            q1 = ((L[l] & 0xF) | (((Hh[l] >> 0) & 3) << 4)) - 32
            q2 = ((L[l + 32] & 0xF) | (((Hh[l] >> 2) & 3) << 4)) - 32
            q3 = ((L[l] >> 4) | (((Hh[l] >> 4) & 3) << 4)) - 32
            q4 = ((L[l + 32] >> 4) | (((Hh[l] >> 6) & 3) << 4)) - 32
            y[o + l] = d * S[is_] * q1
            y[o + l + 32] = d * S[is_ + 2] * q2
            y[o + l + 64] = d * S[is_ + 4] * q3
            y[o + l + 96] = d * S[is_ + 6] * q4
    return y


def test_layouts(rng):
    # hand-computed bytes: values at 0, 32, 64, 96 (and 128) of a block = +1, -1, 0, +1, 0
    codes = np.zeros(256, dtype=np.int8)
    codes[[0, 32, 64, 96, 128]] = [1, -1, 0, 1, 0]
    raw = G.encode_i2s(codes, 0.5)
    check(len(raw) == 256 // 4 + 32 and raw[0] == 0x86 and raw[1] == 0x55,
          "I2_S hand-packed byte 0x86 (codes 2,0,1,2), untouched byte 0x55, size n/4+32")
    check(np.frombuffer(raw[64:68], "<f4")[0] == 0.5, "I2_S scale f32 after the packed bytes")
    raw = G.encode_tq2_0(codes, [1.0])
    check(len(raw) == 66 and raw[0] == 146, "TQ2_0 hand-packed qs[0] = 2|0<<2|1<<4|2<<6 = 146")
    raw = G.encode_tq1_0(codes, [1.0])
    # trits (most significant first) 2,0,1,2,1 -> 178 -> ceil(178*256/243) = 188
    check(len(raw) == 54 and raw[0] == 188, "TQ1_0 hand-packed qs[0] = ceil(178*256/243) = 188")

    # I2_S random round trip + naive decode
    n = 128 * 6
    c = rng.integers(-1, 2, n).astype(np.int8)
    pad = bytes(rng.integers(0, 256, 28).astype(np.uint8))
    raw = np.frombuffer(G.encode_i2s(c, 0.0375, pad=pad), dtype=np.uint8)
    dc, s = G.decode_i2s(raw, n)
    check(np.array_equal(dc, c) and s == np.float32(0.0375)
          and naive_i2s(list(raw), n) == list(c), "I2_S round trip and naive decode")

    # TQ2_0: random codes; compare with naive
    nb = 5
    c = rng.integers(-1, 2, 256 * nb).astype(np.int8)
    d = (rng.uniform(0.01, 1, nb)).astype(np.float16)
    raw = np.frombuffer(G.encode_tq2_0(c, d), dtype=np.uint8)
    dc, dd = G.decode_tq2_0(raw, 256 * nb)
    naive = sum((naive_tq2_0(list(raw[66 * i:66 * i + 66])) for i in range(nb)), [])
    check(np.array_equal(dc, c) and np.array_equal(dd, d.astype(np.float64))
          and np.array_equal(np.array(naive), (dc.reshape(nb, 256) * dd[:, None]).reshape(-1)),
          "TQ2_0 round trip and naive decode")

    # TQ1_0: random codes round trip, random BYTES against naive decode
    c = rng.integers(-1, 2, 256 * nb).astype(np.int8)
    raw = np.frombuffer(G.encode_tq1_0(c, d), dtype=np.uint8)
    dc, dd = G.decode_tq1_0(raw, 256 * nb)
    check(np.array_equal(dc, c) and np.array_equal(dd, d.astype(np.float64)),
          "TQ1_0 encode/decode round trip")
    rb = rng.integers(0, 256, (nb, 54)).astype(np.uint8)
    rb[:, 52:54] = d.reshape(nb, 1).view(np.uint8)
    dc, dd = G.decode_tq1_0(rb.reshape(-1), 256 * nb)
    naive = sum((naive_tq1_0(list(rb[i])) for i in range(nb)), [])
    check(np.array_equal(np.array(naive), (dc.reshape(nb, 256) * dd[:, None]).reshape(-1)),
          "TQ1_0 vectorised decode == naive loop decode on random bytes")

    # Q6_K: random bytes against naive; pack round trip
    rb = rng.integers(0, 256, (nb, 210)).astype(np.uint8)
    rb[:, 208:210] = d.reshape(nb, 1).view(np.uint8)
    v = G.dequantize_raw(G.GGML_Q6_K, rb.reshape(-1), 256 * nb)
    naive = sum((naive_q6_k(list(rb[i])) for i in range(nb)), [])
    check(np.array_equal(v, np.array(naive)), "Q6_K vectorised decode == naive loop decode")
    q = rng.integers(-32, 32, (nb, 256))
    sc = rng.integers(-128, 128, (nb, 16)).astype(np.int8)
    raw = np.frombuffer(G.pack_q6_k(q, sc, d), dtype=np.uint8)
    v = G.dequantize_raw(G.GGML_Q6_K, raw, 256 * nb).reshape(nb, 256)
    want = d.astype(np.float64)[:, None] * sc.astype(np.float64)[:, np.arange(256) // 16] * q
    check(np.array_equal(v, want), "Q6_K pack/dequant round trip")
    x = rng.standard_normal(256 * nb)
    err = np.abs(G.dequantize_raw(G.GGML_Q6_K, np.frombuffer(G.encode_q6_k(x), np.uint8),
                                  256 * nb) - x).max()
    check(err < 0.1, "Q6_K simple quantizer error %.3g < 0.1" % err)

    # Q8_0
    x = rng.standard_normal(32 * 4)
    raw = np.frombuffer(G.encode_q8_0(x), dtype=np.uint8)
    v = G.dequantize_raw(G.GGML_Q8_0, raw, x.size)
    naive = []
    for i in range(4):
        b = raw[34 * i:34 * i + 34]
        dd = f16(b[0], b[1])
        naive += [dd * (int(t) - 256 if t > 127 else int(t)) for t in b[2:]]
    check(np.array_equal(v, np.array(naive)) and np.abs(v - x).max() < 0.02,
          "Q8_0 decode == naive, quantisation error small")

    # BF16 / F16
    x = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    xb = M.bf16_round(x)
    v = G.dequantize_raw(G.GGML_BF16, np.frombuffer(G.encode_bf16(x), np.uint8), 4)
    check(np.array_equal(v, xb.astype(np.float64)) and xb[2] == 3.140625, "BF16 round trip")
    v = G.dequantize_raw(G.GGML_F16, np.frombuffer(G.encode_f16(x), np.uint8), 4)
    check(np.array_equal(v, x.astype(np.float16).astype(np.float64)), "F16 decode")


def test_gguf_roundtrip(tmp):
    for version, align in ((3, None), (2, 64)):
        w = G.GGUFWriter(version=version, alignment=align)
        w.add_string("general.architecture", "bitnet-b1.58")
        vals = {}
        for t, v in ((G.T_UINT8, 200), (G.T_INT8, -5), (G.T_UINT16, 60000), (G.T_INT16, -3000),
                     (G.T_UINT32, 4000000000), (G.T_INT32, -7), (G.T_FLOAT32, 0.5),
                     (G.T_BOOL, True), (G.T_UINT64, 2 ** 40), (G.T_INT64, -2 ** 40),
                     (G.T_FLOAT64, 1e-300), (G.T_STRING, "h\u00e9llo \u2603")):
            w.add("k.%d" % t, t, v)
            vals["k.%d" % t] = v
        w.add_array("a.str", ["a", "", "\u00fc"], G.T_STRING)
        w.add_array("a.f32", [1.5, -2.0], G.T_FLOAT32)
        w.add_array("a.i32", [1, -2, 3], G.T_INT32)
        w.add_array("a.bool", [True, False], G.T_BOOL)
        codes = np.tile(np.array([-1, 0, 1, 1], dtype=np.int8), 128 * 2 // 4).reshape(2, 128)
        w.add_tensor("t.i2s", [128, 2], G.GGML_I2_S, G.encode_i2s(codes, 2.0))
        w.add_tensor("t.f32", [3], G.GGML_F32, G.encode_f32([1, 2, 3]))
        q8 = np.concatenate([np.arange(-127, 128, 8), [127], np.arange(-100, 120, 7)])[:64] * 0.25
        w.add_tensor("t.q8", [64, 1], G.GGML_Q8_0, G.encode_q8_0(q8))
        p = os.path.join(tmp, "rt%d.gguf" % version)
        w.write(p)
        g = G.GGUFFile(p)
        ok = g.version == version and g.alignment == (align or 32)
        ok &= all(g.metadata[k] == v for k, v in vals.items() if k != "k.%d" % G.T_FLOAT32)
        ok &= g.metadata["k.%d" % G.T_FLOAT32] == 0.5
        ok &= g.metadata["a.str"] == ["a", "", "\u00fc"]
        ok &= list(g.metadata["a.f32"]) == [1.5, -2.0] and list(g.metadata["a.i32"]) == [1, -2, 3]
        ok &= list(g.metadata["a.bool"]) == [True, False]
        ok &= g.data_offset % g.alignment == 0
        ok &= all(ti.offset % g.alignment == 0 for ti in g.tensors.values())
        ok &= np.array_equal(g.dequantize("t.i2s"), codes * 2.0)
        ok &= np.array_equal(g.dequantize("t.f32"), [1, 2, 3])
        ok &= np.array_equal(g.dequantize("t.q8").reshape(-1), q8)
        ok &= g.tensors["t.i2s"].shape == (2, 128)
        g.close()
        check(ok, "GGUF v%d write/read round trip (all value types, arrays, alignment %d)"
              % (version, align or 32))
    # type 36 outside the BitNet architectures is refused
    w = G.GGUFWriter()
    w.add_string("general.architecture", "llama")
    w.add_tensor("t", [128], G.GGML_I2_S, G.encode_i2s(np.zeros(128), 1.0))
    p = os.path.join(tmp, "bad.gguf")
    w.write(p)
    try:
        G.GGUFFile(p)
        check(False, "type 36 refused outside bitnet-b1.58/bitnet-25")
    except ValueError:
        check(True, "type 36 refused outside bitnet-b1.58/bitnet-25")


def test_act_quant():
    xq, a = R.act_quant(np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, -126.5, 3.49]]))
    check(a[0, 0] == 1.0 and list(xq[0]) == [127, 0, 2, 2, 0, -2, -126, 3],
          "act_quant: a = 127/max|x|, round half to even")
    xq, a = R.act_quant(np.array([[1.0, -1.0, 0.5]]))
    check(list(xq[0]) == [127, -127, 64], "act_quant: 63.5 -> 64 (half to even)")
    xq, a = R.act_quant(np.zeros((1, 4)))
    check(a[0, 0] == 127.0 / 1e-5 and not xq.any(), "act_quant: max floored at 1e-5")
    xq, a = R.act_quant(np.array([[2e-6, -4e-6]]))
    check(list(xq[0]) == [25, -51] and abs(a[0, 0] - 127e5) < 1e-6,
          "act_quant: tiny inputs use the floor")
    c, s = R.ternarize(np.array([[0.75, -0.125, 0.25, -0.875]]))
    check(s == 0.5 and list(c[0]) == [1, 0, 0, -1],
          "ternarize: s = mean|W|, rint(W/s) clipped (0.5 -> 0)")


# ---------------------------------------------------------------------------------------
# 3. toy model against a scalar-loop formula
# ---------------------------------------------------------------------------------------

def toy_formula(P, tokens):
    """Independent scalar evaluation of the model (one layer), from the formula."""
    H, KV, hd = P["H"], P["KV"], P["hd"]
    eps, base = P["eps"], P["base"]

    def rms(v, w):
        ms = sum(t * t for t in v) / len(v)
        r = 1.0 / math.sqrt(ms + eps)
        return [t * r * wi for t, wi in zip(v, w)]

    def bitlinear(v, codes, s):
        mx = max(max(abs(t) for t in v), 1e-5)
        a = 127.0 / mx
        q = [min(max(float(round(t * a)), -128.0), 127.0) for t in v]   # round(): half-even
        return [float(np.dot(codes[r].astype(np.float64), q)) * s / a for r in range(len(codes))]

    def rope(vec, pos):
        out = list(vec)
        for i in range(hd // 2):
            th = pos * base ** (-2.0 * i / hd)
            x1, x2 = vec[i], vec[i + hd // 2]
            out[i] = x1 * math.cos(th) - x2 * math.sin(th)
            out[i + hd // 2] = x2 * math.cos(th) + x1 * math.sin(th)
        return out

    Ks, Vs, logits = [], [], []
    for pos, tok in enumerate(tokens):
        x = [float(t) for t in P["emb"][tok]]
        a = rms(x, P["attn_norm"])
        q = bitlinear(a, *P["attn_q"])
        k = bitlinear(a, *P["attn_k"])
        v = bitlinear(a, *P["attn_v"])
        Ks.append([rope(k[h * hd:(h + 1) * hd], pos) for h in range(KV)])
        Vs.append([v[h * hd:(h + 1) * hd] for h in range(KV)])
        att = []
        for h in range(H):
            kv = h // (H // KV)
            qh = rope(q[h * hd:(h + 1) * hd], pos)
            sc = [sum(qi * ki for qi, ki in zip(qh, Ks[j][kv])) / math.sqrt(hd)
                  for j in range(pos + 1)]
            mx = max(sc)
            e = [math.exp(t - mx) for t in sc]
            z = sum(e)
            att += [sum(e[j] / z * Vs[j][kv][i] for j in range(pos + 1)) for i in range(hd)]
        o = bitlinear(rms(att, P["attn_sub_norm"]), *P["attn_output"])
        x = [xi + oi for xi, oi in zip(x, o)]
        m = rms(x, P["ffn_norm"])
        g = bitlinear(m, *P["ffn_gate"])
        u = bitlinear(m, *P["ffn_up"])
        f = [max(gi, 0.0) ** 2 * ui for gi, ui in zip(g, u)]
        dn = bitlinear(rms(f, P["ffn_sub_norm"]), *P["ffn_down"])
        x = [xi + di for xi, di in zip(x, dn)]
        hN = rms(x, P["norm"])
        logits.append([float(np.dot(P["emb"][t].astype(np.float64), hN))
                       for t in range(len(P["emb"]))])
    return np.array(logits)


def test_toy(tmp, rng):
    D, H, KV, hd, F, V = 128, 2, 1, 64, 256, 300
    P = dict(D=D, H=H, KV=KV, hd=hd, F=F, eps=float(np.float32(1e-5)), base=10000.0)
    P["emb"] = M.bf16_f16_exact(rng.standard_normal((V, D)) * 0.3)
    P["norm"] = M.bf16_round(1 + 0.2 * rng.standard_normal(D))
    for n, size in (("attn_norm", D), ("ffn_norm", D), ("attn_sub_norm", D), ("ffn_sub_norm", F)):
        P[n] = M.bf16_round(1 + 0.2 * rng.standard_normal(size))
    dims = {"attn_q": (H * hd, D), "attn_k": (KV * hd, D), "attn_v": (KV * hd, D),
            "attn_output": (D, H * hd), "ffn_gate": (F, D), "ffn_up": (F, D), "ffn_down": (D, F)}
    scl = {"attn_q": 0.125, "attn_k": 0.125, "attn_v": 0.03125, "attn_output": 0.03125,
           "ffn_gate": 0.0625, "ffn_up": 0.0625, "ffn_down": 0.02}
    for n, shp in dims.items():
        P[n] = (rng.integers(-1, 2, shp).astype(np.int8), float(np.float32(scl[n])))
    w = G.GGUFWriter()
    arch = "bitnet-b1.58"
    w.add_string("general.architecture", arch)
    for k, v in (("embedding_length", D), ("block_count", 1), ("feed_forward_length", F),
                 ("attention.head_count", H), ("attention.head_count_kv", KV),
                 ("context_length", 64)):
        w.add_uint32(arch + "." + k, v)
    w.add_float32(arch + ".attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32(arch + ".rope.freq_base", 10000.0)
    w.add_tensor("token_embd.weight", [D, V], G.GGML_F16, G.encode_f16(P["emb"]))
    w.add_tensor("output_norm.weight", [D], G.GGML_F32, G.encode_f32(P["norm"]))
    for n in ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm"):
        w.add_tensor("blk.0.%s.weight" % n, [P[n].size], G.GGML_F32, G.encode_f32(P[n]))
    for n in dims:
        c, s = P[n]
        w.add_tensor("blk.0.%s.weight" % n, [c.shape[1], c.shape[0]], G.GGML_I2_S,
                     G.encode_i2s(c, s))
    p = os.path.join(tmp, "toy.gguf")
    w.write(p)
    tokens = [5, 17, 299, 0, 17, 42]
    model = R.load_gguf(p)
    got, _ = R.run(model, tokens)
    want = toy_formula(P, tokens)
    err = np.abs(got - want).max()
    check(err < 1e-9 and want.std() > 0.5,
          "1-layer toy: bitnet_ref == scalar formula (max |diff| %.2e, logit std %.2f)"
          % (err, want.std()))
    # at position 0 attention returns v exactly: check one closed form too
    x0 = P["emb"][tokens[0]].astype(np.float64)

    def ql(v, c, s):
        a = 127 / max(np.abs(v).max(), 1e-5)
        return (c.astype(np.float64) @ np.clip(np.rint(v * a), -128, 127)) * s / a

    def nrm(v, w_):
        return v / np.sqrt(np.mean(v * v) + P["eps"]) * w_
    a0 = nrm(x0, P["attn_norm"])
    v0 = ql(a0, *P["attn_v"])
    h = x0 + ql(nrm(np.tile(v0, H), P["attn_sub_norm"]), *P["attn_output"])
    m = nrm(h, P["ffn_norm"])
    f = np.maximum(ql(m, *P["ffn_gate"]), 0) ** 2 * ql(m, *P["ffn_up"])
    h = h + ql(nrm(f, P["ffn_sub_norm"]), *P["ffn_down"])
    l0 = P["emb"].astype(np.float64) @ nrm(h, P["norm"])
    check(np.abs(l0 - got[0]).max() < 1e-10, "1-layer toy: position 0 closed form (att = v)")


# ---------------------------------------------------------------------------------------
# 4./5. formats
# ---------------------------------------------------------------------------------------

def test_formats(tmp, rng):
    tokens = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13, 1, 2, 3,
              128001, 42, 42, 42, 100000, 128255]
    t0 = time.time()
    m = M.generate("tiny", seed=1234)
    hf = os.path.join(tmp, "hf")
    M.write_hf(m, hf, copy_tokenizer=False)
    files = {}
    for lt in ("i2_s", "tq2_0", "tq1_0"):
        files[lt] = os.path.join(tmp, "m_%s.gguf" % lt)
        M.write_gguf(m, files[lt], ltype=lt, tokenizer=(lt == "i2_s"))
    print("     (wrote the tiny model in %d forms: %.1f s)" % (len(files) + 2, time.time() - t0))

    ref_model = R.load_hf(hf)
    ref, gen = R.run(ref_model, tokens, greedy=4, all_logits=True)
    ref_tf = ref[:len(tokens)]
    check(ref_tf.std() > 1.0, "tiny model logits are not degenerate (std %.2f)" % ref_tf.std())
    # greedy with KV cache == teacher forcing of the whole sequence
    tf, _ = R.run(ref_model, tokens + gen)
    check(np.abs(tf - ref).max() < 1e-9
          and all(gen[i] == int(np.argmax(ref[len(tokens) - 1 + i])) for i in range(4)),
          "greedy (KV cache) == teacher forcing of prompt+generated; tokens are argmaxes")
    del ref_model
    g = G.GGUFFile(files["i2_s"])
    check(len(g.metadata["tokenizer.ggml.tokens"]) == 128256
          and g.metadata["tokenizer.ggml.tokens"][128000] == "<|begin_of_text|>"
          and len(g.metadata["tokenizer.ggml.merges"]) > 200000,
          "tokenizer metadata written and read back (%d merges)"
          % len(g.metadata["tokenizer.ggml.merges"]))
    g.close()

    for name, path in files.items():
        mod = R.load_model(path)
        if name.startswith("tq"):
            check(mod.cfg.act == "relu2" and mod.cfg.arch == "bitnet",
                  "%s: arch bitnet with trinity.ffn_activation=relu2" % name)
        got, _ = R.run(mod, tokens)
        err = np.abs(got - ref_tf).max()
        check(err < 1e-9, "%s == HF packed checkpoint (max |diff| %.2e)" % (name, err))

    # smaller shape for the remaining GGUF variants (less I/O)
    mm = M.generate("micro", seed=99)
    mtok = [t % 1024 for t in tokens]
    hfm = os.path.join(tmp, "hf_micro")
    M.write_hf(mm, hfm, copy_tokenizer=False)
    mref, _ = R.run(R.load_model(hfm), mtok)
    variants = {"HF bf16 weight_scale": os.path.join(tmp, "hf_micro_bf16scale")}
    M.write_hf(mm, variants["HF bf16 weight_scale"], scale_dtype="bf16", copy_tokenizer=False)
    variants["i2_s bitnet-25 garbage pad"] = os.path.join(tmp, "mm_b25.gguf")
    M.write_gguf(mm, variants["i2_s bitnet-25 garbage pad"], ltype="i2_s", arch="bitnet-25",
                 i2s_pad=bytes(range(200, 228)))
    variants["i2_s GGUF v2, alignment 64"] = os.path.join(tmp, "mm_v2.gguf")
    M.write_gguf(mm, variants["i2_s GGUF v2, alignment 64"], ltype="i2_s", version=2,
                 alignment=64)
    # halved I2_S scales compensated by llama.cpp-style .scale tensors
    m2 = {**mm, "layers": [{k: (v if k not in M.HF_LINEAR else (v[0], v[1], v[2] / 2))
                            for k, v in L.items()} for L in mm["layers"]]}
    variants["i2_s scale/2 + .scale=2"] = os.path.join(tmp, "mm_sc.gguf")
    M.write_gguf(m2, variants["i2_s scale/2 + .scale=2"], ltype="i2_s",
                 scale_tensors={n: 2.0 for n in M.HF_LINEAR})
    variants["F16 linears holding {-s,0,s} (llama.cpp bitnet style)"] = os.path.join(tmp, "mm_f16.gguf")
    M.write_gguf(mm, variants["F16 linears holding {-s,0,s} (llama.cpp bitnet style)"], ltype="f16")
    variants["tq1_0 q8_0 embedding"] = os.path.join(tmp, "mm_q8.gguf")
    M.write_gguf(mm, variants["tq1_0 q8_0 embedding"], ltype="tq1_0", emb_type="q8_0")
    for name, path in variants.items():
        got, _ = R.run(R.load_model(path), mtok)
        err = np.abs(got - mref).max()
        if "q8_0" in name:
            check(0 < err < 0.2 * mref.std(), "micro %s: close to the f16-embedding logits "
                  "(max |diff| %.3f, logit std %.2f)" % (name, err, mref.std()))
        else:
            check(err < 1e-9, "micro %s == HF packed checkpoint (max |diff| %.2e)" % (name, err))

    got, _ = R.run(R.load_gguf(os.path.join(tmp, "mm_f16.gguf"), detect_ternary=False), mtok)
    check(np.abs(got - mref).max() > 1e-2, "F16 {-s,0,s} linears with absmean re-applied differ "
          "(scale becomes s * density): detection matters")

    # `bitnet` without the override uses SiLU
    # (write the TQ2_0 file, then copy it without the trinity.ffn_activation key)
    M.write_gguf(mm, os.path.join(tmp, "m_silu.gguf"), ltype="tq2_0")
    gg = G.GGUFFile(os.path.join(tmp, "m_silu.gguf"))
    w = G.GGUFWriter()
    for k, v in gg.metadata.items():
        if k == "trinity.ffn_activation":
            continue
        t, et = gg.metadata_types[k]
        w.add(k, t, v, et)
    for n in gg.tensor_order:
        ti = gg.tensors[n]
        w.add_tensor(n, ti.ne, ti.type, gg.tensor_bytes(n).tobytes())
    gg.close()
    w.write(os.path.join(tmp, "m_silu.gguf"))
    mod = R.load_model(os.path.join(tmp, "m_silu.gguf"))
    got, _ = R.run(mod, mtok)
    check(mod.cfg.act == "silu" and np.abs(got - mref).max() > 1e-3,
          "arch bitnet without override: SiLU (logits differ from relu^2)")

    # bf16 master checkpoints
    mb = M.generate("micro", seed=7, bf16=True)
    hfm = os.path.join(tmp, "hf_master")
    M.write_hf(mb, hfm, copy_tokenizer=False)
    ref, _ = R.run(R.load_model(hfm), mtok)
    for lt in ("bf16", "f32"):
        p = os.path.join(tmp, "master_%s.gguf" % lt)
        M.write_gguf(mb, p, ltype=lt, emb_type="bf16", tokenizer=False)
        got, _ = R.run(R.load_model(p), mtok)
        err = np.abs(got - ref).max()
        check(err < 1e-9 and ref.std() > 1.0,
              "bf16 masters: GGUF %s linears == HF bf16 checkpoint (max |diff| %.2e)" % (lt, err))

    # command line round trip (micro shape: less start-up time)
    tok = ",".join(str(t) for t in mtok)
    a, b = os.path.join(tmp, "a.bin"), os.path.join(tmp, "b.bin")
    r1 = subprocess.run([PY, os.path.join(HERE, "bitnet_ref.py"), variants["tq1_0 q8_0 embedding"],
                         "--tokens", tok, "-o", a, "--greedy", "3", "--all-logits"],
                        capture_output=True, text=True)
    qmod = R.load_model(variants["tq1_0 q8_0 embedding"])
    qref, qgen = R.run(qmod, mtok, greedy=3, all_logits=True)
    g3 = json.loads(r1.stdout)["tokens"] if r1.returncode == 0 else None
    got = np.fromfile(a, dtype="<f4").reshape(-1, 1024) if r1.returncode == 0 else None
    check(r1.returncode == 0 and g3 == qgen and got.shape == (len(mtok) + 3, 1024)
          and np.array_equal(got, qref.astype("<f4")),
          "CLI: bitnet_ref.py --greedy 3 --all-logits prints %s, writes [n+3][vocab] float32" % g3)
    r2 = subprocess.run([PY, os.path.join(HERE, "bitnet_ref.py"), hfm, "--tokens", tok,
                         "-o", b], capture_output=True, text=True)
    check(r2.returncode == 0 and os.path.getsize(b) == len(mtok) * 1024 * 4,
          "CLI: bitnet_ref.py on an HF directory writes [n][vocab]")
    ib = os.path.join(tmp, "c.bin")
    ref.astype("<f4").tofile(ib)
    r3 = subprocess.run([PY, os.path.join(HERE, "compare_logits.py"), ib, b, "--vocab", "1024",
                         "--atol", "1e-6"], capture_output=True, text=True)
    st = json.loads(r3.stdout)
    check(r3.returncode == 0 and st["max_abs"] == 0 and st["argmax_agree"] == 1.0
          and st["n_positions"] == len(mtok), "CLI: compare_logits.py: %s" % r3.stdout.strip())
    noisy = np.fromfile(b, dtype="<f4")
    noisy[5] += 0.5
    noisy.tofile(b)
    r4 = subprocess.run([PY, os.path.join(HERE, "compare_logits.py"), ib, b, "--vocab", "1024",
                         "--atol", "0.1"], capture_output=True, text=True)
    check(r4.returncode == 1 and abs(json.loads(r4.stdout)["max_abs"] - 0.5) < 1e-5,
          "CLI: compare_logits.py exits 1 when max_abs > atol")


def main():
    t0 = time.time()
    rng = np.random.default_rng(20240601)
    with tempfile.TemporaryDirectory(prefix="bitnet_ref_selftest_") as tmp:
        test_layouts(rng)
        test_gguf_roundtrip(tmp)
        test_act_quant()
        test_toy(tmp, rng)
        test_formats(tmp, rng)
    print("%d failure(s); %.1f s" % (len(FAILS), time.time() - t0))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
