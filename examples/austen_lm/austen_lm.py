"""A small byte-level causal transformer language model, trained from scratch on Jane Austen's novels,
saved as TorchScript for `qcast quantize`, and scored by perplexity. Its weights are self-trained by
this script (no pretrained checkpoint): it exists so that the PTQ benchmark has a decoder-only
transformer whose quality is measured on text it never saw.

  python austen_lm.py train --text DIR --out DIR [--steps N] [--seconds S] [--seed N]
      trains for N steps (default 1200, ~10 min on 2 cores; or for S seconds with --seconds) on every
      DIR/*.txt (UTF-8 bytes are the tokens: vocabulary 256) and writes
      OUT/austen_lm.pt (scripted model: int64 [B, T] token ids -> float [B, T, 256] logits, T <= 128)
      and OUT/calib.pt (64 training windows of 128 bytes, int64 [64, 128], for calibration)
  python austen_lm.py evaluate --text FILE [--chars N] MODEL.pt...
      prints, for each model, the perplexity per byte on the first N bytes of FILE (default: all),
      in non-overlapping windows of 128 bytes whose every position is predicted from the bytes
      before it in the same window.

Every linear map (q/k/v/output projections, both MLP layers, the output head) is an nn.Linear, so
`qcast quantize` finds 6 weight layers per block plus the head; the token and position embeddings are
lookups (left in float and listed as such in the quantization report).
"""
import argparse, glob, math, os, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONTEXT = 128


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        att = att.masked_fill(mask[:t, :t], float("-inf")).softmax(-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class AustenLM(nn.Module):
    def __init__(self, dim=256, layers=4, heads=4):
        super().__init__()
        self.embed = nn.Embedding(256, dim)
        self.position = nn.Embedding(CONTEXT, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 256)
        self.register_buffer("mask", torch.triu(torch.ones(CONTEXT, CONTEXT, dtype=torch.bool), 1), persistent=False)

    def forward(self, ids):
        t = ids.size(1)
        x = self.embed(ids) + self.position(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.norm(x))


def read_bytes(path):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).long()


def train(a):
    files = sorted(glob.glob(os.path.join(a.text, "*.txt")))
    if not files:
        sys.exit(f"no .txt files in {a.text}")
    data = torch.cat([read_bytes(f) for f in files])
    torch.manual_seed(a.seed)
    model = AustenLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    batch, start, step = 16, time.time(), 0
    budget = f"{a.seconds:.0f} s" if a.seconds else f"{a.steps} steps"
    print(f"training on {len(files)} files, {len(data)} bytes, {sum(p.numel() for p in model.parameters())} "
          f"parameters, for {budget}", flush=True)
    # A step count makes the model the same on every machine; a time box suits a quick try.
    while (time.time() - start < a.seconds) if a.seconds else (step < a.steps):
        # Linear warm-up over 100 steps, then a constant rate.
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, (step + 1) / 100)
        idx = torch.randint(0, len(data) - CONTEXT - 1, (batch,))
        win = torch.stack([data[i:i + CONTEXT + 1] for i in idx.tolist()])
        loss = F.cross_entropy(model(win[:, :-1]).reshape(-1, 256), win[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            elapsed = time.time() - start
            eta = f", ETA {elapsed / step * (a.steps - step):.0f} s" if not a.seconds else ""
            print(f"step {step}, {elapsed:.0f} s{eta}, loss {loss.item():.3f} nats/byte", flush=True)
    model.eval()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "austen_lm.pt")
    torch.jit.script(model).save(path + ".tmp")
    os.replace(path + ".tmp", path)
    g = torch.Generator().manual_seed(a.seed + 1)
    idx = torch.randint(0, len(data) - CONTEXT, (64,), generator=g)
    torch.save(torch.stack([data[i:i + CONTEXT] for i in idx.tolist()]), os.path.join(a.out, "calib.pt"))
    print(f"wrote {path} after {step} steps", flush=True)


@torch.no_grad()
def perplexity(model, data, batch=64):
    n = (len(data) - 1) // (CONTEXT + 1)
    wins = data[:n * (CONTEXT + 1)].view(n, CONTEXT + 1)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        w = wins[i:i + batch]
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, 256).double(), w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    return math.exp(total / count)


def evaluate(a):
    data = read_bytes(a.text)
    if a.chars:
        data = data[:a.chars]
    for path in a.models:
        print(f"{path} {perplexity(torch.jit.load(path).eval(), data):.4f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--text", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=1200)
    t.add_argument("--seconds", type=float, default=0)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("evaluate")
    e.add_argument("--text", required=True)
    e.add_argument("--chars", type=int, default=0)
    e.add_argument("models", nargs="+")
    a = p.parse_args()
    train(a) if a.command == "train" else evaluate(a)


if __name__ == "__main__":
    main()
