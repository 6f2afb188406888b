"""`qcast quantize --act-format` from PyTorch's side: a model quantized W4A8 and W4A4 (block,
per-tensor static and two-level static activation formats, a layer left in float, a Hadamard
rotation) loads in PyTorch
with the operator library, and its output equals a forward written here by hand from the saved
weights, with torch.ops.qcast.cast on each layer's input in the format and with the amax that the
report names (and torch.ops.qcast.hadamard first where it names a rotation). The static
per-tensor op is checked against a NumPy formula from docs/formats.md. PyTorch's
nn.TransformerEncoder, traced, quantizes W4A4 with rotations, and a rotation alone keeps its function.
Bad activation options fail with exit code 2, a format that cannot apply with the layer's name.

usage: activation_check.py QCAST LIBQCAST_OPS
"""
import json, os, subprocess, sys, tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from checks import check, finish

qcast, lib = sys.argv[1], sys.argv[2]
torch.ops.load_library(lib)
torch.set_num_threads(1)  # the hand-written forward and the saved model sum in the same order


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 64)
        self.out = nn.Linear(64, 8)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + F.relu(self.body(x))
        x = F.relu(self.head(x.mean((2, 3))))
        return self.out(x)


def run(*args):
    return subprocess.run([qcast, "quantize", *args], capture_output=True, text=True)


def by_hand(m, layers, x):
    """The quantized model's forward, written out: each layer's input cast as the report says."""
    p = dict(m.named_parameters())

    def act(name, v):
        l = layers[name + ".weight"]
        if l.get("hadamard_block"):  # the rotation along the reduction: channels (dim 1) or features
            v = torch.ops.qcast.hadamard(v, l["hadamard_block"], 1 if v.dim() == 4 else -1)
        if not l.get("act_format"):
            return v
        if l["act_amax"] is None:
            return torch.ops.qcast.cast(v, l["act_format"])
        return torch.ops.qcast.cast(v, l["act_format"], tensor_amax=l["act_amax"])

    x = F.relu(F.conv2d(act("stem", x), p["stem.weight"], p["stem.bias"], padding=1))
    x = x + F.relu(F.conv2d(act("body", x), p["body.weight"], p["body.bias"], padding=1))
    x = F.relu(F.linear(act("head", x.mean((2, 3))), p["head.weight"], p["head.bias"]))
    return F.linear(act("out", x), p["out.weight"], p["out.bias"])


