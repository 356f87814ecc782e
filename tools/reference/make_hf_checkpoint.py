#!/usr/bin/python3
"""Write a synthetic BitNet b1.58 checkpoint in Hugging Face layout (and optionally the
same model as GGUF), for testing converters and engines against bitnet_ref.py.

  /usr/bin/python3 tools/reference/make_hf_checkpoint.py OUT_DIR --shape tiny [--seed S]
        [--bf16] [--scale-dtype f32|bf16]
        [--gguf FILE [--gguf-type i2_s|tq2_0|tq1_0|f32|f16|bf16]
                     [--gguf-embd f16|f32|bf16|q8_0|q6_k] [--gguf-arch ARCH] [--no-tokenizer]]

Packed mode (default): every linear is a uint8 `weight` [out/4, in] (HF BitNet packing,
see unpack in bitnet_ref.py) plus `weight_scale` [1].  --bf16: unquantised bf16 master
weights [out, in] instead (no weight_scale; ternarised at load time).

All values are chosen so that every representation is exact: scales and embedding values
are representable in bf16 AND f16, norms in bf16 (hence f32), so the HF directory and
the GGUF variants (I2_S, TQ2_0, TQ1_0 with the same codes and scales) describe the
same numbers.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_py  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TOKENIZER_DIR = os.path.join(REPO, "data", "llama3")

SHAPES = {
    # the shape the project's tests use
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=768, vocab_size=128256,
                 max_position_embeddings=4096),
    # even smaller, for quick unit tests (no matching tokenizer)
    "micro": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, vocab_size=1024,
                  max_position_embeddings=512),
}

# GGUF name -> HF name (inside model.layers.N.)
HF_LINEAR = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
HF_NORM = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
           "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"}
# scale ranges per linear, chosen so attention is not uniform and residuals stay O(1)
SCALE_RANGE = {"attn_q": (0.06, 0.12), "attn_k": (0.06, 0.12), "attn_v": (0.02, 0.04),
               "attn_output": (0.02, 0.04), "ffn_gate": (0.04, 0.08), "ffn_up": (0.04, 0.08),
               "ffn_down": (0.01, 0.03)}


def bf16_round(x):
    return gguf_py.bf16_bits_to_f32(gguf_py.f32_to_bf16_bits(np.asarray(x, dtype=np.float32)))


def bf16_f16_exact(x):
    """Round to bf16, then flush values that would be f16 subnormals: the result is exact
    in bf16, f16, f32."""
    y = bf16_round(x)
    y[np.abs(y) < 2.0 ** -14] = 0.0
    return y


def full_config(shape):
    s = SHAPES[shape]
    cfg = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_size": s["hidden_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "intermediate_size": s["intermediate_size"],
        "vocab_size": s["vocab_size"],
        "max_position_embeddings": s["max_position_embeddings"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "hidden_act": "relu2",
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},
    }
    return cfg


def generate(shape="tiny", seed=0, bf16=False):
    """Synthetic model as a dict of numpy arrays (see module doc)."""
    cfg = full_config(shape)
    if bf16:
        cfg.pop("quantization_config")
    rng = np.random.default_rng(seed)
    D, F = cfg["hidden_size"], cfg["intermediate_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = D // H
    V = cfg["vocab_size"]
    dims = {"attn_q": (H * hd, D), "attn_k": (KV * hd, D), "attn_v": (KV * hd, D),
            "attn_output": (D, H * hd), "ffn_gate": (F, D), "ffn_up": (F, D), "ffn_down": (D, F)}
    m = {"config": cfg, "bf16": bf16}
    m["emb"] = bf16_f16_exact(rng.standard_normal((V, D), dtype=np.float32) * 0.25)
    m["norm"] = bf16_round(1.0 + 0.2 * rng.standard_normal(D))
    layers = []
    for _ in range(cfg["num_hidden_layers"]):
        L = {}
        for n in HF_NORM:
            size = F if n == "ffn_sub_norm" else D
            L[n] = bf16_round(1.0 + 0.2 * rng.standard_normal(size))
        for n, shp in dims.items():
            lo, hi = SCALE_RANGE[n]
            s = float(bf16_f16_exact(np.array([rng.uniform(lo, hi)]))[0])
            if bf16:
                L[n] = ("master", bf16_round(rng.standard_normal(shp, dtype=np.float32) * (s / 0.8)))
            else:
                codes = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=shp, p=[0.3, 0.4, 0.3])
                L[n] = ("ternary", codes, s)
        layers.append(L)
    m["layers"] = layers
    return m


# ---- safetensors writer -------------------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype str, shape, raw bytes)."""
    header = {}
    off = 0
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, _, raw in tensors:
            f.write(raw)


