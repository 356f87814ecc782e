#!/usr/bin/python3
"""Export a training checkpoint to GGUF in Microsoft's BitNet b1.58 I2_S format.

  /usr/bin/python3 tools/train/export_gguf.py --ckpt /tmp/trinity-train/ckpt.pt \\
      --tokenizer models/trinity-tiny-tokenizer.json --out models/trinity-tiny.gguf

Also provides load_gguf_model(path) -> (BitNet with the file's exact weights, Tokenizer, kv),
used by eval_ppl.py and sample.py so that PyTorch numbers are measured on the shipped file.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402
import model as M  # noqa: E402
from tokenizer_train import Tokenizer  # noqa: E402

ARCH = "bitnet-b1.58"

CORPUS_DESCRIPTION = (
    "Trinity English corpus (~30 MB, 12 texts extracted from Debian packages; public domain or "
    "DFSG-free, see models/README.md and MANIFEST.tsv): Austen novels, Moby Dick, Tom Sawyer, "
    "Sherlock Holmes, Newton's Opticks, KJV Bible, Bierce's Devil's Dictionary, Jargon File 4.4.7, "
    "fortunes, WordNet 3.0 glosses and examples, Python 3.11 docs. Held out: the last ~80 KB of "
    "austen_novels.txt (tests/data/heldout.txt) and the last 1% of every other file."
)

LINEARS = {  # pytorch name suffix -> gguf name
    "attn.wq.weight": "attn_q.weight",
    "attn.wk.weight": "attn_k.weight",
    "attn.wv.weight": "attn_v.weight",
    "attn.wo.weight": "attn_output.weight",
    "ffn.gate.weight": "ffn_gate.weight",
    "ffn.up.weight": "ffn_up.weight",
    "ffn.down.weight": "ffn_down.weight",
}
NORMS = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.sub_norm.weight": "attn_sub_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn.sub_norm.weight": "ffn_sub_norm.weight",
}
LAYER_ORDER = ["attn_norm.weight", "attn.wq.weight", "attn.wk.weight", "attn.wv.weight",
               "attn.wo.weight", "attn.sub_norm.weight", "ffn_norm.weight", "ffn.gate.weight",
               "ffn.up.weight", "ffn.down.weight", "ffn.sub_norm.weight"]


def export(ckpt_path, tok_path, out_path, name="trinity-tiny"):
    ck = torch.load(ckpt_path, map_location="cpu")
    cfg = M.Config(**ck["config"])
    sd = ck["model"]
    tok = Tokenizer.load(tok_path)
    args = ck.get("args", {})
    hist = ck.get("history", [])
    assert len(tok.tokens) == cfg.vocab_size

    w = gguf.Writer()
    a = ARCH
    w.add("general.architecture", gguf.STRING, a)
    w.add("general.name", gguf.STRING, name)
    w.add(f"{a}.vocab_size", gguf.UINT32, cfg.vocab_size)
    w.add(f"{a}.context_length", gguf.UINT32, cfg.context_length)
    w.add(f"{a}.embedding_length", gguf.UINT32, cfg.dim)
    w.add(f"{a}.block_count", gguf.UINT32, cfg.n_layers)
    w.add(f"{a}.feed_forward_length", gguf.UINT32, cfg.ffn_dim)
    w.add(f"{a}.rope.dimension_count", gguf.UINT32, cfg.head_dim)
    w.add(f"{a}.attention.head_count", gguf.UINT32, cfg.n_heads)
    w.add(f"{a}.attention.head_count_kv", gguf.UINT32, cfg.n_kv_heads)
    w.add("tokenizer.ggml.add_bos_token", gguf.BOOL, True)
    w.add(f"{a}.attention.layer_norm_rms_epsilon", gguf.FLOAT32, cfg.norm_eps)
    w.add(f"{a}.rope.freq_base", gguf.FLOAT32, cfg.rope_theta)
    w.add("general.file_type", gguf.UINT32, 40)
    w.add("tokenizer.ggml.model", gguf.STRING, "gpt2")
    w.add("tokenizer.ggml.pre", gguf.STRING, "llama-bpe")
    special_ids = set(tok.specials.values())
    w.add("tokenizer.ggml.tokens", gguf.ARRAY, tok.tokens, gguf.STRING)
    w.add("tokenizer.ggml.scores", gguf.ARRAY,
          [-1000.0 if i in special_ids else 0.0 for i in range(len(tok.tokens))], gguf.FLOAT32)
    w.add("tokenizer.ggml.token_type", gguf.ARRAY,
          [3 if i in special_ids else 1 for i in range(len(tok.tokens))], gguf.INT32)
    w.add("tokenizer.ggml.merges", gguf.ARRAY, [x + " " + y for x, y in tok.merges], gguf.STRING)
    w.add("tokenizer.ggml.bos_token_id", gguf.UINT32, tok.bos_id)
    w.add("tokenizer.ggml.eos_token_id", gguf.UINT32, tok.eos_id)
    w.add("tokenizer.ggml.padding_token_id", gguf.UINT32, tok.eos_id)
    w.add("tokenizer.ggml.eot_token_id", gguf.UINT32, tok.eot_id)
    w.add("general.quantization_version", gguf.UINT32, 2)
    hp = {k: args[k] for k in ("dim", "layers", "heads", "kv_heads", "ffn", "ctx", "batch", "steps",
                               "warmup", "lr", "min_lr_frac", "wd", "threads", "restart_at", "restart_lr",
                               "restart_warmup", "shorten") if k in args}
    hp.update({"optimizer": "AdamW(0.9,0.95,eps=1e-8), wd on linear weights only, grad clip 1.0",
               "schedule": "linear warmup then cosine to lr*min_lr_frac; with restart_at, a second "
                           "warmup (restart_warmup) + cosine cycle from restart_lr up to steps",
               "steps_done": ck["step"], "tokens_seen": ck["step"] * args.get("batch", 0) * args.get("ctx", 0),
               "file_weights": __import__("data").FILE_WEIGHTS})
    w.add("trinity.train.seed", gguf.UINT32, int(args.get("seed", 0)))
    w.add("trinity.train.hparams", gguf.STRING, json.dumps(hp, sort_keys=True))
    w.add("trinity.train.corpus", gguf.STRING, CORPUS_DESCRIPTION)
    if hist:
        w.add("trinity.train.valid_loss", gguf.FLOAT32, float(hist[-1]["val"]))
    w.add("trinity.train.tokenizer", gguf.STRING,
          f"byte-level BPE trained on the corpus ({len(tok.tokens)} tokens incl. 3 control), "
          "tools/train/tokenizer_train.py")

    emb = sd["tok_emb.weight"].float().numpy().astype(np.float16)
    w.add_tensor("token_embd.weight", [cfg.dim, cfg.vocab_size], gguf.GGML_F16, emb.tobytes())
    for i in range(cfg.n_layers):
        for suf in LAYER_ORDER:
            t = sd[f"layers.{i}.{suf}"].float()
            if suf in LINEARS:
                q, s = M.ternarize(t)
                out_f, in_f = t.shape
                w.add_tensor(f"blk.{i}.{LINEARS[suf]}", [in_f, out_f], gguf.GGML_I2_S,
                             gguf.pack_i2s(q.numpy(), s))
            else:
                w.add_tensor(f"blk.{i}.{NORMS[suf]}", [t.numel()], gguf.GGML_F32,
                             t.numpy().astype(np.float32).tobytes())
    w.add_tensor("output_norm.weight", [cfg.dim], gguf.GGML_F32,
                 sd["norm.weight"].float().numpy().astype(np.float32).tobytes())
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    w.write(tmp)
    os.replace(tmp, out_path)
    return cfg


def load_gguf_model(path):
    """BitNet whose weights are exactly the file's (ternary*scale, f16 embedding), with
    M.PREQUANTIZED set so that the weights are used as stored."""
    kv, _order, tens = gguf.read(path)
    a = kv["general.architecture"]
    cfg = M.Config(vocab_size=int(kv[f"{a}.vocab_size"]), dim=int(kv[f"{a}.embedding_length"]),
                   n_layers=int(kv[f"{a}.block_count"]), n_heads=int(kv[f"{a}.attention.head_count"]),
                   n_kv_heads=int(kv[f"{a}.attention.head_count_kv"]),
                   ffn_dim=int(kv[f"{a}.feed_forward_length"]),
                   context_length=int(kv[f"{a}.context_length"]),
                   rope_theta=float(kv[f"{a}.rope.freq_base"]),
                   norm_eps=float(kv[f"{a}.attention.layer_norm_rms_epsilon"]))
    model = M.BitNet(cfg)
    sd = {}
    inv_lin = {v: k for k, v in LINEARS.items()}
    inv_norm = {v: k for k, v in NORMS.items()}
    for name, (dims, ttype, buf) in tens.items():
        n = int(np.prod(dims))
        if ttype == gguf.GGML_F16:
            arr = np.frombuffer(buf, dtype=np.float16, count=n).astype(np.float32)
        elif ttype == gguf.GGML_F32:
            arr = np.frombuffer(buf, dtype=np.float32, count=n).copy()
        elif ttype == gguf.GGML_I2_S:
            vals, s = gguf.unpack_i2s(buf, n)
            arr = vals.astype(np.float32) * np.float32(s)
        else:
            raise ValueError(ttype)
        t = torch.from_numpy(arr.reshape(list(reversed(dims))) if len(dims) > 1 else arr)
        if name == "token_embd.weight":
            sd["tok_emb.weight"] = t
        elif name == "output_norm.weight":
            sd["norm.weight"] = t
        else:
            _, i, rest = name.split(".", 2)
            pt = inv_lin.get(rest) or inv_norm[rest]
            sd[f"layers.{i}.{pt}"] = t
    model.load_state_dict(sd)
    M.PREQUANTIZED = True
    tokens = list(kv["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ")) for m in kv["tokenizer.ggml.merges"]]
    types = kv["tokenizer.ggml.token_type"]
    specials = {tokens[i]: i for i in range(len(tokens)) if types[i] == 3}
    tok = Tokenizer(tokens, merges, specials)
    model.eval()
    return model, tok, kv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="/tmp/trinity-train/ckpt.pt")
    ap.add_argument("--tokenizer", default="models/trinity-tiny-tokenizer.json")
    ap.add_argument("--out", default="models/trinity-tiny.gguf")
    ap.add_argument("--name", default="trinity-tiny")
    a = ap.parse_args()
    cfg = export(a.ckpt, a.tokenizer, a.out, a.name)
    print(f"wrote {a.out}: {os.path.getsize(a.out)} bytes, config {cfg.to_dict()}")


if __name__ == "__main__":
    main()
