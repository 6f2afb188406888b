"""`qcast quantize` as ranks of a process group (c10d, Gloo over 127.0.0.1): 2 and 3 local ranks give
the codes, scales and model of the single-process run bit for bit (gptq, ed with its held-out halves,
int8 activations with their static amax, bias correction); rank 0 alone writes; ranks that disagree
on the model or the world size, a port in use, fewer batches than ranks and a rank killed mid-run are
clear errors on every rank, and nothing is written.

usage: distributed_check.py QCAST
"""
import json, os, signal, socket, subprocess, sys, tempfile, time

import torch
import torch.nn as nn

from checks import check, finish

qcast = sys.argv[1]
torch.ops.load_library(os.path.join(os.path.dirname(os.path.realpath(qcast)), "libqcast_ops.so"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Net(nn.Module):
    def __init__(self, width=48):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc1 = nn.Linear(8 * 6 * 6, width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y + torch.relu(self.grouped(y))
        h = torch.tanh(self.fc1(y.flatten(1)))
        return self.out(h + torch.tanh(self.fc2(h)))


def ranks(n, args, out_dir, timeout=120, extra=None, models=None):
    """Runs n ranks on a fresh port; returns their CompletedProcess-like (rc, stdout, stderr)."""
    port = free_port()
    procs = []
    for r in range(n):
        cmd = [qcast, "quantize", *(models[r] if models else args[0]), *args[1], "--quiet",
               "--dist-init", "tcp://127.0.0.1:%d" % port, "--rank", str(r), "--world-size", str((extra or {}).get(r, n)),
               "--dist-timeout", "20", "-o", os.path.join(out_dir, "d.pt"), "--export", os.path.join(out_dir, "d.qpack"),
               "--report", os.path.join(out_dir, "d.json")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=timeout), p.stdout.read(), p.stderr.read()) for p in procs]


def outputs_of(d, stem):
    return [os.path.join(d, stem + e) for e in (".pt", ".qpack", ".json")]


with tempfile.TemporaryDirectory() as d:
    torch.manual_seed(0)
    model = os.path.join(d, "net.pt")
    torch.jit.script(Net().eval()).save(model)
    calib = os.path.join(d, "calib.pt")
    torch.save(torch.rand(30, 3, 6, 6), calib)
    base = [model, "--calib", calib, "--batch-size", "4"]  # 8 batches, the last of 2 samples

    runs = [
        ("gptq int4@g16", ["--format", "int4@g16", "--method", "gptq"]),
        ("ed mxfp4 + int8 activations", ["--format", "mxfp4", "--method", "ed", "--act-format", "int8", "--act-unfit", "float"]),
        ("gpfq nvfp4 + bias correction", ["--format", "nvfp4", "--method", "gpfq", "--bias-correction"]),
    ]
    for what, args in runs:
        single = subprocess.run([qcast, "quantize", *base, *args, "--quiet", "-o", os.path.join(d, "s.pt"),
                                 "--export", os.path.join(d, "s.qpack"), "--report", os.path.join(d, "s.json")],
                                capture_output=True, text=True)
        check(single.returncode == 0, what + ": one process: " + single.stderr)
        ref_model = torch.jit.load(os.path.join(d, "s.pt"))
        ref = json.load(open(os.path.join(d, "s.json")))
        for n in (2, 3):
            for f in outputs_of(d, "d"):
                if os.path.exists(f):
                    os.remove(f)
            res = ranks(n, (base, args), d)
            ok = all(rc == 0 for rc, _, _ in res)
            check(ok, "%s, %d ranks: every rank succeeds: %s" % (what, n, [e.strip()[-300:] for _, _, e in res]))
            if not ok:
                continue
            check(all("rank %d of %d: done" % (r, n) in res[r][1] for r in range(1, n)), what + ": the other ranks write nothing")
            same = open(os.path.join(d, "s.qpack"), "rb").read() == open(os.path.join(d, "d.qpack"), "rb").read()
            check(same, "%s, %d ranks: the codes and scales equal one process's bit for bit" % (what, n))
            dm = torch.jit.load(os.path.join(d, "d.pt"))
            params = dict(dm.named_parameters())
            check(all(torch.equal(v, params[k]) for k, v in ref_model.named_parameters()),
                  "%s, %d ranks: every parameter of the saved model equals one process's (biases too)" % (what, n))
            rep = json.load(open(os.path.join(d, "d.json")))
            check(rep["world_size"] == n and rep["samples"] == 30 and rep["batches"] == 8,
                  "%s, %d ranks: the report counts every rank's samples (%s)" % (what, n, (rep["world_size"], rep["samples"])))
            # The report's errors come from the summed statistics, whose float64 sums associate
            # differently across ranks: equal to rounding (docs/ptq.md says so).
            errs = [(l["relative_error"], m["relative_error"]) for l, m in zip(rep["layers"], ref["layers"])]
            check(all(abs(a - b) <= 1e-9 * abs(b) for a, b in errs), "%s, %d ranks: the same relative errors to 1e-9: %s" % (what, n, errs))
            check(rep["collective_bytes"] > 0, what + ": the bytes all-reduced are reported")

    gptq = ["--format", "int4@g16", "--method", "gptq"]

    # A real model of ../shared (QCAST_SHARED overrides where that is): 1 and 2 ranks, bit for bit.
    shared = os.environ.get("QCAST_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared"))
    mobilenet = os.path.join(shared, "models", "mobilenet_v2_nsfwjs.pt")
    if os.path.exists(mobilenet):
        imgs = os.path.join(d, "imgs.pt")
        torch.manual_seed(2)
        torch.save(torch.rand(6, 3, 224, 224), imgs)
        real = [mobilenet, "--calib", imgs, "--batch-size", "2", "--format", "nvfp4", "--method", "gptq"]
        single = subprocess.run([qcast, "quantize", *real, "--quiet", "-o", os.path.join(d, "s.pt"), "--export",
                                 os.path.join(d, "s.qpack")], capture_output=True, text=True)
        check(single.returncode == 0, "mobilenet, one process: " + single.stderr[-300:])
        clean_real = [f for f in outputs_of(d, "d") if os.path.exists(f)]
        for f in clean_real:
            os.remove(f)
        res = ranks(2, (real[:1] + real[1:], []), d, timeout=600)
        check(all(rc == 0 for rc, _, _ in res), "mobilenet, 2 ranks: %s" % [e.strip()[-300:] for _, _, e in res])
        both = all(os.path.exists(os.path.join(d, f)) for f in ("s.qpack", "d.qpack"))
        check(both and open(os.path.join(d, "s.qpack"), "rb").read() == open(os.path.join(d, "d.qpack"), "rb").read(),
              "mobilenet_v2_nsfwjs, 2 ranks: the codes and scales equal one process's bit for bit")
    else:
        print("no %s (set QCAST_SHARED): the real-model comparison is skipped" % mobilenet)

    # Usage errors: torchrun's variables that do not parse, --rank without --dist-init.
    env = dict(os.environ, WORLD_SIZE="2", RANK="two")
    p = subprocess.run([qcast, "quantize", *base, *gptq, "--quiet", "-o", os.path.join(d, "d.pt")], capture_output=True,
                       text=True, env=env, timeout=60)
    check(p.returncode == 2 and "RANK" in p.stderr, "RANK=two: " + p.stderr.strip()[-200:])
    p = subprocess.run([qcast, "quantize", *base, *gptq, "--quiet", "--rank", "1", "-o", os.path.join(d, "d.pt")],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "--dist-init" in p.stderr, "--rank alone: " + p.stderr.strip()[-200:])

    # A rank whose store never comes up: a clear error within the timeout.
    p = subprocess.run([qcast, "quantize", *base, *gptq, "--quiet", "--dist-init", "tcp://127.0.0.1:%d" % free_port(),
                        "--rank", "1", "--world-size", "2", "--dist-timeout", "3", "-o", os.path.join(d, "d.pt")],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode != 0 and "could not reach the process group's store" in p.stderr, "no rank 0: " + p.stderr.strip()[-300:])

    def clean():
        for f in outputs_of(d, "d"):
            if os.path.exists(f):
                os.remove(f)

    # A rank with another model: every rank stops, naming it.
    other = os.path.join(d, "other.pt")
    torch.manual_seed(1)
    torch.jit.script(Net().eval()).save(other)
    clean()
    res = ranks(2, (base, gptq), d, models=[base, [other] + base[1:]])
    check(all(rc != 0 and "rank 1 loaded a model whose weights differ" in e for rc, _, e in res),
          "another model on rank 1: %s" % [e.strip()[-200:] for _, _, e in res])
    check(not any(os.path.exists(f) for f in outputs_of(d, "d")), "another model: nothing written")

    # World sizes that differ.
    clean()
    res = ranks(2, (base, gptq), d, extra={1: 3})
    check(all(rc != 0 for rc, _, _ in res) and any("world size" in e for _, _, e in res),
          "world sizes 2 and 3: %s" % [e.strip()[-200:] for _, _, e in res])

    # Fewer batches than ranks.
    clean()
    res = ranks(2, ([model, "--calib", calib, "--batch-size", "30"], gptq), d)
    check(all(rc != 0 and "a batch per rank" in e for rc, _, e in res), "1 batch, 2 ranks: %s" % [e[-200:] for _, _, e in res])

    # A port in use for the store.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run([qcast, "quantize", *base, *gptq, "--quiet", "--dist-init", "tcp://127.0.0.1:%d" % port, "--rank", "0",
                            "--world-size", "2", "--dist-timeout", "5", "-o", os.path.join(d, "d.pt")],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode != 0 and "port %d" % port in p.stderr, "a port in use: " + p.stderr.strip()[-300:])

    # A rank killed mid-run: the other stops with an error that says where, and writes nothing.
    big = os.path.join(d, "big.pt")
    torch.jit.script(Net(width=512).eval()).save(big)
    bigcal = os.path.join(d, "bigcal.pt")
    torch.save(torch.rand(400, 3, 6, 6), bigcal)
    clean()
    port = free_port()
    procs = []
    for r in range(2):
        cmd = [qcast, "quantize", big, "--calib", bigcal, "--batch-size", "8", "--format", "int4@g16", "--method", "ed",
               "--dist-init", "tcp://127.0.0.1:%d" % port, "--rank", str(r), "--world-size", "2", "--dist-timeout", "30",
               "-o", os.path.join(d, "d.pt")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # Wait until rank 1 is in the walk (its progress lines), then kill it.
    t0 = time.time()
    line = ""
    while time.time() - t0 < 60:
        line = procs[1].stderr.readline()
        if "forward" in line or "solve" in line:
            break
    procs[1].send_signal(signal.SIGKILL)
    rc0 = procs[0].wait(timeout=120)
    err0 = procs[0].stderr.read()
    check(procs[1].wait() == -signal.SIGKILL, "rank 1 was killed mid-run (it was at: %s)" % line.strip())
    check(rc0 != 0 and "process group failed at" in err0, "rank 0 stops when rank 1 dies: " + err0.strip()[-400:])
    check(not os.path.exists(os.path.join(d, "d.pt")), "a killed rank: nothing written")
    print("killed rank, rank 0 said:", err0.strip().splitlines()[-1][:400] if err0.strip() else "")

finish("distributed calibration: 2 and 3 ranks equal one process bit for bit; failures are clear")
