"""BitNet b1.58 in PyTorch: the architecture of microsoft/bitnet-b1.58-2B-4T, smaller.

Per layer (all linears are BitLinear, no biases):
    a   = attn_norm(x)
    att = causal GQA attention(RoPE(Wq a), RoPE(Wk a), Wv a), scale 1/sqrt(head_dim)
    h   = x + Wo(attn_sub_norm(att))
    m   = ffn_norm(h)
    out = h + Wdown(ffn_sub_norm(relu(Wgate m)^2 * Wup m))
logits = token_embd . output_norm(x)     (tied, unquantized embedding used as the LM head)

BitLinear numerics (W1.58 A8), identical to inference:
    weights, per tensor:  s = max(mean|W|, 1e-5), Wq = clamp(round(W/s), -1, 1), W' = Wq*s
    activations, per token: a = 127/max(max|x|, 1e-5), xq = clamp(round(x*a), -128, 127), x' = xq/a
    y = x' @ W'^T        (== (xq @ Wq^T) * s / a)
both with straight-through estimators (identity gradient).  torch.round rounds half to even.
RMSNorm eps 1e-5.  RoPE: NEOX (half-split) pairing over all head dims, theta 500000.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 8192
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 768
    context_length: int = 256
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    def to_dict(self):
        return asdict(self)


class _WeightQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        s = w.abs().mean().clamp(min=1e-5)
        return (w / s).round().clamp(-1, 1) * s

    @staticmethod
    def backward(ctx, g):
        return g


class _ActQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        a = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        return (x * a).round_().clamp_(-128, 127).div_(a)

    @staticmethod
    def backward(ctx, g):
        return g


# Set by export_gguf.load_gguf_model: the weights already are ternary*scale as stored in the
# GGUF file, so they are used as they are (re-quantizing would recompute a different scale).
PREQUANTIZED = False


def weight_quant(w):
    if PREQUANTIZED:
        return w
    return _WeightQuantSTE.apply(w)


def act_quant(x):
    return _ActQuantSTE.apply(x)


def ternarize(w):
    """(codes in {-1,0,1} as int8, scale) for export; same rule as weight_quant."""
    s = w.abs().mean().clamp(min=1e-5)
    q = (w / s).round().clamp(-1, 1).to(torch.int8)
    return q, float(s)


class _CrossEntropy(torch.autograd.Function):
    """Mean cross entropy over rows; same value as F.cross_entropy, but far fewer memory passes
    (torch 1.13's CPU log_softmax is slow and large fresh allocations are expensive)."""

    @staticmethod
    def forward(ctx, logits, t):
        m = logits.amax(-1, keepdim=True)
        p = (logits - m).exp_()
        s = p.sum(-1, keepdim=True)
        p.div_(s)
        lse = s.log_().add_(m).squeeze(-1)
        loss = (lse - logits.gather(-1, t[:, None]).squeeze(-1)).mean()
        ctx.save_for_backward(p, t)
        return loss

    @staticmethod
    def backward(ctx, g):
        p, t = ctx.saved_tensors
        p[torch.arange(p.shape[0]), t] -= 1
        p.mul_(g / p.shape[0])
        return p, None


class BitLinear(nn.Linear):
    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x):
        return F.linear(act_quant(x), weight_quant(self.weight))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, length, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    t = torch.arange(length, dtype=torch.float64)
    f = torch.outer(t, inv)                       # (T, hd/2)
    return f.cos().float(), f.sin().float()


def apply_rope(x, cos, sin):
    """NEOX pairing: dim i rotates with dim i + hd/2.  x: (B, H, T, hd)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.wq = BitLinear(c.dim, c.n_heads * hd)
        self.wk = BitLinear(c.dim, c.n_kv_heads * hd)
        self.wv = BitLinear(c.dim, c.n_kv_heads * hd)
        self.wo = BitLinear(c.n_heads * hd, c.dim)
        self.sub_norm = RMSNorm(c.n_heads * hd, c.norm_eps)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        c = self.c
        hd = c.head_dim
        xq = act_quant(x)          # q, k, v share the same quantized input
        q = F.linear(xq, weight_quant(self.wq.weight)).view(B, T, c.n_heads, hd).transpose(1, 2)
        k = F.linear(xq, weight_quant(self.wk.weight)).view(B, T, c.n_kv_heads, hd).transpose(1, 2)
        v = F.linear(xq, weight_quant(self.wv.weight)).view(B, T, c.n_kv_heads, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        rep = c.n_heads // c.n_kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att + mask[:T, :T]
        att = att.softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_heads * hd)
        return self.wo(self.sub_norm(y))


class FeedForward(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gate = BitLinear(c.dim, c.ffn_dim)
        self.up = BitLinear(c.dim, c.ffn_dim)
        self.down = BitLinear(c.ffn_dim, c.dim)
        self.sub_norm = RMSNorm(c.ffn_dim, c.norm_eps)

    def forward(self, x):
        xq = act_quant(x)          # gate and up share the same quantized input
        g = F.linear(xq, weight_quant(self.gate.weight))
        u = F.linear(xq, weight_quant(self.up.weight))
        return self.down(self.sub_norm(F.relu(g).square() * u))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn = FeedForward(c)

    def forward(self, x, cos, sin, mask):
        h = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return h + self.ffn(self.ffn_norm(h))


class BitNet(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.norm = RMSNorm(c.dim, c.norm_eps)
        cos, sin = rope_tables(c.head_dim, c.context_length, c.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.full((c.context_length, c.context_length), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)
        self.apply(self._init)

    def _init(self, m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, targets=None, reduction="mean"):
        B, T = idx.shape
        x = self.tok_emb(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin, self.mask)
        x = self.norm(x)
        logits = F.linear(x, self.tok_emb.weight)
        if targets is None:
            return logits
        logits = logits.reshape(-1, logits.size(-1))
        if reduction == "mean":
            loss = _CrossEntropy.apply(logits, targets.reshape(-1))
        else:
            loss = F.cross_entropy(logits.double(), targets.reshape(-1), reduction=reduction)
        return logits, loss

    def num_params(self):
        emb = self.tok_emb.weight.numel()
        total = sum(p.numel() for p in self.parameters())
        return total, emb

    @torch.no_grad()
    def generate(self, idx, n, temperature=0.8, top_k=40, eos_ids=()):
        for _ in range(n):
            ctx = idx[:, -self.c.context_length:]
            logits = self(ctx)[:, -1, :]
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    v, _ = torch.topk(logits, top_k)
                    logits[logits < v[:, [-1]]] = float("-inf")
                nxt = torch.multinomial(logits.softmax(-1), 1)
            idx = torch.cat([idx, nxt], dim=1)
            if int(nxt[0, 0]) in eos_ids:
                break
        return idx