def pack_hf_ternary(codes):
    """codes [out, in] in {-1,0,1} -> uint8 [out/4, in]: element (r, c), r = i*(out/4)+p,
    in bits 2i..2i+1 of packed[p, c] (code = value + 1)."""
    c = (np.asarray(codes, dtype=np.int16) + 1).astype(np.uint8)
    out, inn = c.shape
    if out % 4:
        raise ValueError("out dim must be a multiple of 4")
    q = out // 4
    c = c.reshape(4, q, inn)
    return (c[0] | (c[1] << 2) | (c[2] << 4) | (c[3] << 6)).astype(np.uint8)


def write_hf(m, out_dir, scale_dtype="f32", copy_tokenizer=True):
    os.makedirs(out_dir, exist_ok=True)
    cfg = m["config"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    ts = [("model.embed_tokens.weight", "BF16", m["emb"].shape, gguf_py.encode_bf16(m["emb"]))]
    for i, L in enumerate(m["layers"]):
        pre = "model.layers.%d." % i
        for n, hn in HF_NORM.items():
            ts.append((pre + hn + ".weight", "BF16", L[n].shape, gguf_py.encode_bf16(L[n])))
        for n, hn in HF_LINEAR.items():
            e = L[n]
            if e[0] == "master":
                ts.append((pre + hn + ".weight", "BF16", e[1].shape, gguf_py.encode_bf16(e[1])))
            else:
                packed = pack_hf_ternary(e[1])
                ts.append((pre + hn + ".weight", "U8", packed.shape, packed.tobytes()))
                if scale_dtype == "bf16":
                    ts.append((pre + hn + ".weight_scale", "BF16", (1,),
                               gguf_py.encode_bf16(np.array([e[2]]))))
                else:
                    ts.append((pre + hn + ".weight_scale", "F32", (1,),
                               gguf_py.encode_f32(np.array([e[2]]))))
    ts.append(("model.norm.weight", "BF16", m["norm"].shape, gguf_py.encode_bf16(m["norm"])))
    write_safetensors(os.path.join(out_dir, "model.safetensors"), ts, {"format": "pt"})
    if copy_tokenizer:
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(TOKENIZER_DIR, fn)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(out_dir, fn))
            else:
                print("warning: %s not found, not copied" % src, file=sys.stderr)


# ---- GGUF writer for the same model -------------------------------------------------

def _tokenizer_kv(w, vocab_size):
    path = os.path.join(TOKENIZER_DIR, "tokenizer.json")
    if not os.path.exists(path):
        print("warning: %s not found; GGUF written without tokenizer" % path, file=sys.stderr)
        return
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    toks = [None] * vocab_size
    types = np.ones(vocab_size, dtype=np.int32)
    scores = np.zeros(vocab_size, dtype=np.float32)
    for t, i in tj["model"]["vocab"].items():
        if i < vocab_size:
            toks[i] = t
    for a in tj["added_tokens"]:
        if a["id"] < vocab_size:
            toks[a["id"]] = a["content"]
            types[a["id"]] = 3
            scores[a["id"]] = -1000.0
    missing = [i for i, t in enumerate(toks) if t is None]
    for i in missing:
        toks[i] = "[PAD%d]" % i
    merges = [mg if isinstance(mg, str) else " ".join(mg) for mg in tj["model"]["merges"]]
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", toks, gguf_py.T_STRING)
    w.add_array("tokenizer.ggml.scores", scores, gguf_py.T_FLOAT32)
    w.add_array("tokenizer.ggml.token_type", types, gguf_py.T_INT32)
    w.add_array("tokenizer.ggml.merges", merges, gguf_py.T_STRING)
    w.add_uint32("tokenizer.ggml.bos_token_id", 128000)
    w.add_uint32("tokenizer.ggml.eos_token_id", 128001)
    w.add_uint32("tokenizer.ggml.padding_token_id", 128001)


LTYPES = {"i2_s": gguf_py.GGML_I2_S, "tq2_0": gguf_py.GGML_TQ2_0, "tq1_0": gguf_py.GGML_TQ1_0,
          "f32": gguf_py.GGML_F32, "f16": gguf_py.GGML_F16, "bf16": gguf_py.GGML_BF16}
ETYPES = {"f16": gguf_py.GGML_F16, "f32": gguf_py.GGML_F32, "bf16": gguf_py.GGML_BF16,
          "q8_0": gguf_py.GGML_Q8_0, "q6_k": gguf_py.GGML_Q6_K}
FILE_TYPE = {"i2_s": 40, "tq1_0": 36, "tq2_0": 37, "f32": 0, "f16": 1, "bf16": 32}


def _ternary_of(e):
    if e[0] == "ternary":
        return e[1], e[2]
    w = np.asarray(e[1], dtype=np.float64)
    s = max(float(np.mean(np.abs(w))), 1e-5)
    return np.clip(np.rint(w / s), -1, 1).astype(np.int8), s


