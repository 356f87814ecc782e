#!/usr/bin/python3
"""Compare two logits files (little-endian float32 [n_positions][n_vocab]).

  /usr/bin/python3 tools/reference/compare_logits.py REF.bin TEST.bin --vocab N [--atol X]
        [--min-argmax-agree F]

Prints one JSON object:
  max_abs, mean_abs, rms       statistics of |A - B| over all logits
  argmax_agree                 fraction of positions whose argmax (lowest id on ties) agrees
  argmax_agree_count           the same as a count
  n_positions                  rows compared
  logit_std                    standard deviation of A's logits (A = the reference), to
                               judge max_abs against: e.g. max_abs / logit_std
  max_abs_position, max_abs_token   where max_abs occurs
Exit status: 1 if max_abs > atol (when --atol is given) or argmax agreement is below
--min-argmax-agree (when given), 2 on bad input (size mismatch, NaN/Inf), else 0.
"""

import argparse
import json
import sys

import numpy as np


def load(path, vocab):
    a = np.fromfile(path, dtype="<f4")
    if a.size % vocab:
        raise ValueError("%s: %d floats is not a multiple of vocab %d" % (path, a.size, vocab))
    return a.reshape(-1, vocab).astype(np.float64)


def compare(A, B):
    d = np.abs(A - B)
    idx = int(np.argmax(d))
    agree = np.argmax(A, axis=1) == np.argmax(B, axis=1)
    return {
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "rms": float(np.sqrt(np.mean(d * d))),
        "argmax_agree": float(np.mean(agree)),
        "argmax_agree_count": int(np.sum(agree)),
        "n_positions": int(A.shape[0]),
        "logit_std": float(A.std()),
        "max_abs_position": idx // A.shape[1],
        "max_abs_token": idx % A.shape[1],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="compare two float32 logits files")
    ap.add_argument("a", help="reference logits")
    ap.add_argument("b", help="logits under test")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--atol", type=float, default=None)
    ap.add_argument("--min-argmax-agree", type=float, default=None,
                    help="fail if the argmax agreement fraction is below this")
    args = ap.parse_args(argv)
    try:
        A = load(args.a, args.vocab)
        B = load(args.b, args.vocab)
    except (OSError, ValueError) as e:
        print(json.dumps({"error": str(e)}))
        return 2
    if A.shape != B.shape:
        print(json.dumps({"error": "shape mismatch %s vs %s" % (A.shape, B.shape)}))
        return 2
    if A.shape[0] == 0:
        print(json.dumps({"error": "empty logits"}))
        return 2
    bad = [p for p, X in ((args.a, A), (args.b, B)) if not np.all(np.isfinite(X))]
    if bad:
        print(json.dumps({"error": "non-finite values in %s" % ", ".join(bad)}))
        return 2
    r = compare(A, B)
    print(json.dumps(r))
    rc = 0
    if args.atol is not None and r["max_abs"] > args.atol:
        rc = 1
    if args.min_argmax_agree is not None and r["argmax_agree"] < args.min_argmax_agree:
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
