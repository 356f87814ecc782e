#!/usr/bin/python3
"""Independent float64 reference forward pass for BitNet b1.58 models.

Usage:
  /usr/bin/python3 tools/reference/bitnet_ref.py MODEL --tokens 128000,791,4062 -o logits.bin
        [--greedy N] [--all-logits] [--threads-note]

MODEL is a GGUF file (architectures bitnet-b1.58, bitnet-25, bitnet) or a Hugging Face
BitNet checkpoint directory (config.json + *.safetensors).

Writes little-endian float32 logits [n_positions][n_vocab] for every prompt position
(teacher forcing).  With --greedy N, N tokens are generated greedily (argmax, lowest id
on ties) and printed as JSON {"tokens": [...]} on stdout; with --all-logits the logits
file then covers prompt + generated tokens (n_prompt + N rows, i.e. the teacher-forced
logits of the whole final sequence).

Numerics follow the TRAINED model (see README.md): float64 everywhere, per-token int8
activation quantisation at the input of every ternary linear, ternary weights with their
scale(s), unquantised LM head.
"""

import argparse
import glob
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_py  # noqa: E402

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")

# float32 integer GEMM is exact while every partial sum stays below 2^24
_F32_EXACT_LIMIT = 1 << 24


# ==============================================================================
# Numerics
# ==============================================================================

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def act_quant(x):
    """Per-token (per-row) absmax int8 quantisation as in BitNet training.
    Returns (xq as float64 integers in [-128, 127], a) with x ~= xq / a."""
    m = np.max(np.abs(x), axis=-1, keepdims=True)
    a = 127.0 / np.maximum(m, 1e-5)
    xq = np.clip(np.rint(x * a), -128.0, 127.0)          # rint: round half to even
    return xq, a


def ternarize(w, detect_ternary=False):
    """Absmean weight quantisation of a master weight: s = max(mean|W|, 1e-5),
    Wq = clip(rint(W/s), -1, 1).

    detect_ternary: a float tensor whose values are all in {-c, 0, +c} is taken to be
    ALREADY quantised (llama.cpp's `bitnet` converter stores such F16/F32 tensors, and
    llama.cpp multiplies by them as they are): codes = sign(W), scale c.  Re-applying
    absmean to it would give the scale c * (fraction of non-zeros) instead."""
    w = np.asarray(w, dtype=np.float64)
    if detect_ternary:
        a = np.abs(w)
        c = float(a.max()) if a.size else 0.0
        if c > 0 and np.all((a == c) | (a == 0)):
            return np.sign(w).astype(np.int8), c
    s = max(float(np.mean(np.abs(w))), 1e-5)
    codes = np.clip(np.rint(w / s), -1, 1).astype(np.int8)
    return codes, s


