"""`qcast quantize --accumulator-bits P` from outside qcast: the integer codes of the exported
safetensors file, unpacked here from the bytes without qcast, keep every tile's dot product within a
P-bit accumulator for any input in the range the quantization config states (the worst corner of
the input box, per output and tile); the config's worst case is the one computed here; the plain
run needs more bits (the bound binds); the CLI refuses what cannot carry a bound with the reason.

usage: accumulator_check.py QCAST
"""
import json, os, subprocess, sys, tempfile

import torch
import torch.nn as nn
from safetensors.torch import load_file

from checks import check, finish

qcast = sys.argv[1]


def integers(t, bits, n):
    """The first n signed codes of a tensor: I8 as it is, anything narrower from the little-endian
    bit stream (docs/safetensors.md)."""
    if t.dtype == torch.int8:
        return t.reshape(-1).to(torch.int64)[:n]
    b = t.view(torch.uint8).reshape(-1)
    stream = torch.stack([(b >> i) & 1 for i in range(8)], 1).reshape(-1)[: n * bits]
    c = (stream.reshape(n, bits).to(torch.int64) * (2 ** torch.arange(bits))).sum(1)
    return torch.where(c >= 2 ** (bits - 1), c - 2 ** bits, c)


def worst(q, lo, hi, tile):
    """max over rows and tiles of |sum q x| with x in [lo, hi] per element."""
    rows, cols = q.shape
    out = 0
    for c0 in range(0, cols, tile):
        part = q[:, c0 : c0 + tile]
        most = torch.maximum(part * lo, part * hi).sum(1)
        least = torch.minimum(part * lo, part * hi).sum(1)
        out = max(out, int(most.max()), int(-least.min()))
    return out


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 8 * 8, 96)
        self.fc2 = nn.Linear(96, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def run(*args, expect_ok=True):
    p = subprocess.run([qcast, "quantize", *args, "--quiet"], capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        print(p.stdout, p.stderr)
    return p


with tempfile.TemporaryDirectory() as d:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.fc1.weight.abs_()  # every product of fc1 pushes one way: the accumulator's worst case
    model = os.path.join(d, "net.pt")
    torch.jit.script(net).save(model)
    calib = os.path.join(d, "calib.pt")
    torch.save(torch.rand(64, 3, 8, 8), calib)
    common = [model, "--calib", calib, "--batch-size", "16"]

    cases = [  # format, method, extra, bits, input range
        ("int4@channel", "gptq", ["--act-format", "int8"], 14, (-127, 127)),
        ("int4@g32", "gpfq", ["--act-format", "int8", "--accumulator-tile", "16"], 11, (-127, 127)),
        ("int8@channel", "rtn", ["--act-bits", "8", "--act-unsigned"], 18, (0, 255)),
        ("mxint8", "ed", ["--act-bits", "6"], 15, (-32, 31)),
    ]
    for fmt, method, extra, bits, (lo, hi) in cases:
        what = "%s %s %s P=%d" % (fmt, method, " ".join(extra), bits)
        plain_extra = [a for a in extra if a not in ("--accumulator-tile", "16")]
        plain = run(*common, "--format", fmt, "--method", method, *plain_extra, "-o", os.path.join(d, "p.pt"),
                    "--export", os.path.join(d, "p.safetensors"))
        check(plain.returncode == 0, what + ": the run without a bound")
        pc = json.load(open(os.path.join(d, "p.quantization_config.json")))
        need = max(a["bits_needed"] for a in pc["accumulators"].values()) if "accumulators" in pc else 0
        check(need > bits, what + ": without the bound the codes need %d bits" % need)

        p = run(*common, "--format", fmt, "--method", method, *extra, "--accumulator-bits", str(bits),
                "-o", os.path.join(d, "q.pt"), "--export", os.path.join(d, "q.safetensors"))
        check(p.returncode == 0, what + ": runs")
        if p.returncode != 0:
            continue
        cfg = json.load(open(os.path.join(d, "q.quantization_config.json")))
        tensors = load_file(os.path.join(d, "q.safetensors"))
        acc = cfg.get("accumulators", {})
        check(sorted(acc) == sorted(cfg["quantized"]), what + ": every quantized layer has its accumulator entry")
        for name, a in acc.items():
            meta = json.loads(open(os.path.join(d, "q.safetensors"), "rb").read(8 + int.from_bytes(
                open(os.path.join(d, "q.safetensors"), "rb").read(8), "little"))[8:])["__metadata__"]["qcast:" + name]
            meta = json.loads(meta)
            rows, cols = meta["matrix"]
            ebits = 8 if fmt in ("int8@channel", "mxint8") else 4
            q = integers(tensors[name], ebits, rows * cols).reshape(rows, cols)
            check((a["input_min"], a["input_max"]) == (lo, hi), what + ": %s input range %s" % (name, a))
            w = worst(q, lo, hi, a["tile"])
            check(w <= 2 ** (bits - 1) - 1, what + ": %s worst case %d fits %d bits" % (name, w, bits))
            check(w == a["worst"], what + ": %s worst case %d as the config says (%d)" % (name, w, a["worst"]))
            check(a["bits"] == bits, what + ": %s bound" % name)
            if fmt == "int4@g32":
                check(a["tile"] == 16, what + ": tile 16")

    # What cannot carry a bound, and options that need another.
    refusals = [
        (["--format", "mxfp4", "--act-format", "int8", "--accumulator-bits", "14"], "needs integer weights"),
        (["--format", "int4@g32", "--act-format", "int8", "--accumulator-bits", "14", "--accumulator-tile", "48"],
         "crosses the blocks"),
        (["--format", "int4@g32", "--accumulator-bits", "14"], "--act-bits N"),
        (["--format", "int4@g32", "--act-format", "fp8_e4m3", "--accumulator-bits", "14"], "needs integer inputs"),
        (["--format", "int4@g32", "--act-bits", "8", "--accumulator-tile", "16"], "give --accumulator-bits"),
        (["--format", "int4@g32", "--act-unsigned"], "give --act-bits"),
        (["--format", "int4@g32", "--act-bits", "8", "--accumulator-bits", "1"], "--accumulator-bits"),
    ]
    for args, says in refusals:
        out = os.path.join(d, "r.pt")
        p = run(*common, *args, "-o", out, expect_ok=False)
        check(p.returncode != 0 and says in p.stderr, "refused with '%s': %s" % (says, p.stderr.strip()))
        check(not os.path.exists(out), "nothing written for " + " ".join(args))

finish("accumulator bounds: codes checked from the safetensors export")
