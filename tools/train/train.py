#!/usr/bin/python3
"""Train Trinity's built-in BitNet b1.58 model on the CPU (or a GPU when one is available).

Run it with Debian's python3-torch, with jemalloc (large fresh allocations are very slow here):
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \\
  /usr/bin/python3 tools/train/train.py --corpus CORPUS_DIR \\
      --tokenizer models/trinity-tiny-tokenizer.json --out-dir /tmp/trinity-train --steps N

Training windows: a file is drawn with probability ∝ (its training tokens × FILE_WEIGHTS), then a
uniformly random offset; the window is [BOS] + T-1 text tokens and the targets are the T text
tokens (the first one predicted from BOS alone).  This is exactly the windowing of eval_ppl.py.
LR: linear warmup, then cosine decay to lr*min_lr_frac at --steps.  AdamW(0.9, 0.95), weight
decay on the linear weights only.  Everything is seeded (--seed); one thread.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from model import BitNet, Config  # noqa: E402
from tokenizer_train import Tokenizer  # noqa: E402


def log(msg, f=None):
    line = time.strftime("%H:%M:%S", time.gmtime()) + " " + msg
    print(line, flush=True)


def tokenize_corpus(corpus, tok_path, cache_dir):
    h = hashlib.sha256(open(tok_path, "rb").read()).hexdigest()[:12]
    cache = os.path.join(cache_dir, f"tokens-{h}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        names = sorted({k[:-6] for k in z.files})
        return {n: (z[n + ".train"], z[n + ".valid"]) for n in names}
    tok = Tokenizer.load(tok_path)
    out = {}
    t0 = time.time()
    for name, tr, va in data.split_corpus(corpus):
        a = np.array(tok.encode(tr), dtype=np.uint16)
        b = np.array(tok.encode(va), dtype=np.uint16)
        out[name] = (a, b)
        log(f"tokenized {name}: {len(tr)} chars -> {len(a)} train tokens, {len(b)} valid "
            f"({time.time() - t0:.0f}s)")
    np.savez(cache + ".tmp.npz", **{f"{n}.train": a for n, (a, b) in out.items()},
             **{f"{n}.valid": b for n, (a, b) in out.items()})
    os.replace(cache + ".tmp.npz", cache)
    return out


class Sampler:
    def __init__(self, toks, T, bos, seed):
        self.names = sorted(toks)
        self.arrays = [toks[n][0] for n in self.names]
        w = np.array([len(a) * data.FILE_WEIGHTS.get(n, 1.0) for n, a in zip(self.names, self.arrays)])
        self.p = w / w.sum()
        self.T = T
        self.bos = bos
        self.rng = np.random.default_rng(seed)

    def batch(self, B):
        T = self.T
        x = np.empty((B, T), dtype=np.int64)
        y = np.empty((B, T), dtype=np.int64)
        files = self.rng.choice(len(self.arrays), size=B, p=self.p)
        for i, fi in enumerate(files):
            a = self.arrays[fi]
            off = int(self.rng.integers(0, len(a) - T))
            seg = a[off:off + T].astype(np.int64)
            x[i, 0] = self.bos
            x[i, 1:] = seg[:-1]
            y[i] = seg
        return torch.from_numpy(x), torch.from_numpy(y)


def valid_batches(toks, T, bos, per_file=4):
    xs, ys = [], []
    for n in sorted(toks):
        v = toks[n][1]
        k = min(per_file, len(v) // T)
        for j in range(k):
            off = (len(v) - T) * j // max(1, k - 1) if k > 1 else 0
            seg = v[off:off + T].astype(np.int64)
            xs.append(np.concatenate([[bos], seg[:-1]]))
            ys.append(seg)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


@torch.no_grad()
def evaluate(model, vx, vy, bs=16):
    model.eval()
    tot = 0.0
    n = 0
    for i in range(0, len(vx), bs):
        _, l = model(vx[i:i + bs], vy[i:i + bs])
        tot += float(l) * vx[i:i + bs].numel()
        n += vx[i:i + bs].numel()
    model.train()
    return tot / n


def lr_at(step, a):
    if a.restart_at and step >= a.restart_at:
        # Warm restart (second cosine cycle) for continued training from a finished run.
        k = step - a.restart_at
        wu = a.restart_warmup
        if k < wu:
            return a.restart_lr * (k + 1) / wu
        p = min(1.0, (k - wu) / max(1, a.steps - a.restart_at - wu))
        return a.restart_lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    p = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def save_ckpt(path, model, opt, step, a, cfg, hist, sampler, elapsed=0.0):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "args": vars(a), "config": cfg.to_dict(), "history": hist,
                "sampler_rng": sampler.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "elapsed": elapsed}, tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out-dir", default="/tmp/trinity-train")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--deadline", default="", help="UTC 'HH:MM' today: stop (and save) by then")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--restart-at", type=int, default=0,
                    help="with --resume: start a second warmup+cosine cycle at this step, up to --steps")
    ap.add_argument("--restart-lr", type=float, default=1e-3)
    ap.add_argument("--restart-warmup", type=int, default=30)
    ap.add_argument("--shorten", default="",
                    help="replay schedule changes made by the deadline guard: 'STEP:NEWSTEPS,...' "
                         "(the guard logs each one), for a bit-exact rerun without --deadline")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)
    deadline = None
    if a.deadline:
        hh, mm = map(int, a.deadline.split(":"))
        now = time.gmtime()
        deadline = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, 0, 0, 0, 0)) - time.timezone

    tok = Tokenizer.load(a.tokenizer)
    toks = tokenize_corpus(a.corpus, a.tokenizer, a.out_dir)
    n_train = sum(len(v[0]) for v in toks.values())
    n_val = sum(len(v[1]) for v in toks.values())
    log(f"corpus: {n_train} train tokens, {n_val} validation tokens")

    cfg = Config(vocab_size=len(tok.tokens), dim=a.dim, n_layers=a.layers, n_heads=a.heads,
                 n_kv_heads=a.kv_heads, ffn_dim=a.ffn, context_length=a.ctx)
    model = BitNet(cfg)
    total, emb = model.num_params()
    log(f"model {cfg.to_dict()} params {total} (embedding {emb}, ternary {total - emb - sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1)})")

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "tok_emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "tok_emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    sampler = Sampler(toks, a.ctx, tok.bos_id, a.seed)
    vx, vy = valid_batches(toks, a.ctx, tok.bos_id)
    ckpt_path = os.path.join(a.out_dir, "ckpt.pt")
    step = 0
    hist = []
    if a.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        hist = ck["history"]
        sampler.rng.bit_generator.state = ck["sampler_rng"]
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed at step {step}")

    t_start = time.time() - (ck.get("elapsed", 0.0) if a.resume and step else 0.0)
    mark_time, mark_step = time.time(), step   # for the deadline guard's step-time estimate
    last_ckpt = time.time()
    tok_seen = step * a.batch * a.ctx
    ema = None
    shorten = {int(k): int(v) for k, v in (x.split(":") for x in a.shorten.split(",") if x)}
    while True:
        if step in shorten:
            a.steps = shorten[step]
            log(f"schedule shortened (replayed): steps -> {a.steps}")
        if step >= a.steps:
            break
        if deadline and time.time() > deadline:
            log("deadline reached: stopping early")
            break
        lr = lr_at(step, a)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.batch(a.batch)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tok_seen += x.numel()
        lv = float(loss)
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 10 == 0:
            el = time.time() - t_start
            log(f"step {step}/{a.steps} loss {lv:.4f} ema {ema:.4f} lr {lr:.2e} "
                f"tok {tok_seen} elapsed {el:.0f}s")
        if step % a.eval_every == 0 or step == a.steps:
            vl = evaluate(model, vx, vy)
            hist.append({"step": step, "train_ema": ema, "val": vl, "tokens": tok_seen,
                         "time": time.time() - t_start})
            log(f"EVAL step {step} val_loss {vl:.4f} (ppl {math.exp(vl):.1f}) train_ema {ema:.4f} "
                f"tokens {tok_seen} tok/s {tok_seen / (time.time() - t_start):.0f}")
            if deadline:
                # Shorten the schedule (never lengthen it) if the projected end is past the deadline.
                per_step = (time.time() - mark_time) / max(1, step - mark_step)
                mark_time, mark_step = time.time(), step
                fit = step + int(0.95 * (deadline - time.time() - 120) / per_step)
                if fit < a.steps:
                    a.steps = max(step + 1, fit)
                    log(f"schedule shortened: steps -> {a.steps} at step {step} to end by the deadline "
                        f"(replay with --shorten {step}:{a.steps})")
        if time.time() - last_ckpt > a.ckpt_minutes * 60:
            save_ckpt(ckpt_path, model, opt, step, a, cfg, hist, sampler, time.time() - t_start)
            last_ckpt = time.time()
            log(f"checkpoint saved at step {step}")
    vl = evaluate(model, vx, vy)
    hist.append({"step": step, "train_ema": ema, "val": vl, "tokens": tok_seen,
                 "time": time.time() - t_start, "final": True})
    log(f"FINAL step {step} val_loss {vl:.4f} train_ema {ema:.4f} tokens {tok_seen}")
    save_ckpt(ckpt_path, model, opt, step, a, cfg, hist, sampler, time.time() - t_start)
    with open(os.path.join(a.out_dir, "DONE"), "w") as f:
        json.dump(hist[-1], f)


if __name__ == "__main__":
    main()