torch.manual_seed(0)
with tempfile.TemporaryDirectory() as d:
    model, calib = os.path.join(d, "m.pt"), os.path.join(d, "calib.pt")
    net = Net().eval()
    torch.jit.script(net).save(model)
    data = torch.randn(48, 3, 8, 8)
    torch.save(data, calib)
    x = data[:16]
    cases = [
        ("W4A8 block", "mxfp4", ["--act-format", "mxfp8_e4m3"]),
        ("W4A8 per-tensor static", "int4@g32", ["--act-format", "int8", "--act-amax", "percentile:99.9"]),
        ("W4A4 two-level", "nvfp4", ["--act-format", "nvfp4", "--layer-act-format", "out.*=int8@g16",
                                     "--act-amax", "mse"]),
        ("W4A8 mixed, head in float", "mxfp4", ["--act-format", "mxint8", "--layer-act-format", "head.*=none"]),
        ("W4A4 rotated", "nvint4", ["--act-format", "nvint4", "--rotate", "hadamard"]),
    ]
    for name, wfmt, flags in cases:
        out, report = os.path.join(d, "q.pt"), os.path.join(d, "r.json")
        export = os.path.join(d, "q.safetensors")
        r = run(model, "--format", wfmt, "--method", "gptq", "--calib", calib, *flags, "--act-unfit", "float",
                "-o", out, "--report", report, "--export", export, "--quiet")
        check(r.returncode == 0, f"{name}: quantize failed: {r.stderr.strip()}")
        if r.returncode != 0:
            continue
        with open(report) as f:
            rep = json.load(f)
        layers = {l["name"]: l for l in rep["layers"]}
        check(rep["options"]["act-unfit"] == "float", f"{name}: options in the report")
        if layers["body.weight"]["act_format"] != "int8":  # blocks: the stem's 3 channels take none
            check("activations in float: a block of" in r.stdout.split("stem.weight: ")[-1],
                  f"{name}: the table says the stem's activations stay in float: {r.stdout[-400:]}")
            check(layers["stem.weight"].get("act_format") is None and "does not divide" in layers["stem.weight"]["act_status"],
                  f"{name}: the stem's activations stay in float: {layers['stem.weight']}")
        else:  # a per-tensor scale fits any layer
            check(layers["stem.weight"]["act_format"] == "int8" and layers["stem.weight"]["act_amax"] > 0,
                  f"{name}: the stem's static int8: {layers['stem.weight']}")
        check(layers["body.weight"]["act_format"] not in (None, "") and
              (layers["body.weight"]["act_format"].endswith(":axis=-3") or layers["body.weight"]["act_format"] == "int8"),
              f"{name}: the convolution's activation blocks run along its channels: {layers['body.weight']}")
        with open(os.path.join(d, "q.quantization_config.json")) as f:
            inputs = json.load(f).get("inputs", {})
        for lname, l in layers.items():  # the export's config names what runs on each input
            want = {k: l[k] for k in ("hadamard_block", "act_format", "act_amax") if l.get(k)}
            check(inputs.get(lname, {}) == want, f"{name}: quantization config inputs of {lname}: {inputs.get(lname)} vs {want}")
        q = torch.jit.load(out)
        with torch.no_grad():
            y, ref = q(x), by_hand(q, layers, x)
        check(torch.equal(y, ref), f"{name}: the saved model differs from the hand-written forward "
                                    f"(max {float((y - ref).abs().max())})")
        check(not torch.equal(y, net(x)), f"{name}: the saved model is not quantized")
        check("ops.qcast.cast" in q.code, f"{name}: the saved forward holds the casts")
        if "--rotate" in flags:
            check("ops.qcast.hadamard" in q.code, f"{name}: the saved forward holds the rotations")
            check(layers["body.weight"]["hadamard_block"] == 16 and layers["stem.weight"]["hadamard_block"] == 0,
                  f"{name}: rotated layers: {layers['body.weight']}, {layers['stem.weight']}")
        if "none" in " ".join(flags):
            check(layers["head.weight"].get("act_format") is None, f"{name}: head stays in float")

    # SmoothQuant with an identity weight format: the same function as the float model (the inputs
    # divided by s in the graph, the weights' input channels multiplied by it).
    out = os.path.join(d, "smooth.pt")
    r = run(model, "--format", "fp32", "--method", "rtn", "--calib", calib, "--smooth", "0.5", "-o", out, "--quiet")
    check(r.returncode == 0, f"--smooth: {r.stderr.strip()[:300]}")
    if r.returncode == 0:
        q = torch.jit.load(out)
        with torch.no_grad():
            check(torch.allclose(q(x), net(x), rtol=1e-5, atol=1e-5), "--smooth keeps the float function")
        check("torch.mul" in q.code and not torch.equal(dict(q.named_parameters())["body.weight"], net.body.weight),
              "--smooth: the inputs are scaled in the graph and the weights offline")

    # Format search: fp4@g32:scale=e8m0 is e1m2 and e2m1 (mxfp4) in MX blocks; with --search-clip.
    out, report = os.path.join(d, "search.pt"), os.path.join(d, "search.json")
    r = run(model, "--format", "mxfp4", "--method", "gptq", "--calib", calib, "--search-format", "fp4@g32:scale=e8m0",
            "--search-clip", "-o", out, "--report", report, "--quiet")
    check(r.returncode == 0, f"--search-format: {r.stderr.strip()[:300]}")
    if r.returncode == 0:
        with open(report) as f:
            rep = json.load(f)
        check(rep["options"]["search-format"] == ["e1m2nosp@g32:scale=e8m0", "mxfp4"], f"search options: {rep['options']}")
        for l in rep["layers"]:
            check(l["format"] in ("e1m2nosp@g32:scale=e8m0", "mxfp4") and 0.6 - 1e-9 <= l["notes"]["clip"] <= 1.0,
                  f"searched layer {l['name']}: {l['format']}, {l['notes']}")

    # PyTorch's own nn.TransformerEncoder (attention with one in_proj weight, residuals, LayerNorms).
    # Traced with gradients off it records the fused fast-path op, which takes the weights whole:
    # the report says so and how to trace instead. Traced with gradients on, every linear layer is
    # found; a rotation alone keeps the float function, and W4A4 rotated loads back in PyTorch.
    enc = nn.Sequential(nn.Linear(16, 64), nn.TransformerEncoder(
        nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0), 2, enable_nested_tensor=False),
        nn.Linear(64, 8)).eval()
    tokens = torch.randn(24, 6, 16)
    tcalib, fused, traced = (os.path.join(d, n) for n in ("tokens.pt", "fused.pt", "traced.pt"))
    torch.save(tokens, tcalib)
    with torch.no_grad():
        torch.jit.trace(enc, tokens[:2]).save(fused)
    torch.jit.trace(enc, tokens[:2], check_trace=False).save(traced)
    r = subprocess.run([qcast, "quantize", fused, "--list"], capture_output=True, text=True)
    check(r.returncode == 0 and "fused fast path: trace with gradients enabled" in r.stdout,
          f"the fused encoder's weights name the fix: {r.stdout[-600:]}{r.stderr[-300:]}")
    r = subprocess.run([qcast, "quantize", traced, "--list"], capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.count("quantizable") == 10, f"the traced encoder's 10 linear layers: {r.stdout[-900:]}")
    with torch.no_grad():
        want = enc(tokens[:8])
    for name, flags, close in [("rotation alone", ["--format", "fp32", "--method", "rtn", "--rotate", "hadamard:16"], 1e-4),
                               ("W4A4 rotated", ["--format", "nvint4", "--method", "ed", "--act-format", "nvint4",
                                                 "--rotate", "hadamard"], None)]:
        out = os.path.join(d, "enc_q.pt")
        r = run(traced, *flags, "--calib", tcalib, "-o", out, "--quiet")
        check(r.returncode == 0, f"encoder {name}: {r.stderr.strip()[:300]}")
        if r.returncode != 0:
            continue
        q = torch.jit.load(out)
        with torch.no_grad():
            y = q(tokens[:8])
        check(q.code.count("ops.qcast.hadamard") >= 1, f"encoder {name}: the rotations are in the saved forward")
        if close is not None:
            check(torch.allclose(y, want, rtol=close, atol=close),
                  f"encoder {name}: the float function changed by {float((y - want).abs().max())}")
        else:
            cos = float(F.cosine_similarity(y.flatten(), want.flatten(), dim=0))
            check(not torch.equal(y, want) and 0.9 < cos < 1.0, f"encoder {name}: cosine to float {cos}")

    # The static per-tensor op against NumPy (docs/formats.md: scaled integers).
    v = torch.randn(4, 50) * 3
    for amax in (0.5, 2.0, 9.0):
        s = np.float32(amax) / np.float32(127)
        want = np.clip(np.rint(v.numpy() / s), -127, 127).astype(np.float32) * s
        got = torch.ops.qcast.cast(v, "int8", tensor_amax=amax).numpy()
        check(np.array_equal(got, want), f"static int8 with amax {amax} against NumPy")

    # Bad options: usage errors (2); a format that cannot apply: the layer, exit 1.
    for flags, text in [(["--act-amax", "max"], "applies to activation formats"),
                        (["--act-unfit", "float"], "applies to activation formats and rotations"),
                        (["--rotate", "hadamard:24"], "needs a power of two"),
                        (["--smooth", "1.5"], "needs ALPHA in [0, 1] or pow2"),
                        (["--smooth", "0.5"], "--smooth needs --calib"),
                        (["--search-clip"], "need --calib"),
                        (["--search-format", "mxfp4,,nvfp4"], "has an empty entry"),
                        (["--search-format", "fp9@g32"], "unknown"),
                        (["--rotate", "givens"], "valid values are hadamard and hadamard:B"),
                        (["--act-format", "mxfp8_e4m3", "--act-amax", "median"], "valid values are max, percentile[:P], mse"),
                        (["--act-format", "mxfp8_e4m3", "--act-amax", "percentile:120"], "P must be in (0, 100]"),
                        (["--act-format", "mxfp9"], "unknown"),
                        (["--act-format", "mxfp8_e4m3", "--act-unfit", "skip"], "valid values are error and float"),
                        (["--layer-act-format", "mxfp4"], "needs PATTERN=FORMAT")]:
        r = run(model, "--format", "mxfp4", "--method", "rtn", *flags, "-o", os.path.join(d, "bad.pt"))
        check(r.returncode == 2 and text in r.stderr, f"{flags}: exit {r.returncode}, {r.stderr.strip()[:300]}")
    r = run(model, "--format", "mxfp4", "--method", "rtn", "--act-format", "mxfp8_e4m3", "-o", os.path.join(d, "bad.pt"))
    check(r.returncode == 1 and "layer stem.weight (aten::conv2d)" in r.stderr and "--act-unfit float" in r.stderr,
          f"unfit layer: exit {r.returncode}, {r.stderr.strip()[:300]}")
    check(not os.path.exists(os.path.join(d, "bad.pt")), "nothing written after an error")

finish("activation_check: all checks passed")
