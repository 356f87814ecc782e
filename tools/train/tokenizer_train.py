#!/usr/bin/python3
"""Byte-level BPE tokenizer for Trinity's built-in model (Llama 3 style, small vocabulary).

* Pre-tokenizer: exactly the Llama 3 split regex (GGUF `tokenizer.ggml.pre = "llama-bpe"`):

    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+

  Python's `re` has no \\p{L}/\\p{N}, and its `\\s` is not Unicode White_Space (it includes
  U+001C..U+001F).  We therefore build the same regex with explicit character classes:
    \\p{L} = every code point whose Unicode general category starts with "L" (Lu Ll Lt Lm Lo),
    \\p{N} = every code point whose general category starts with "N" (Nd Nl No),
    \\s    = Unicode White_Space: \\t \\n \\v \\f \\r, space, U+0085, U+00A0, U+1680,
             U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 (not U+FEFF),
  and the contraction group is ASCII case-insensitive only ([sS], [tT], ...), as in Llama 3.
  Categories come from Python's `unicodedata` (Unicode 14 in Python 3.11); the training corpus
  is almost entirely ASCII/Latin-1, so version differences do not matter in practice.
* Bytes are mapped to printable characters with GPT-2's byte-to-unicode table.
* Encoding (same as HF `tokenizers` with ignore_merges=true, and Trinity's C++ tokenizer):
  a pre-token that is itself in the vocabulary becomes that single token; otherwise the
  lowest-rank adjacent pair is merged repeatedly (ties: leftmost).
* Special tokens (control, type 3) are appended at the end of the vocabulary:
  <|begin_of_text|>, <|end_of_text|>, <|eot_id|>.  They are never produced from text.

Usage (CORPUS_DIR: a folder of UTF-8 .txt files, e.g. the corpus named in models/README.md):
  /usr/bin/python3 tools/train/tokenizer_train.py --corpus CORPUS_DIR \
      --out models/trinity-tiny-tokenizer.json --vocab 8192 --sample-bytes 1500000
"""
import argparse
import heapq
import json
import os
import re
import sys
import time
import unicodedata

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]

WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
              + "\u2028\u2029\u202f\u205f\u3000")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}


def _class_from_predicate(pred):
    """Regex character-class body (ranges) for all code points satisfying pred."""
    parts = []
    start = None
    prev = None
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            ok = False
        else:
            ok = pred(cp)
        if ok:
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            parts.append((start, prev))
            start = None
    if start is not None:
        parts.append((start, prev))

    def esc(cp):
        return "\\U%08x" % cp
    return "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in parts)


_PRETOK_RE = None


def pretokenizer_regex():
    global _PRETOK_RE
    if _PRETOK_RE is None:
        L = _class_from_predicate(lambda c: unicodedata.category(chr(c)).startswith("L"))
        N = _class_from_predicate(lambda c: unicodedata.category(chr(c)).startswith("N"))
        S = "".join("\\U%08x" % ord(c) for c in WHITESPACE)
        pat = (
            r"'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])"
            + "|[^\\r\\n" + L + N + "]?[" + L + "]+"
            + "|[" + N + "]{1,3}"
            + "| ?[^" + S + L + N + "]+[\\r\\n]*"
            + "|[" + S + "]*[\\r\\n]+"
            + "|[" + S + "]+(?![^" + S + "])"
            + "|[" + S + "]+"
        )
        _PRETOK_RE = re.compile(pat)
    return _PRETOK_RE


def pretokenize(text):
    return pretokenizer_regex().findall(text)


def to_byte_unicode(s):
    return "".join(BYTE_ENCODER[b] for b in s.encode("utf-8"))


class Tokenizer:
    def __init__(self, tokens, merges, specials):
        self.tokens = tokens                      # id -> string (byte-unicode form)
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.merges = merges                      # list of (a, b)
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.specials = specials                  # name -> id
        self.bos_id = specials["<|begin_of_text|>"]
        self.eos_id = specials["<|end_of_text|>"]
        self.eot_id = specials["<|eot_id|>"]
        self.cache = {}

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        merges = [tuple(m.split(" ")) for m in d["merges"]]
        return cls(d["tokens"], merges, d["special_tokens"])

    def _bpe(self, word):
        tid = self.token_to_id.get(word)
        if tid is not None and word not in self.specials:
            return [tid]
        syms = list(word)
        ranks = self.ranks
        while len(syms) > 1:
            best = None
            best_i = -1
            for i in range(len(syms) - 1):
                r = ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            a, b = self.merges[best]
            out = []
            i = 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        return [self.token_to_id[s] for s in syms]

    def encode(self, text):
        ids = []
        cache = self.cache
        for p in pretokenize(text):
            r = cache.get(p)
            if r is None:
                r = self._bpe(to_byte_unicode(p))
                if len(cache) < 500000:
                    cache[p] = r
            ids.extend(r)
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.tokens[i]
            if i in self.specials.values():
                out += t.encode("utf-8")
            else:
                out += bytes(BYTE_DECODER[c] for c in t)
        return out.decode("utf-8", errors="replace")


