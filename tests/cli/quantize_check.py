"""End-to-end check of `qcast quantize` from PyTorch's side: a scripted model with a residual block,
a grouped convolution and a linear layer called twice is quantized with each method; the outputs
must load and run in PyTorch, differ from the input only in weights, and the .qpack export must
follow docs/qpack.md (parsed here independently). Bad input must fail with a clear message.

usage: quantize_check.py QCAST
"""
import json, os, signal, struct, subprocess, sys, tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from checks import check, failures

qcast = sys.argv[1]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + F.relu(self.grouped(x))
        x = x.mean((2, 3))
        x = F.relu(self.head(x))
        x = F.relu(self.head(x))
        return self.out(x)


def run(*args):
    return subprocess.run([qcast, "quantize", *args], capture_output=True, text=True)


def read_qpack(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"QCASTPK1", "magic"
    version, count = struct.unpack_from("<II", data, 8)
    pos, entries = 16, []
    for _ in range(count):
        n, = struct.unpack_from("<I", data, pos); name = data[pos + 4:pos + 4 + n].decode(); pos += 4 + n
        n, = struct.unpack_from("<I", data, pos); fmt = data[pos + 4:pos + 4 + n].decode(); pos += 4 + n
        rank, = struct.unpack_from("<I", data, pos); pos += 4
        shape = list(struct.unpack_from("<" + "q" * rank, data, pos)); pos += 8 * rank
        layout = data[pos]; pos += 1
        rows, cols = struct.unpack_from("<qq", data, pos); pos += 16
        s_t, = struct.unpack_from("<f", data, pos); pos += 4
        n, = struct.unpack_from("<Q", data, pos); codes = n; pos += 8 + n
        n, = struct.unpack_from("<Q", data, pos); scales = n; pos += 8 + n
        entries.append(dict(name=name, format=fmt, shape=shape, layout=layout, rows=rows, cols=cols, codes=codes, scales=scales))
    assert pos == len(data), "trailing bytes"
    return version, entries


with tempfile.TemporaryDirectory() as d:
    torch.manual_seed(0)
    model = torch.jit.script(Net().eval())
    model_path, calib_path = os.path.join(d, "net.pt"), os.path.join(d, "calib.pt")
    model.save(model_path)
    torch.save(torch.rand(24, 3, 8, 8), calib_path)
    x = torch.rand(5, 3, 8, 8)
    ref = model(x)

    lst = subprocess.run([qcast, "quantize", model_path, "--list"], capture_output=True, text=True)
    check(lst.returncode == 0 and "head.weight" in lst.stdout and "2 uses" in lst.stdout, "--list shows the shared layer")
    lst = subprocess.run([qcast, "quantize", model_path, "--list", "--json"], capture_output=True, text=True)
    check(lst.returncode == 0, "--list --json: " + lst.stderr)
    if lst.returncode == 0:
        layers = json.loads(lst.stdout)
        check([l["name"] for l in layers] == ["stem.weight", "grouped.weight", "head.weight", "out.weight"]
              and layers[2]["uses"] == 2 and layers[1]["shape"] == [16, 4, 3, 3] and all(l["quantizable"] for l in layers),
              "--list --json: names, uses, shapes")

    errors = {}
    for method in ("rtn", "gptq", "ed"):
        out, pack, rep = (os.path.join(d, f"{method}.{e}") for e in ("pt", "qpack", "json"))
        r = run(model_path, "--format=mxfp4", "--method", method, "--calib=" + calib_path, "-o", out,
                "--export", pack, "--report", rep, "--quiet")
        check(r.returncode == 0, f"{method}: exit code {r.returncode}: {r.stderr}")
        if r.returncode:
            continue
        check("stem.weight" in r.stdout, f"{method}: the table names the layers")
        q = torch.jit.load(out)
        y = q(x)
        check(y.shape == ref.shape and torch.isfinite(y).all(), f"{method}: the quantized model runs in PyTorch")
        rel = ((y - ref).norm() / ref.norm()).item()
        check(0 < rel < 0.5, f"{method}: output changed by a plausible amount ({rel:.3f})")
        qp = dict(q.named_parameters())
        for name, p in model.named_parameters():
            same = torch.equal(p, qp[name])
            check(same != (p.dim() >= 2), f"{method}: {name} {'unchanged' if p.dim() < 2 else 'quantized'}")
        report = json.load(open(rep))
        check(report["method"] == method and len(report["layers"]) == 4, f"{method}: report lists 4 layers")
        errors[method] = {l["name"]: l["relative_error"] for l in report["layers"]}
        check(report["schema"] == "qcast.ptq.report" and report["schema_version"] == 1
              and report["qcast_version"].startswith("0.") and report["torch_version"] == torch.__version__.split("+")[0],
              f"{method}: report schema and versions")
        check(report["options"]["method"] == method and report["options"]["format"] == "mxfp4"
              and report["options"]["model"] == model_path and report["options"]["calib"] == calib_path
              and report["options"]["batch-size"] == "16" and report["options"]["per-sample-convolutions"] == "true",
              f"{method}: report options {report['options']}")
        params = dict(model.named_parameters())
        float_bytes = {n: p.numel() * 4 for n, p in params.items() if p.dim() >= 2}
        for l in report["layers"]:
            n = float_bytes[l["name"]]
            # mxfp4: 4 bits per element, one byte of scale per 32 along the reduction axis
            rows = params[l["name"]].shape[0]
            packed = n // 4 // 2 + rows * ((n // 4 // rows + 31) // 32)
            check(l["float_bytes"] == n and l["quantized_bytes"] == packed,
                  f"{method}: bytes of {l['name']}: {l['float_bytes']}, {l['quantized_bytes']} (want {n}, {packed})")
        check(report["float_bytes"] == sum(float_bytes.values())
              and report["quantized_bytes"] == sum(l["quantized_bytes"] for l in report["layers"]),
              f"{method}: report totals")
        check("bits per weight" in r.stdout, f"{method}: the table prints the sizes")
        version, entries = read_qpack(pack)
        check(version == 1 and [e["name"] for e in entries] == ["stem.weight", "grouped.weight", "head.weight", "out.weight"],
              f"{method}: .qpack entries")
        for e in entries:
            n = e["rows"] * e["cols"]
            check(e["format"] == "mxfp4" and e["codes"] == (n * 4 + 7) // 8 and e["scales"] == e["rows"] * ((e["cols"] + 31) // 32),
                  f"{method}: .qpack sizes of {e['name']}")
            check(list(qp[e["name"]].shape) == e["shape"], f"{method}: .qpack shape of {e['name']}")
    if len(errors) == 3:
        for layer in errors["rtn"]:
            check(errors["ed"][layer] < errors["rtn"][layer], f"ed error below rtn on {layer}")

    r = run(model_path, "--format", "mxfp4", "--method", "ed", "--calib", calib_path, "-o", model_path)
    check(r.returncode == 2 and "is an input" in r.stderr, "refuses to write over the input model")
    check(torch.equal(torch.jit.load(model_path).stem.weight, model.stem.weight), "the input model is intact")
    r = run(model_path, "--format", "mxfp5", "--calib", calib_path, "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 2 and "mxfp4" in r.stderr, "unknown format lists the valid names (a usage error)")
    r = run(model_path, "--format", "mxfp4", "--method", "awq", "--calib", calib_path, "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 2 and "ed, flexround, gpfq, gptq, rtn" in r.stderr, "unknown method lists the valid ones")
    bad = os.path.join(d, "bad.pt")
    torch.save(torch.rand(4, 5, 8, 8), bad)
    r = run(model_path, "--format", "mxfp4", "--calib", bad, "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 1 and "does not fit the model" in r.stderr and "[4, 5, 8, 8]" in r.stderr, "calibration shape error")
    check(not os.path.exists(os.path.join(d, "o.pt")), "no output after a failure")
    with open(bad, "w") as f:
        f.write("garbage")
    r = run(bad, "--format", "mxfp4", "--calib", calib_path, "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 1 and bad in r.stderr and "not a TorchScript model" in r.stderr, "corrupt model named by path")

    # The pipeline: rtn needs no data; a tiny memory budget spills every boundary state to disk and
    # gives the same bits; method options come from the registry; devices are checked.
    plain, nodata, spilled = (os.path.join(d, n) for n in ("plain.pt", "nodata.pt", "spilled.pt"))
    r = run(model_path, "--format", "int4@g32", "--method", "rtn", "-o", nodata, "--quiet")
    check(r.returncode == 0, f"rtn without --calib: exit {r.returncode}: {r.stderr}")
    if r.returncode == 0:
        q = dict(torch.jit.load(nodata).named_parameters())
        check(all(torch.isfinite(v).all() for v in q.values()), "rtn without data writes a finite model")
        check(" - " in r.stdout, "rtn without data reports no relative error")
    spill_dir = os.path.join(d, "spill")
    os.mkdir(spill_dir)
    for path, extra in ((plain, []), (spilled, ["--cache-mb", "0", "--spill-dir", spill_dir])):
        r = run(model_path, "--format", "nvfp4", "--method", "ed", "--calib", calib_path, "--batch-size", "5", "-o", path,
                "--quiet", *extra)
        check(r.returncode == 0, f"ed {extra}: exit {r.returncode}: {r.stderr}")
    if os.path.exists(plain) and os.path.exists(spilled):
        a, b = dict(torch.jit.load(plain).named_parameters()), dict(torch.jit.load(spilled).named_parameters())
        check(all(torch.equal(a[n], b[n]) for n in a), "spilling the boundary state to disk changes no bit")
        check(os.listdir(spill_dir) == [], "the spill folder is emptied and its temporary folder removed")
    r = run(model_path, "--format", "mxfp4", "--method", "ed", "--lazy-batch", "64", "--calib", calib_path, "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 2 and "--lazy-batch is an option of gpfq, gptq, not of ed" in r.stderr,
          "a method option of another method is refused, naming the methods that take it")
    r = run(model_path, "--format", "mxfp4", "--method", "gptq", "--damping", "x", "--calib", calib_path, "-o", os.path.join(d, "o.pt"))
    check(r.returncode != 0 and "damping" in r.stderr and "'x'" in r.stderr, "a bad method option value is quoted")
    r = run(model_path, "--format", "mxfp4", "--method", "gptq", "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 2 and "--calib is required by method gptq" in r.stderr, "gptq without data is a usage error")
    r = run(model_path, "--format", "mxfp4", "--method", "rtn", "--bias-correction", "-o", os.path.join(d, "o.pt"))
    check(r.returncode == 2 and "--bias-correction needs --calib" in r.stderr, "bias correction without data is a usage error")
    corrected, corrected_rep = os.path.join(d, "corrected.pt"), os.path.join(d, "corrected.json")
    r = run(model_path, "--format", "mxfp4", "--method", "gpfq", "--bias-correction", "--calib", calib_path, "-o", corrected,
            "--report", corrected_rep, "--quiet")
    check(r.returncode == 0, f"gpfq --bias-correction: exit {r.returncode}: {r.stderr}")
    if r.returncode == 0:
        layers = {l["name"]: l for l in json.load(open(corrected_rep))["layers"]}
        check("bias_shift" in layers["stem.weight"].get("notes", {}), "the report gives the bias shift of a layer with a bias")
        b0, b1 = model.stem.bias, torch.jit.load(corrected).stem.bias
        check(not torch.equal(b0, b1), "bias correction changes the bias of the quantized model")
    fastest_rep = os.path.join(d, "fastest.json")
    r = run(model_path, "--format", "mxfp4", "--method", "ed", "--fastest-convolutions", "--calib", calib_path,
            "-o", os.path.join(d, "fastest.pt"), "--report", fastest_rep, "--quiet")
    check(r.returncode == 0 and json.load(open(fastest_rep))["options"]["per-sample-convolutions"] == "false",
          f"--fastest-convolutions runs and the report says so: {r.stderr}")
    # flexround from the command line: its options, a progress line per span, the span errors in
    # the report, and a saved model that runs.
    learned, learned_rep = os.path.join(d, "flexround.pt"), os.path.join(d, "flexround.json")
    r = run(model_path, "--format", "int4@g16", "--method", "flexround", "--span", "layer", "--iters", "20", "--lr", "0.001",
            "--calib", calib_path, "-o", learned, "--report", learned_rep)
    check(r.returncode == 0, f"flexround: exit {r.returncode}: {r.stderr}")
    if r.returncode == 0:
        check("train, iteration 20/20, loss" in r.stderr, "flexround prints its training progress")
        notes = [l.get("notes", {}) for l in json.load(open(learned_rep))["layers"] if l["status"] == "quantized"]
        check(notes and all("span_error_start" in n and "span_error_learned" in n for n in notes),
              "the report gives every span's error at the start and after training")
        out = torch.jit.load(learned)(x)
        check(out.shape == ref.shape and bool(torch.isfinite(out).all()), "the flexround model runs")
    # --holdout: the last batch of 3 (24 samples, batches of 8) picks the iterate kept.
    r = run(model_path, "--format", "int4@g16", "--method", "flexround", "--iters", "20", "--holdout", "1",
            "--calib", calib_path, "--batch-size", "8", "-o", learned, "--report", learned_rep)
    check(r.returncode == 0, f"flexround --holdout: exit {r.returncode}: {r.stderr}")
    if r.returncode == 0:
        notes = [l.get("notes", {}) for l in json.load(open(learned_rep))["layers"] if l["status"] == "quantized"]
        check(notes and all(n["span_held_out_learned"] <= n["span_held_out_start"] and n["span_kept_iteration"] in (0, 20)
                            for n in notes), "the report gives each span's held-out error and the iterate kept")
    r = run(model_path, "--format", "int4@g16", "--method", "flexround", "--holdout", "3", "--calib", calib_path,
            "--batch-size", "8", "-o", learned + "x")
    check(r.returncode == 1 and "3 held-out batches leave none to train on (the calibration has 3 batches)" in r.stderr
          and not os.path.exists(learned + "x"), "holding out every batch is a clear error")
    r = run(model_path, "--format", "int4@g16", "--method", "flexround", "--span", "(", "--calib", calib_path, "-o", learned + "x")
    check(r.returncode != 0 and "nor a valid regular expression" in r.stderr and not os.path.exists(learned + "x"),
          "a bad span expression is a clear error")
    r = run(model_path, "--format", "mxfp4", "--method", "rtn", "--device", "tpu", "-o", os.path.join(d, "o.pt"))
    check(r.returncode != 0 and "cpu, cuda, cuda:N" in r.stderr, "an unknown device lists the valid ones")
    if not torch.cuda.is_available():
        r = run(model_path, "--format", "mxfp4", "--method", "rtn", "--device", "cuda", "-o", os.path.join(d, "o.pt"))
        check(r.returncode == 1 and "no CUDA device" in r.stderr, "--device cuda without a GPU is a clear error")
    check(not os.path.exists(os.path.join(d, "o.pt")), "no output after the failures above")

    # SIGINT and SIGTERM mid-run: exit 130, no output, no report, the spilled boundary state removed.
    # A deep model with much calibration data, so that the signal comes while stages still run.
    deep = torch.jit.script(nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.GELU()) for _ in range(48)]).eval())
    deep_path, deep_calib = os.path.join(d, "deep.pt"), os.path.join(d, "deep_calib.pt")
    deep.save(deep_path)
    torch.save(torch.randn(512, 64, 256), deep_calib)
    for sig, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
        out, rep, spill = (os.path.join(d, f"stopped_{name}.{e}") for e in ("pt", "json", "spill"))
        os.mkdir(spill)
        p = subprocess.Popen([qcast, "quantize", deep_path, "--format", "int4@g128", "--method", "gptq", "--calib", deep_calib,
                              "--cache-mb", "0", "--spill-dir", spill, "-o", out, "--report", rep],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = p.stderr.readline()  # the first progress line: the run is under way
        p.send_signal(sig)
        rest = p.stderr.read()
        rc = p.wait()
        check("[" in first and rc == 130 and f"stopped by {name}; nothing was written" in rest,
              f"{name}: exit 130 with a clear line (exit {rc}: {first.strip()} / {rest.strip()[-200:]})")
        check(not os.path.exists(out) and not os.path.exists(rep), f"{name}: no output and no report")
        check(os.listdir(spill) == [], f"{name}: the spilled boundary state is removed")
        check(not [f for f in os.listdir(d) if f.startswith(f"stopped_{name}.pt")], f"{name}: no temporary output left")
    h = subprocess.run([qcast, "quantize", "--help"], capture_output=True, text=True)
    check(h.returncode == 0 and all(m in h.stdout for m in ("gptq", "--act-order", "--lazy-batch", "rtn", "ed")),
          "--help lists the registered methods and their options")

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
