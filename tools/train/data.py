"""Corpus handling for Trinity's built-in model: train/validation split and sampling weights.

Split (deterministic, by bytes, cut at a paragraph/line boundary):
  * austen_novels.txt: the last ~80 KB (the end of "Persuasion") is held out; this exact text is
    tests/data/heldout.txt, the file on which PyTorch and the engine perplexities are compared.
  * every other file: its last 1% is held out.
Held-out text is never used for training nor for the tokenizer.
"""
import os

HELDOUT_FILE = "austen_novels.txt"
HELDOUT_BYTES = 80000
VAL_FRACTION = 0.01

# Sampling weight per file (multiplied by the file's token count): favour narrative prose so
# that the small model learns to write sentences; down-weight the huge WordNet gloss list.
FILE_WEIGHTS = {
    "austen_novels.txt": 2.0,
    "melville_moby_dick.txt": 2.0,
    "twain_tom_sawyer.txt": 2.0,
    "doyle_sherlock_holmes.txt": 2.0,
    "newton_opticks.txt": 1.0,
    "kjv_bible.txt": 0.6,
    "bierce_devils_dictionary.txt": 1.0,
    "jargon_file.txt": 0.7,
    "fortunes_selected.txt": 1.0,
    "wordnet_glosses.txt": 0.3,
    "wordnet_examples.txt": 1.0,
    "python311_docs.txt": 0.5,
}


def corpus_files(corpus_dir):
    return sorted(f for f in os.listdir(corpus_dir) if f.endswith(".txt"))


def _cut(text, pos):
    """Move pos forward to just after the next paragraph break (or line break)."""
    j = text.find("\n\n", pos)
    if j < 0 or j - pos > 20000:
        j = text.find("\n", pos)
    if j < 0:
        return pos
    while j < len(text) and text[j] == "\n":
        j += 1
    return j


def split_text(name, text):
    if name == HELDOUT_FILE:
        cut = _cut(text, len(text) - HELDOUT_BYTES)
    else:
        cut = _cut(text, int(len(text) * (1 - VAL_FRACTION)))
    return text[:cut], text[cut:]


def split_corpus(corpus_dir):
    for name in corpus_files(corpus_dir):
        with open(os.path.join(corpus_dir, name), encoding="utf-8") as f:
            text = f.read()
        tr, va = split_text(name, text)
        yield name, tr, va


def heldout_text(corpus_dir):
    with open(os.path.join(corpus_dir, HELDOUT_FILE), encoding="utf-8") as f:
        return split_text(HELDOUT_FILE, f.read())[1]


def spread_sample(text, nbytes, pieces=16):
    """nbytes characters of text taken as `pieces` chunks spread evenly through it."""
    if len(text) <= nbytes:
        return text
    step = len(text) // pieces
    size = nbytes // pieces
    return "\n".join(text[i * step: i * step + size] for i in range(pieces))