def train_bpe(word_counts, n_base_vocab_target, log_every=1000):
    """word_counts: dict byte-unicode string -> count.  Returns (tokens, merges)."""
    tokens = [BYTE_ENCODER[b] for b in range(256)]
    vocab = set(tokens)
    words = []
    counts = []
    for w, c in sorted(word_counts.items()):
        words.append(list(w))
        counts.append(c)
    pair_counts = {}
    pair_where = {}
    for wi, syms in enumerate(words):
        c = counts[wi]
        for i in range(len(syms) - 1):
            p = (syms[i], syms[i + 1])
            pair_counts[p] = pair_counts.get(p, 0) + c
            pair_where.setdefault(p, set()).add(wi)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    t0 = time.time()
    while len(tokens) < n_base_vocab_target and heap:
        negc, p = heapq.heappop(heap)
        cur = pair_counts.get(p, 0)
        if cur <= 0:
            continue
        if cur != -negc:
            heapq.heappush(heap, (-cur, p))
            continue
        a, b = p
        new = a + b
        merges.append(p)
        if new not in vocab:
            vocab.add(new)
            tokens.append(new)
        changed = set()
        for wi in list(pair_where.get(p, ())):
            syms = words[wi]
            c = counts[wi]
            # remove this word's pairs
            for i in range(len(syms) - 1):
                q = (syms[i], syms[i + 1])
                pair_counts[q] -= c
                changed.add(q)
            out = []
            i = 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[wi] = out
            for i in range(len(out) - 1):
                q = (out[i], out[i + 1])
                pair_counts[q] = pair_counts.get(q, 0) + c
                pair_where.setdefault(q, set()).add(wi)
                changed.add(q)
        pair_counts.pop(p, None)
        pair_where.pop(p, None)
        changed.discard(p)
        for q in changed:
            c = pair_counts.get(q, 0)
            if c > 0:
                heapq.heappush(heap, (-c, q))
            else:
                pair_counts.pop(q, None)
                pair_where.pop(q, None)
        if log_every and len(merges) % log_every == 0:
            print(f"  merges {len(merges)} vocab {len(tokens)} last {new!r} ({cur}) "
                  f"{time.time() - t0:.1f}s", flush=True)
    return tokens, merges


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--sample-bytes", type=int, default=1500000,
                    help="bytes taken from the training part of each corpus file")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import data
    t0 = time.time()
    wc = {}
    total = 0
    for name, train_text, _val in data.split_corpus(args.corpus):
        sample = data.spread_sample(train_text, args.sample_bytes)
        total += len(sample)
        for p in pretokenize(sample):
            wc[p] = wc.get(p, 0) + 1
    bwc = {}
    for p, c in wc.items():
        k = to_byte_unicode(p)
        bwc[k] = bwc.get(k, 0) + c
    print(f"sample {total} chars, {len(bwc)} distinct pre-tokens, {time.time() - t0:.1f}s", flush=True)
    tokens, merges = train_bpe(bwc, args.vocab - len(SPECIAL_TOKENS))
    specials = {}
    for s in SPECIAL_TOKENS:
        specials[s] = len(tokens)
        tokens.append(s)
    out = {
        "model": "byte-level BPE, GPT-2 byte map, Llama 3 pre-tokenizer (llama-bpe)",
        "tokens": tokens,
        "merges": [a + " " + b for a, b in merges],
        "special_tokens": specials,
        "training": {"corpus": os.path.basename(os.path.normpath(args.corpus)),
                     "sample_bytes_per_file": args.sample_bytes, "vocab": args.vocab},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    print(f"wrote {args.out}: {len(tokens)} tokens, {len(merges)} merges, {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
