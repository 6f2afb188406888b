"""`qcast quantize --export OUT.safetensors` from PyTorch's side: safetensors.torch.load_file reads it
with PyTorch's low-precision dtypes; the codes and scales equal torchao's MXTensor / NVFP4Tensor of
the same float weights bit for bit where torchao's rules are qcast's (docs/safetensors.md says where
they differ, and this checks that the differences are exactly those); the values decoded here,
independently of qcast, equal the weights of the quantized model written in the same run; every
other tensor of the model is there as it was; the quantization config lists the layers.

usage: safetensors_check.py QCAST
"""
import json, os, subprocess, sys, tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from checks import check, finish

qcast = sys.argv[1]
from torchao.prototype.mx_formats.mx_tensor import MXTensor
from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

FP4 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])


def unpack(codes, bits, n):
    """The first n codes of a little-endian bit stream (docs/formats.md), one per uint8."""
    b = codes.view(torch.uint8).reshape(-1)
    stream = torch.stack([(b >> i) & 1 for i in range(8)], 1).reshape(-1)[: n * bits]
    return (stream.reshape(n, bits).to(torch.int64) * (2 ** torch.arange(bits))).sum(1).to(torch.uint8)


def e8m0(s):
    return torch.pow(2.0, s.view(torch.uint8).to(torch.float32) - 127)