def write_gguf(m, path, ltype="i2_s", emb_type="f16", arch=None, tokenizer=True,
               scale_tensors=None, version=3, i2s_pad=None, alignment=None):
    """Write model m as GGUF.  ltype: i2_s | tq2_0 | tq1_0 | f32 | f16 | bf16 (float types
    store W itself: the master for --bf16 models, codes*scale otherwise).
    scale_tensors: optional {gguf linear name: float} written as blk.N.<name>.scale."""
    cfg = m["config"]
    if arch is None:
        arch = "bitnet-b1.58" if ltype == "i2_s" else "bitnet"
    w = gguf_py.GGUFWriter(version=version, alignment=alignment)
    V, D = m["emb"].shape
    w.add_string("general.architecture", arch)
    w.add_string("general.name", "trinity-synthetic")
    w.add_uint32(arch + ".vocab_size", V)
    w.add_uint32(arch + ".context_length", cfg["max_position_embeddings"])
    w.add_uint32(arch + ".embedding_length", D)
    w.add_uint32(arch + ".block_count", cfg["num_hidden_layers"])
    w.add_uint32(arch + ".feed_forward_length", cfg["intermediate_size"])
    w.add_uint32(arch + ".rope.dimension_count", D // cfg["num_attention_heads"])
    w.add_uint32(arch + ".attention.head_count", cfg["num_attention_heads"])
    w.add_uint32(arch + ".attention.head_count_kv", cfg["num_key_value_heads"])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_float32(arch + ".attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    w.add_float32(arch + ".rope.freq_base", cfg["rope_theta"])
    w.add_uint32("general.file_type", FILE_TYPE[ltype])
    if arch == "bitnet":
        # the synthetic model is relu^2; llama.cpp's `bitnet` default would be SiLU
        w.add_string("trinity.ffn_activation", "relu2")
    if tokenizer and V == 128256:
        _tokenizer_kv(w, V)
    w.add_uint32("general.quantization_version", 2)

    et = ETYPES[emb_type]
    enc = {gguf_py.GGML_F16: gguf_py.encode_f16, gguf_py.GGML_F32: gguf_py.encode_f32,
           gguf_py.GGML_BF16: gguf_py.encode_bf16, gguf_py.GGML_Q8_0: gguf_py.encode_q8_0,
           gguf_py.GGML_Q6_K: gguf_py.encode_q6_k}[et]
    w.add_tensor("token_embd.weight", [D, V], et, enc(m["emb"]))
    w.add_tensor("output_norm.weight", [D], gguf_py.GGML_F32, gguf_py.encode_f32(m["norm"]))
    lt = LTYPES[ltype]
    for i, L in enumerate(m["layers"]):
        for n in ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm"):
            w.add_tensor("blk.%d.%s.weight" % (i, n), [L[n].size], gguf_py.GGML_F32,
                         gguf_py.encode_f32(L[n]))
        for n in HF_LINEAR:
            e = L[n]
            out, inn = e[1].shape
            name = "blk.%d.%s.weight" % (i, n)
            if lt in (gguf_py.GGML_F32, gguf_py.GGML_F16, gguf_py.GGML_BF16):
                W = e[1] if e[0] == "master" else e[1].astype(np.float32) * np.float32(e[2])
                raw = {gguf_py.GGML_F32: gguf_py.encode_f32, gguf_py.GGML_F16: gguf_py.encode_f16,
                       gguf_py.GGML_BF16: gguf_py.encode_bf16}[lt](W)
            else:
                codes, s = _ternary_of(e)
                if lt == gguf_py.GGML_I2_S:
                    raw = gguf_py.encode_i2s(codes, s, pad=i2s_pad)
                else:
                    d = np.full((out, inn // gguf_py.QK_K), s)
                    raw = (gguf_py.encode_tq2_0 if lt == gguf_py.GGML_TQ2_0
                           else gguf_py.encode_tq1_0)(codes, d)
            w.add_tensor(name, [inn, out], lt, raw)
            if scale_tensors and n in scale_tensors:
                w.add_tensor("blk.%d.%s.scale" % (i, n), [1], gguf_py.GGML_F32,
                             gguf_py.encode_f32(np.array([scale_tensors[n]])))
    w.write(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="unquantised bf16 master linears")
    ap.add_argument("--scale-dtype", default="f32", choices=["f32", "bf16"],
                    help="dtype of weight_scale (packed mode)")
    ap.add_argument("--gguf", metavar="FILE", help="also write the same model as GGUF")
    ap.add_argument("--gguf-type", default="i2_s", choices=sorted(LTYPES))
    ap.add_argument("--gguf-embd", default="f16", choices=sorted(ETYPES))
    ap.add_argument("--gguf-arch", default=None,
                    help="default: bitnet-b1.58 for i2_s, bitnet otherwise")
    ap.add_argument("--no-tokenizer", action="store_true",
                    help="do not embed the Llama 3 tokenizer in the GGUF")
    args = ap.parse_args(argv)
    m = generate(args.shape, args.seed, args.bf16)
    write_hf(m, args.out_dir, scale_dtype=args.scale_dtype)
    if args.gguf:
        write_gguf(m, args.gguf, ltype=args.gguf_type, emb_type=args.gguf_embd,
                   arch=args.gguf_arch, tokenizer=not args.no_tokenizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