class TernaryLinear:
    """y = (Wq . xq) * scale / a, with either one per-tensor scale or per-256-block
    scales d[out, in/256] (y_r = sum_b d_rb * (Wq_rb . xq_b) / a)."""

    def __init__(self, codes, scale=None, block_d=None, out_scale=1.0, name=""):
        self.codes = np.ascontiguousarray(codes, dtype=np.int8)      # [out, in]
        self.scale = scale
        self.block_d = None if block_d is None else np.asarray(block_d, dtype=np.float64)
        self.out_scale = float(out_scale)
        self.name = name
        self.n_out, self.n_in = self.codes.shape
        if (scale is None) == (block_d is None):
            raise ValueError("%s: need exactly one of scale / block_d" % name)
        blk = self.n_in if block_d is None else gguf_py.QK_K
        self._exact32 = 128 * blk < _F32_EXACT_LIMIT
        self._cf = None

    # float copies of the codes are cached up to this many bytes in all (a 2B model's
    # codes as float32 take 8 GiB; beyond the budget they are converted at every call)
    cache_budget = int(os.environ.get("BITNET_REF_CACHE_MB", "3072")) << 20
    cache_used = 0

    def _codes_f(self):
        if self._cf is not None:
            return self._cf
        dt = np.float32 if self._exact32 else np.float64
        cf = self.codes.astype(dt).T.copy()                              # [in, out]
        if TernaryLinear.cache_used + cf.nbytes <= TernaryLinear.cache_budget:
            TernaryLinear.cache_used += cf.nbytes
            self._cf = cf
        return cf

    def __call__(self, x):
        xq, a = act_quant(x)
        cf = self._codes_f()
        xqf = xq.astype(cf.dtype)
        if self.block_d is None:
            acc = (xqf @ cf).astype(np.float64)       # exact integer dot products
            y = acc * self.scale / a
        else:
            K = gguf_py.QK_K
            y = np.zeros((x.shape[0], self.n_out), dtype=np.float64)
            for b in range(self.n_in // K):
                acc = (xqf[:, b * K:(b + 1) * K] @ cf[b * K:(b + 1) * K]).astype(np.float64)
                y += acc * self.block_d[:, b]
            y = y / a
        if self.out_scale != 1.0:
            y = y * self.out_scale
        return y


def relu2(x):
    r = np.maximum(x, 0.0)
    return r * r


def silu(x):
    return x / (1.0 + np.exp(-x))


ACTS = {"relu2": relu2, "silu": silu}


def rope_neox(x, pos, n_rot, base):
    """x: [T, H, hd]; rotate the first n_rot dims, pairs (i, i + n_rot/2),
    theta_i = base^(-2i/n_rot), angle = pos * theta_i."""
    half = n_rot // 2
    inv = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    ang = np.asarray(pos, dtype=np.float64)[:, None] * inv[None, :]      # [T, half]
    c = np.cos(ang)[:, None, :]
    s = np.sin(ang)[:, None, :]
    x1 = x[..., :half]
    x2 = x[..., half:n_rot]
    out = x.copy()
    out[..., :half] = x1 * c - x2 * s
    out[..., half:n_rot] = x2 * c + x1 * s
    return out


# ==============================================================================
# Model
# ==============================================================================

class Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "Config(%s)" % ", ".join("%s=%r" % kv for kv in sorted(self.__dict__.items()))


class BitNetModel:
    def __init__(self, cfg, tok_embd, output, output_norm, layers):
        self.cfg = cfg
        self.tok_embd = tok_embd              # float64 [V, D]
        self.output = output                  # float64 [V, D] (may be tok_embd)
        self.output_norm = output_norm
        self.layers = layers                  # list of dicts
        self.act = ACTS[cfg.act]

    # ---- KV cache forward ---------------------------------------------------
    def new_cache(self):
        return {"pos": 0, "k": [None] * self.cfg.n_layer, "v": [None] * self.cfg.n_layer}

    def forward(self, tokens, cache=None):
        """Process tokens after the cached ones; return float64 logits [T, V]."""
        cfg = self.cfg
        if cache is None:
            cache = self.new_cache()
        tokens = np.asarray(tokens, dtype=np.int64)
        T = len(tokens)
        if T == 0:
            return np.zeros((0, cfg.n_vocab))
        if tokens.min() < 0 or tokens.max() >= cfg.n_vocab:
            raise ValueError("token id out of range [0, %d)" % cfg.n_vocab)
        p0 = cache["pos"]
        pos = np.arange(p0, p0 + T)
        H, Hkv, hd = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        grp = H // Hkv
        x = self.tok_embd[tokens].astype(np.float64)
        # causal mask for the new queries against all keys [0, p0+T)
        kpos = np.arange(p0 + T)
        mask = kpos[None, :] > pos[:, None]                       # [T, S]
        for li, L in enumerate(self.layers):
            a = rms_norm(x, L["attn_norm"], cfg.eps)
            q = L["attn_q"](a).reshape(T, H, hd)
            k = L["attn_k"](a).reshape(T, Hkv, hd)
            v = L["attn_v"](a).reshape(T, Hkv, hd)
            q = rope_neox(q, pos, cfg.n_rot, cfg.rope_base)
            k = rope_neox(k, pos, cfg.n_rot, cfg.rope_base)
            if cache["k"][li] is None:
                K, V = k, v
            else:
                K = np.concatenate([cache["k"][li], k], axis=0)
                V = np.concatenate([cache["v"][li], v], axis=0)
            cache["k"][li], cache["v"][li] = K, V
            # scores [H, T, S]
            qh = q.transpose(1, 0, 2)                               # [H, T, hd]
            Kh = np.repeat(K.transpose(1, 0, 2), grp, axis=0)       # [H, S, hd]
            Vh = np.repeat(V.transpose(1, 0, 2), grp, axis=0)
            sc = np.matmul(qh, Kh.transpose(0, 2, 1)) / np.sqrt(float(hd))
            sc = np.where(mask[None], -np.inf, sc)
            sc = sc - np.max(sc, axis=-1, keepdims=True)
            p = np.exp(sc)
            p = p / np.sum(p, axis=-1, keepdims=True)
            att = np.matmul(p, Vh).transpose(1, 0, 2).reshape(T, H * hd)
            att = rms_norm(att, L["attn_sub_norm"], cfg.eps)
            x = x + L["attn_output"](att)
            m = rms_norm(x, L["ffn_norm"], cfg.eps)
            g = self.act(L["ffn_gate"](m)) * L["ffn_up"](m)
            g = rms_norm(g, L["ffn_sub_norm"], cfg.eps)
            x = x + L["ffn_down"](g)
        cache["pos"] = p0 + T
        h = rms_norm(x, self.output_norm, cfg.eps)
        return h @ self.output.T


# ==============================================================================
# Loading: GGUF
# ==============================================================================

def _meta(md, key, default=None, required=True):
    if key in md:
        return md[key]
    if required and default is None:
        raise KeyError("missing metadata key %s" % key)
    return default


def load_gguf(path, verbose=False, detect_ternary=True):
    g = gguf_py.GGUFFile(path)
    md = g.metadata
    arch = md.get("general.architecture")
    if arch not in ("bitnet-b1.58", "bitnet-25", "bitnet"):
        raise ValueError("unsupported architecture %r" % arch)
    act = "silu" if arch == "bitnet" else "relu2"
    if "trinity.ffn_activation" in md:
        act = md["trinity.ffn_activation"]
        if act not in ACTS:
            raise ValueError("trinity.ffn_activation must be relu2 or silu, not %r" % act)
    emb_ti = g.tensors["token_embd.weight"]
    n_embd = int(_meta(md, arch + ".embedding_length"))
    n_head = int(_meta(md, arch + ".attention.head_count"))
    head_dim = n_embd // n_head
    cfg = Config(
        arch=arch, act=act,
        n_embd=n_embd,
        n_layer=int(_meta(md, arch + ".block_count")),
        n_ff=int(_meta(md, arch + ".feed_forward_length")),
        n_head=n_head,
        n_head_kv=int(_meta(md, arch + ".attention.head_count_kv", n_head, required=False)),
        head_dim=head_dim,
        n_rot=int(_meta(md, arch + ".rope.dimension_count", head_dim, required=False)),
        eps=float(_meta(md, arch + ".attention.layer_norm_rms_epsilon")),
        rope_base=float(_meta(md, arch + ".rope.freq_base", 10000.0, required=False)),
        n_ctx=int(_meta(md, arch + ".context_length", 0, required=False)),
        n_vocab=int(emb_ti.ne[1]),
    )
    if emb_ti.ne[0] != n_embd:
        raise ValueError("token_embd ne0 %d != embedding_length %d" % (emb_ti.ne[0], n_embd))
    tok_embd = g.dequantize("token_embd.weight")
    output = g.dequantize("output.weight") if "output.weight" in g.tensors else tok_embd
    output_norm = g.dequantize("output_norm.weight")

    def linear(name):
        ti = g.tensors[name]
        out_scale = 1.0
        sname = name[:-len(".weight")] + ".scale"
        if sname in g.tensors:
            sv = g.dequantize(sname).reshape(-1)
            if sv.size != 1:
                raise ValueError("%s: expected one value, got %d" % (sname, sv.size))
            out_scale = float(sv[0])
        if ti.type in (gguf_py.GGML_I2_S, gguf_py.GGML_TQ1_0, gguf_py.GGML_TQ2_0):
            codes, s, bd = g.ternary(name)
            return TernaryLinear(codes, scale=s, block_d=bd, out_scale=out_scale, name=name)
        codes, s = ternarize(g.dequantize(name), detect_ternary=detect_ternary)
        return TernaryLinear(codes, scale=s, out_scale=out_scale, name=name)

    layers = []
    for i in range(cfg.n_layer):
        L = {}
        for n in NORMS:
            L[n] = g.dequantize("blk.%d.%s.weight" % (i, n))
        for n in LINEARS:
            L[n] = linear("blk.%d.%s.weight" % (i, n))
        layers.append(L)
    _check_shapes(cfg, layers)
    if verbose:
        print("loaded %s: %r" % (path, cfg), file=sys.stderr)
    return BitNetModel(cfg, tok_embd, output, output_norm, layers)


def _check_shapes(cfg, layers):
    D, F, hd = cfg.n_embd, cfg.n_ff, cfg.head_dim
    want = {"attn_q": (cfg.n_head * hd, D), "attn_k": (cfg.n_head_kv * hd, D),
            "attn_v": (cfg.n_head_kv * hd, D), "attn_output": (D, cfg.n_head * hd),
            "ffn_gate": (F, D), "ffn_up": (F, D), "ffn_down": (D, F)}
    if cfg.n_head % cfg.n_head_kv:
        raise ValueError("head_count %d not a multiple of head_count_kv %d"
                         % (cfg.n_head, cfg.n_head_kv))
    for i, L in enumerate(layers):
        for n, shp in want.items():
            if L[n].codes.shape != shp:
                raise ValueError("blk.%d.%s: shape [out,in]=%s, expected %s"
                                 % (i, n, L[n].codes.shape, shp))
        for n, sz in (("attn_norm", D), ("ffn_norm", D), ("attn_sub_norm", cfg.n_head * hd),
                      ("ffn_sub_norm", F)):
            if L[n].shape != (sz,):
                raise ValueError("blk.%d.%s: shape %s, expected (%d,)" % (i, n, L[n].shape, sz))


# ==============================================================================
# Loading: Hugging Face checkpoint directory
# ==============================================================================

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


def read_safetensors(path):
    """Return dict name -> numpy array (BF16 returned as float32)."""
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        base = 8 + n
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b0, b1 = info["data_offsets"]
        raw = np.asarray(buf[base + b0:base + b1])
        dt = info["dtype"]
        shape = tuple(info["shape"])
        if dt == "BF16":
            arr = gguf_py.bf16_bits_to_f32(raw.view("<u2"))
        elif dt in _ST_DTYPES:
            arr = raw.view(_ST_DTYPES[dt])
        else:
            raise ValueError("%s: unsupported safetensors dtype %s" % (name, dt))
        out[name] = arr.reshape(shape)
    return out


def unpack_hf_ternary(packed, n_out):
    """packed uint8 [out/4, in]: element (r, c), r = i*(out/4) + p, is bits 2i..2i+1 of
    packed[p, c]; value = code - 1."""
    packed = np.asarray(packed, dtype=np.uint8)
    q = packed.shape[0]
    if q * 4 != n_out:
        raise ValueError("packed rows %d * 4 != out %d" % (q, n_out))
    c = np.stack([(packed >> (2 * i)) & 3 for i in range(4)], axis=0)   # [4, out/4, in]
    c = c.reshape(n_out, packed.shape[1])
    if np.any(c == 3):
        raise ValueError("packed HF weight contains code 3")
    return c.astype(np.int8) - 1


def load_hf(path, verbose=False, scale_divide=False):
    with open(os.path.join(path, "config.json")) as f:
        hc = json.load(f)
    t = {}
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ValueError("%s: no *.safetensors" % path)
    for fn in files:
        t.update(read_safetensors(fn))
    D = int(hc["hidden_size"])
    H = int(hc["num_attention_heads"])
    hd = int(hc.get("head_dim") or D // H)
    act = hc.get("hidden_act", "relu2")
    if act not in ACTS:
        raise ValueError("hidden_act %r not supported" % act)
    if hc.get("rope_scaling"):
        print("warning: rope_scaling %r ignored" % (hc["rope_scaling"],), file=sys.stderr)
    emb = t["model.embed_tokens.weight"].astype(np.float64)
    cfg = Config(
        arch="hf:" + str(hc.get("model_type")), act=act, n_embd=D,
        n_layer=int(hc["num_hidden_layers"]), n_ff=int(hc["intermediate_size"]),
        n_head=H, n_head_kv=int(hc.get("num_key_value_heads", H)), head_dim=hd,
        n_rot=int(hd * float(hc.get("partial_rotary_factor", 1.0))),
        # eps is added to a float32 tensor in the trained model, i.e. it acts as float32(eps);
        # GGUF stores it as float32 too.
        eps=float(np.float32(hc.get("rms_norm_eps", 1e-5))),
        rope_base=float(hc.get("rope_theta", 10000.0)),
        n_ctx=int(hc.get("max_position_embeddings", 0)), n_vocab=emb.shape[0])
    if hc.get("tie_word_embeddings", True) or "lm_head.weight" not in t:
        output = emb
    else:
        output = t["lm_head.weight"].astype(np.float64)

    hf_names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    norm_names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                  "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"}
    out_dims = {"attn_q": H * hd, "attn_k": cfg.n_head_kv * hd, "attn_v": cfg.n_head_kv * hd,
                "attn_output": D, "ffn_gate": cfg.n_ff, "ffn_up": cfg.n_ff, "ffn_down": D}
    layers = []
    for i in range(cfg.n_layer):
        L = {}
        pre = "model.layers.%d." % i
        for n, hn in norm_names.items():
            L[n] = t[pre + hn + ".weight"].astype(np.float64)
        for n, hn in hf_names.items():
            w = t[pre + hn + ".weight"]
            sk = pre + hn + ".weight_scale"
            if w.dtype == np.uint8:
                if sk not in t:
                    raise ValueError("%s: packed weight without weight_scale" % (pre + hn))
                codes = unpack_hf_ternary(w, out_dims[n])
                s = float(np.asarray(t[sk], dtype=np.float64).reshape(-1)[0])
                if scale_divide:
                    s = 1.0 / s
                L[n] = TernaryLinear(codes, scale=s, name=pre + hn)
            else:
                codes, s = ternarize(w)
                L[n] = TernaryLinear(codes, scale=s, name=pre + hn)
        layers.append(L)
    _check_shapes(cfg, layers)
    if verbose:
        print("loaded %s: %r" % (path, cfg), file=sys.stderr)
    return BitNetModel(cfg, emb, output, t["model.norm.weight"].astype(np.float64), layers)


def load_model(path, verbose=False, hf_scale_divide=False, detect_ternary=True):
    if os.path.isdir(path):
        return load_hf(path, verbose=verbose, scale_divide=hf_scale_divide)
    return load_gguf(path, verbose=verbose, detect_ternary=detect_ternary)


# ==============================================================================
# Driver
# ==============================================================================

def run(model, tokens, greedy=0, all_logits=False):
    """Returns (logits float64 [rows, V], generated token list)."""
    cache = model.new_cache()
    logits = model.forward(tokens, cache)
    rows = [logits]
    gen = []
    last = logits[-1]
    for i in range(greedy):
        nxt = int(np.argmax(last))            # first (lowest) index on ties
        gen.append(nxt)
        if all_logits or i + 1 < greedy:
            lg = model.forward([nxt], cache)
            if all_logits:
                rows.append(lg)
            last = lg[-1]
    return np.concatenate(rows, axis=0), gen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="GGUF file or Hugging Face checkpoint directory")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("-o", "--output", help="logits output file (float32 LE [n][vocab])")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="also generate N tokens greedily; print {\"tokens\": [...]}")
    ap.add_argument("--all-logits", action="store_true",
                    help="with --greedy: write logits of prompt + generated positions")
    ap.add_argument("--hf-scale-divide", action="store_true",
                    help="HF packed checkpoints: divide by weight_scale (older BitLinear "
                         "convention) instead of multiplying")
    ap.add_argument("--no-ternary-detect", action="store_true",
                    help="GGUF float linears: always apply absmean, even to tensors already "
                         "holding only {-c, 0, +c}")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    tokens = [int(x) for x in args.tokens.replace(" ", "").split(",") if x != ""]
    if not tokens:
        ap.error("no tokens")
    model = load_model(args.model, verbose=args.verbose, hf_scale_divide=args.hf_scale_divide,
                       detect_ternary=not args.no_ternary_detect)
    n_total = len(tokens) + args.greedy
    if model.cfg.n_ctx and n_total > model.cfg.n_ctx:
        print("warning: %d tokens exceed context_length %d" % (n_total, model.cfg.n_ctx),
              file=sys.stderr)
    logits, gen = run(model, tokens, args.greedy, args.all_logits)
    if args.output:
        logits.astype("<f4").tofile(args.output)
    if args.verbose:
        print("logits: %d x %d, std %.4f" % (logits.shape[0], logits.shape[1], logits.std()),
              file=sys.stderr)
    if args.greedy:
        print(json.dumps({"tokens": gen}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
