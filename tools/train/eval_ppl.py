#!/usr/bin/python3
"""Perplexity of a BitNet b1.58 GGUF (or training checkpoint) over a text file, in PyTorch, with
the inference numerics: ternary weights * per-tensor scale exactly as stored in the file,
per-token int8 activations (round half to even), f16 embedding as LM head, f32 elsewhere.

  /usr/bin/python3 tools/train/eval_ppl.py models/trinity-tiny.gguf tests/data/heldout.txt
  -> {"tokens": N, "nll": mean NLL per token (nats), "ppl": exp(nll), ...}

Windowing (Trinity's `perplexity` command does the same):
  1. Read the file as UTF-8 and tokenize the WHOLE text at once, without BOS and without
     parsing special-token text: ids[0..N-1].
  2. Cut ids into consecutive, non-overlapping chunks of n_ctx tokens (n_ctx = the model's
     context_length; the last chunk may be shorter).
  3. Each chunk c[0..L-1] is evaluated in a fresh context (empty KV cache) fed with
     [BOS, c[0], ..., c[L-2]]; the logits at position j score c[j].  So every file token is
     scored exactly once (the first token of each chunk is predicted from BOS alone).
  4. nll = (sum over all N tokens of -log softmax(logits)[target]) / N;  ppl = exp(nll).
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402


def load(path, tokenizer=None):
    if path.endswith(".gguf"):
        from export_gguf import load_gguf_model
        model, tok, _kv = load_gguf_model(path)
        return model, tok
    from tokenizer_train import Tokenizer
    ck = torch.load(path, map_location="cpu")
    model = M.BitNet(M.Config(**ck["config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    return model, Tokenizer.load(tokenizer or "models/trinity-tiny-tokenizer.json")


@torch.no_grad()
def perplexity(model, tok, text):
    ids = tok.encode(text)
    n = len(ids)
    T = model.c.context_length
    chunks = [ids[i:i + T] for i in range(0, n, T)]
    total = 0.0
    for c in chunks:  # one chunk per forward pass (fresh context, no padding)
        x = torch.tensor([[tok.bos_id] + c[:-1]])
        y = torch.tensor([c])
        _, l = model(x, y, reduction="sum")  # float64 log-softmax of the f32 logits
        total += float(l)
    nll = total / n
    return {"tokens": n, "nll": nll, "ppl": math.exp(nll), "chunks": len(chunks), "n_ctx": T}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="GGUF file (or a training checkpoint .pt)")
    ap.add_argument("text")
    ap.add_argument("--tokenizer", default=None, help="only for .pt checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, tok = load(a.model, a.tokenizer)
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    r = perplexity(model, tok, text)
    print(json.dumps({"tokens": r["tokens"], "nll": round(r["nll"], 6), "ppl": round(r["ppl"], 4),
                      "chunks": r["chunks"], "n_ctx": r["n_ctx"]}))


if __name__ == "__main__":
    main()
