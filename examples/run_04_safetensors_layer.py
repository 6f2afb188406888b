"""Runs example 04 end to end: a scripted two-layer model is quantized to NVFP4 and exported as
safetensors by qcast; the example decodes layer 0 from the file in C++ and runs it on an input; its
output must equal PyTorch's run of that layer of the quantized model (the same weights; the sums
differ only in order and precision: the example sums in float64).

usage: run_04_safetensors_layer.py QCAST EXAMPLE
"""
import os, subprocess, sys, tempfile

import torch
import torch.nn as nn

qcast, example = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as d:
    torch.manual_seed(0)
    model = torch.jit.script(nn.Sequential(nn.Linear(96, 24), nn.ReLU(), nn.Linear(24, 8)).eval())
    model.save(os.path.join(d, "m.pt"))
    subprocess.run([qcast, "quantize", os.path.join(d, "m.pt"), "--format", "nvfp4", "--method", "rtn", "-o",
                    os.path.join(d, "q.pt"), "--export", os.path.join(d, "q.safetensors"), "--quiet"], check=True)
    x = torch.randn(96)
    r = subprocess.run([example, os.path.join(d, "q.safetensors"), "0"], input="\n".join(map(repr, x.tolist())),
                       capture_output=True, text=True, check=True)
    print(r.stderr.strip())
    y = torch.tensor([float(v) for v in r.stdout.split()], dtype=torch.float64)
    q = torch.jit.load(os.path.join(d, "q.pt"))
    layer = dict(q.named_parameters())
    ref = layer["0.weight"].double() @ x.double() + layer["0.bias"].double()
    f = dict(model.named_parameters())
    floating = f["0.weight"].double() @ x.double() + f["0.bias"].double()
    err = (y - ref).abs().max().item()
    print("example vs the quantized model's layer: max |diff| %.3g; vs the float layer: %.3g" %
          (err, (y - floating).abs().max().item()))
    if err > 1e-6 * ref.abs().max().item():  # float64 sums of float32 products, printed with 9 digits
        sys.exit("the example's output is not the quantized layer's")