def near_fp4_tie(v):
    """|v| is within float32 rounding of a midpoint of the e2m1 grid (where a reciprocal
    multiplication and a division may round to different neighbours)."""
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=torch.float64)
    return ((v.abs().unsqueeze(-1) - mids).abs() <= 4e-7 * mids).any(-1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(256, 64)     # plain initialisation: torchao's rules and qcast's coincide
        self.b = nn.Linear(256, 64)     # rows from 1e-3 to 1e3, a zero row, ties: where they part
        self.c = nn.Linear(64, 16)      # left in float (--exclude)
        self.register_buffer("steps", torch.arange(3))

    def forward(self, x):
        return self.c(torch.relu(self.a(x)) + torch.relu(self.b(x))) + self.steps.sum()


with tempfile.TemporaryDirectory() as d:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.b.weight.mul_(torch.logspace(-3, 3, 64).unsqueeze(1))
        net.b.weight[3].zero_()
        net.b.weight[5, :32] = 0.75 * 2.0 ** torch.arange(-8, 24).float()
    model = torch.jit.script(net)
    path = os.path.join(d, "net.pt")
    model.save(path)
    params = {k: v.detach() for k, v in model.named_parameters()}

    cases = [("mxfp4", torch.float4_e2m1fn_x2, torch.float4_e2m1fn_x2), ("mxfp8_e4m3", torch.float8_e4m3fn, torch.float8_e4m3fn),
             ("mxfp8_e5m2", torch.float8_e5m2, torch.float8_e5m2), ("mxfp6_e2m3", "fp6_e2m3", torch.uint8),
             ("mxfp6_e3m2", "fp6_e3m2", torch.uint8), ("nvfp4", None, torch.float4_e2m1fn_x2)]
    for fmt, elem, dtype in cases:
        out, st = os.path.join(d, fmt + ".pt"), os.path.join(d, fmt + ".safetensors")
        r = subprocess.run([qcast, "quantize", path, "--format", fmt, "--method", "rtn", "--exclude", "c.*",
                            "-o", out, "--export", st, "--quiet"], capture_output=True, text=True)
        check(r.returncode == 0, f"{fmt}: exit {r.returncode}: {r.stderr}")
        if r.returncode:
            continue
        t = load_file(st)
        q = {k: v.detach() for k, v in torch.jit.load(out).named_parameters()}
        check(t["a.weight"].dtype == dtype, f"{fmt}: codes as {t['a.weight'].dtype}, want {dtype}")
        want_scale = torch.float8_e4m3fn if fmt == "nvfp4" else torch.float8_e8m0fnu
        check(t["a.weight_scale"].dtype == want_scale and list(t["a.weight_scale"].shape) == [64, 16 if fmt == "nvfp4" else 8],
              f"{fmt}: scales {t['a.weight_scale'].dtype} {list(t['a.weight_scale'].shape)}")
        for name in ("a.bias", "b.bias", "c.weight", "c.bias", "steps"):
            ref = params.get(name, net.steps)
            check(name in t and torch.equal(t[name], ref), f"{fmt}: {name} stored as it is")
        for layer in ("a", "b"):
            w = params[layer + ".weight"]
            codes = t[layer + ".weight"]
            bits = 6 if "fp6" in fmt else 4 if "fp4" in fmt else 8
            ours = unpack(codes, bits, w.numel()).reshape(w.shape) if bits < 8 else codes.view(torch.uint8)
            scales = t[layer + ".weight_scale"].view(torch.uint8)
            if fmt == "nvfp4":
                s_t = per_tensor_amax_to_scale(w.abs().amax())
                check(t[layer + ".weight_scale_2"].dtype == torch.float32 and t[layer + ".weight_scale_2"].item() == s_t.item(),
                      f"nvfp4 {layer}: tensor scale {t[layer + '.weight_scale_2'].item()} vs torchao {s_t.item()}")
                a = NVFP4Tensor.to_nvfp4(w, 16, per_tensor_scale=s_t)
                theirs = unpack(a.qdata, 4, w.numel()).reshape(w.shape)
                ts = a.scale.view(torch.uint8)
                # torchao clamps each block scale to e4m3's smallest normal, 2^-6 (code 8); qcast keeps
                # subnormal and zero block scales. Everywhere else the scales agree.
                check(torch.equal(scales[scales >= 8], ts[scales >= 8]) and bool((ts[scales < 8] == 8).all()),
                      f"nvfp4 {layer}: block scales equal but for torchao's clamp at 2^-6")
                # torchao multiplies by (1/s_t)/s_b; qcast divides by s_b*s_t: in blocks with equal
                # scales, codes may differ only where x/(s_b*s_t) lies on a rounding midpoint.
                same = (scales == ts).repeat_interleave(16, 1)
                differ = (ours != theirs) & same
                s_b = t[layer + ".weight_scale"].to(torch.float32).repeat_interleave(16, 1).double()
                v = w.double() / (s_b * s_t.double())
                check(bool(near_fp4_tie(v[differ]).all()),
                      f"nvfp4 {layer}: {int(differ.sum())} codes differ away from a rounding midpoint")
                if layer == "a":
                    check(not differ.any() and bool((scales >= 8).all()), "nvfp4 a: identical to torchao")
                decoded = (FP4[ours.long()] * t[layer + ".weight_scale"].to(torch.float32).repeat_interleave(16, 1)) * s_t
            else:
                a = MXTensor.to_mx(w, elem, 32)
                theirs = a.qdata.view(torch.uint8)
                if bits == 4:
                    theirs = unpack(theirs, 4, w.numel()).reshape(w.shape)
                check(torch.equal(ours, theirs), f"{fmt} {layer}: codes equal torchao's ({int((ours != theirs).sum())} differ)")
                check(torch.equal(scales, a.scale.view(torch.uint8)), f"{fmt} {layer}: scales equal torchao's")
                if bits == 4:
                    values = FP4[ours.long()]
                elif bits == 8:
                    values = codes.to(torch.float32)
                else:  # fp6: PyTorch has no dtype; torchao's own decoding of the same codes
                    values = None
                if values is not None:
                    decoded = values * e8m0(t[layer + ".weight_scale"]).repeat_interleave(32, 1)
                else:
                    decoded = a.dequantize(torch.float32)
            check(torch.equal(decoded, q[layer + ".weight"]),
                  f"{fmt} {layer}: values decoded from the file equal the quantized model's weights")
        cfg = json.load(open(os.path.join(d, fmt + ".quantization_config.json")))
        check(cfg["quant_method"] == "qcast" and cfg["weights_file"] == fmt + ".safetensors"
              and cfg["quantized"] == {"a.weight": fmt, "b.weight": fmt} and cfg["ignore"] == ["c.weight"],
              f"{fmt}: quantization config {cfg}")

    # SmoothQuant: the export carries each smoothed layer's input factor 1/s, and the file alone
    # (decoded weights, factors, the float layer c) gives the saved model's output.
    calib = os.path.join(d, "calib.pt")
    xs = torch.randn(32, 256) * torch.logspace(-1, 1, 256)  # channels of different ranges
    torch.save(xs, calib)
    out, st = os.path.join(d, "smooth.pt"), os.path.join(d, "smooth.safetensors")
    r = subprocess.run([qcast, "quantize", path, "--format", "mxfp8_e4m3", "--method", "rtn", "--exclude", "c.*", "--smooth", "0.5",
                        "--calib", calib, "-o", out, "--export", st, "--quiet"], capture_output=True, text=True)
    check(r.returncode == 0, f"--smooth export: exit {r.returncode}: {r.stderr}")
    if r.returncode == 0:
        t = load_file(st)
        cfg = json.load(open(os.path.join(d, "smooth.quantization_config.json")))
        check(cfg["inputs"] == {"a.weight": {"input_scale": "a.weight_input_scale"}, "b.weight": {"input_scale": "b.weight_input_scale"}},
              f"--smooth: the config's inputs {cfg.get('inputs')}")
        def weight(layer):
            return t[layer + ".weight"].to(torch.float32) * e8m0(t[layer + ".weight_scale"]).repeat_interleave(32, 1)
        sa, sb = t["a.weight_input_scale"], t["b.weight_input_scale"]
        check(sa.shape == (256,) and sa.dtype == torch.float32 and not torch.equal(sa, torch.ones(256)),
              f"--smooth: a's input scale {sa.shape} {sa.dtype}")
        x = torch.randn(8, 256)
        by_hand = F.linear(torch.relu(F.linear(x * sa, weight("a"), t["a.bias"])) + torch.relu(F.linear(x * sb, weight("b"), t["b.bias"])),
                           t["c.weight"], t["c.bias"]) + t["steps"].sum()
        saved = torch.jit.load(out)(x)
        check(torch.allclose(by_hand, saved, rtol=1e-5, atol=1e-5),
              f"--smooth: the file's weights and input scales give the saved model's output (max diff {(by_hand - saved).abs().max():.3g})")

    r = subprocess.run([qcast, "quantize", path, "--format", "mxfp4", "--method", "rtn", "-o", os.path.join(d, "x.pt"),
                        "--export", os.path.join(d, "x.bin")], capture_output=True, text=True)
    check(r.returncode == 2 and ".safetensors or .qpack" in r.stderr and not os.path.exists(os.path.join(d, "x.pt")),
          "an --export path of another kind is a usage error")

finish("safetensors export: torchao-identical MX, NVFP4 equal up to torchao's documented rules, values and config checked")
