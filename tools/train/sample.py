#!/usr/bin/python3
"""Sample text from a BitNet b1.58 GGUF in PyTorch (inference numerics, see eval_ppl.py).

  /usr/bin/python3 tools/train/sample.py models/trinity-tiny.gguf --prompt "It was a dark" \\
      --n 80 --temperature 0.8 --top-k 40 --seed 0
Input: [BOS] + tokens of the prompt.  --temperature 0 = greedy.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_ppl import load  # noqa: E402

DEFAULT_PROMPTS = ["Once upon a time", "It was a dark and stormy night, and",
                   "Elizabeth looked at him and said", "The old ship", "Holmes said"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", action="append")
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load(a.model)
    for p in a.prompt or DEFAULT_PROMPTS:
        torch.manual_seed(a.seed)
        idx = torch.tensor([[tok.bos_id] + tok.encode(p)])
        out = model.generate(idx, a.n, temperature=a.temperature, top_k=a.top_k,
                             eos_ids=(tok.eos_id, tok.eot_id))
        print("---", repr(p))
        print(tok.decode(out[0, 1:].tolist()))


if __name__ == "__main__":
    main()
