"""Malformed and hostile inputs through every qcast subcommand (issue 24's findings, kept as
regressions): each must end with exit code 1 or 2 and a clear, bounded message, never a signal,
a hang or an exit 0 with a wrong output; no temporary file may be left behind, and no output may
appear unless the command succeeded.

usage: hostile_inputs.py QCAST
"""
import glob, os, resource, signal, struct, subprocess, sys, tempfile, time

import numpy as np
import torch

from checks import check, finish

qcast = sys.argv[1]


def run(*args, timeout=120, **kw):
    t0 = time.time()
    r = subprocess.run([qcast, *args], capture_output=True, text=True, errors="replace", timeout=timeout, **kw)
    r.seconds = time.time() - t0
    return r


def peak_rss_kib(*args):
    """The peak resident memory of one qcast run, in KiB (wait4's rusage of that child alone)."""
    proc = subprocess.Popen([qcast, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss


def refused(r, what, code=None, says=()):
    """A clean refusal: exit 1 or 2 (or `code`), no signal, a bounded message naming the problem."""
    ok = (r.returncode == code) if code is not None else r.returncode in (1, 2)
    check(ok, "%s: exit %d (want %s)\n%s" % (what, r.returncode, code or "1 or 2", r.stderr[-2000:]))
    check(len(r.stderr) < 4096, "%s: %d bytes on stderr" % (what, len(r.stderr)))
    check("Exception raised from" not in r.stderr and "frame #" not in r.stderr, "%s: a backtrace on stderr" % what)
    for s in says:
        check(s in r.stderr, "%s: stderr lacks %r:\n%s" % (what, s, r.stderr[-2000:]))


def npy_raw(header, payload=b""):
    h = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + payload


def no_temporaries(folder, what):
    left = glob.glob(os.path.join(folder, "**", "*.tmp*"), recursive=True)
    check(not left, "%s: temporary files left: %s" % (what, left))


with tempfile.TemporaryDirectory() as d:
    p = lambda name: os.path.join(d, name)
    ones = np.ones(256, np.float32).tobytes()
    bad_npy = {
        "overflow.npy": (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", b"\0" * 64), "more than 2^56"),
        "spaces.npy": (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4 64), }", ones), "malformed"),
        "junk.npy": (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 64abc), }", ones), "malformed"),
        "after.npy": (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 64), } x", ones), "after the header"),
        "trailing.npy": (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", ones), "follow the data"),
        "claims.npy": (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }", b"\0" * 1100), "truncated data"),
    }
    for name, (data, says) in bad_npy.items():
        with open(p(name), "wb") as f:
            f.write(data)
    np.save(p("ok.npy"), np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32))

    # 1. .npy shapes and headers: every format kind refuses them, before any allocation.
    baseline = peak_rss_kib("formats")  # what loading the program takes
    for name, (_, says) in bad_npy.items():
        for fmt in ("mxfp4", "int8@channel", "fp8_e4m3", "int8", "nvfp4"):
            r = run("cast", "--format", fmt, p(name), p("out.npy"))
            refused(r, "cast %s %s" % (fmt, name), code=1, says=(name, says))
            check(not os.path.exists(p("out.npy")), "cast %s %s wrote an output" % (fmt, name))
        peak = peak_rss_kib("cast", "--format", "mxfp4", p(name), p("out.npy"))
        check(peak < baseline + 64 * 1024, "cast %s: peak RSS %d KiB against %d KiB to start" % (name, peak, baseline))

    # 2. Numeric options: whole values in range, or a refusal quoting (a cut of) the value.
    refused(run("cast", "--format", "mxfp4", "--axis", "4294967297", p("ok.npy"), p("out.npy")), "--axis 2^32+1",
            code=2, says=("--axis",))
    refused(run("cast", "--format", "mxfp4", "--axis", " 1", p("ok.npy"), p("out.npy")), "--axis ' 1'", code=2)
    refused(run("cast", "--format", "nvfp4", "--tensor-amax", "1e99", p("ok.npy"), p("out.npy")), "--tensor-amax 1e99", code=2)
    refused(run("cast", "--format", "int8", "--round", "stochastic", "--seed", "-1", p("ok.npy"), p("out.npy")), "--seed -1", code=2)
    r = run("bench", "--shape", "4294967296,4294967296", "--formats", "mxfp4", "--repeats", "1")
    refused(r, "bench --shape overflow", code=2, says=("more than 2^56",))
    r = run("bench", "--threads", "100000", "--elements", "4096", "--repeats", "1", timeout=20)
    refused(r, "bench --threads 100000", code=2, says=("1024",))
    refused(run("bench", "--elements", "0"), "bench --elements 0", code=2)
    refused(run("bench", "--repeats", "1x"), "bench --repeats 1x", code=2)
    check(not os.path.exists(p("out.npy")), "a refused cast wrote an output")

    # 3. Format names: named formats take the generic keys; long names are cut in messages.
    r = run("cast", "--format", "mxfp4:axis=0", p("ok.npy"), p("axis0.npy"))
    check(r.returncode == 0, "mxfp4:axis=0 refused: " + r.stderr)
    r = run("cast", "--format", "x" * 100000, p("ok.npy"), p("out.npy"))
    refused(r, "a 100,000-character format name", code=2, says=("100000 characters",))
    r = run("cast", "--format", "mxfp4:axis=q", p("ok.npy"), p("out.npy"))
    refused(r, "mxfp4:axis=q", code=2, says=("axis must be an integer",))

    # 4. NVFP4 of a vanishing tensor: finite output (the s_t floor of docs/formats.md).
    np.save(p("tiny.npy"), np.full((4, 64), 4.2e-45, np.float32))
    r = run("cast", "--format", "nvfp4", p("tiny.npy"), p("tiny_out.npy"))
    check(r.returncode == 0, "nvfp4 of a tiny tensor: " + r.stderr)
    if r.returncode == 0:
        check(np.isfinite(np.load(p("tiny_out.npy"))).all(), "nvfp4 turned a finite tiny tensor into NaN")

    # 5. The model and the calibration data.
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))),
                   p("m.pt"))
    torch.save(torch.nn.Linear(8, 4).state_dict(), p("state_dict.pt"))
    torch.save(torch.randn(32, 8), p("calib.pt"))
    nan_calib = torch.randn(32, 8)
    nan_calib[5, 3] = float("nan")
    torch.save(nan_calib, p("nan_calib.pt"))
    os.makedirs(p("calib_dir"))
    np.save(p("calib_dir/a.npy"), np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32))
    os.makedirs(p("bad_calib_dir"))
    with open(p("bad_calib_dir/a.npy"), "wb") as f:
        f.write(bad_npy["overflow.npy"][0])
    os.makedirs(p("inf_calib_dir"))
    inf = np.ones((16, 8), np.float32)
    inf[9, 0] = np.inf
    np.save(p("inf_calib_dir/a.npy"), inf)
    torch.save(torch.randn(16, 5), p("wrong_width.pt"))
    os.makedirs(p("mixed_dir"))
    np.save(p("mixed_dir/a.npy"), np.ones((4, 8), np.float32))
    np.save(p("mixed_dir/b.npy"), np.ones((4, 9), np.float32))
    q = lambda *a, **kw: run("quantize", p("m.pt"), "--format", "int4@g8", "--quiet", *a, **kw)

    refused(run("quantize", p("state_dict.pt"), "--format", "int8", "--method", "rtn", "-o", p("o.pt")),
            "a state_dict as the model", says=("torch.save", "torch.jit.save"))
    refused(run("quantize", d, "--format", "int8", "--method", "rtn", "-o", p("o.pt")), "a folder as the model",
            says=("is a folder",))
    # A model whose debug information is damaged: LibTorch (and PyTorch's torch.jit.load) end the
    # process inside a noexcept what(); qcast loads without the debug files.
    here = os.path.dirname(os.path.abspath(__file__))
    refused(run("quantize", os.path.join(here, "inputs", "damaged_debug_info.pt"), "--format", "int8", "--method", "rtn",
                "-o", p("o.pt")), "a model with damaged debug information", says=("not a loadable TorchScript model",))
    # Mutated and truncated copies of a model: a clear refusal or a model that loads, never a crash.
    rng = np.random.default_rng(11)
    with open(p("m.pt"), "rb") as f:
        model_bytes = f.read()
    exits = []
    for k in range(24):
        b = bytearray(model_bytes)
        for i in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
            b[i] = int(rng.integers(0, 256))
        if k % 4 == 3:
            b = b[:int(rng.integers(1, len(b)))]
        with open(p("mutated.pt"), "wb") as f:
            f.write(b)
        r = run("quantize", p("mutated.pt"), "--format", "int8", "--method", "rtn", "-o", p("mutated_out.pt"), "--quiet")
        exits.append(r.returncode)
        check(r.returncode in (0, 1, 2), "mutated model %d: exit %d: %s" % (k, r.returncode, r.stderr[-300:]))
        if r.returncode == 0:
            torch.jit.load(p("mutated_out.pt"))  # an output that exists loads
            os.remove(p("mutated_out.pt"))
    print("24 mutated models: exit codes %s" % sorted(set(exits)))
    refused(q("--calib", p("nan_calib.pt"), "-o", p("o.pt")), "NaN calibration data", says=("nan_calib.pt", "sample 5", "NaN"))
    refused(q("--calib", p("inf_calib_dir"), "-o", p("o.pt")), "Inf in a calibration folder", says=("a.npy", "sample 9"))
    refused(q("--calib", p("bad_calib_dir"), "-o", p("o.pt")), "an overflowing .npy in the calibration folder",
            says=("a.npy", "more than 2^56"))
    # A 2 KB torch.save file whose pickle claims a 4 GiB string: refused without allocating it.
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "crashes", "calibration",
                           "pickle_length_4gib"), "rb") as f:
        damaged = f.read()[2:]  # the fuzz input's first two bytes choose the mode and the batch size
    with open(p("damaged.pt"), "wb") as f:
        f.write(damaged)
    refused(q("--calib", p("damaged.pt"), "-o", p("o.pt")), "a pickle that claims 4 GiB", says=("damaged pickle data",))
    peak = peak_rss_kib("quantize", p("m.pt"), "--format", "int4@g8", "--calib", p("damaged.pt"), "-o", p("o.pt"))
    check(peak < baseline + 256 * 1024, "a pickle that claims 4 GiB: peak RSS %d KiB against %d KiB to start" % (peak, baseline))
    refused(q("--calib", p("wrong_width.pt"), "-o", p("o.pt")), "calibration data of the wrong width",
            says=("does not fit the model's forward", "cannot be multiplied"))
    refused(q("--calib", p("mixed_dir"), "-o", p("o.pt")), "a calibration folder whose second file has another width",
            says=("calibration batch 2", "Float[4, 9]", "mixed_dir"))
    check(not os.path.exists(p("o.pt")), "a refused quantize wrote its output")

    # 6. Outputs: collisions and missing folders are refused before any work, and nothing is written.
    for extra, says in ((["--export", p("o.pt")], ".safetensors or .qpack"), (["--report", p("o.pt")], "is also -o"),
                        (["--export", p("e.safetensors"), "--report", p("e.quantization_config.json")],
                         "is also --export (its quantization config)"),
                        (["--export", p("nodir/o.qpack")], "does not exist"), (["--report", p("nodir/r.json")], "does not exist"),
                        (["--report", d], "is a folder")):
        r = q("--calib", p("calib.pt"), "-o", p("o.pt"), *extra)
        refused(r, "outputs %s" % extra, code=2, says=(says,))
        check(not os.path.exists(p("o.pt")), "outputs %s: OUT.pt was written" % extra)
    refused(q("--calib", p("calib.pt"), "-o", p("calib.pt")), "-o over the calibration file", code=2, says=("is an input",))
    refused(q("--calib", p("calib.pt"), "-o", p("m.pt")), "-o over the model", code=2, says=("is an input",))
    os.link(p("m.pt"), p("m_link.pt"))
    refused(q("--calib", p("calib.pt"), "-o", p("m_link.pt")), "-o over a hard link of the model", code=2)
    no_temporaries(d, "refused outputs")

    # 7. A write that fails (a file-size limit stands in for a full disk): a clear error, no output,
    #    no temporary file; the outputs of a run are all or nothing.
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    r = q("--calib", p("calib.pt"), "-o", p("full.pt"), "--report", p("full.json"), preexec_fn=limit_file_size)
    refused(r, "quantize onto a full disk", code=1, says=("write failed",))
    check(not os.path.exists(p("full.pt")) and not os.path.exists(p("full.json")), "a failed write left an output")
    no_temporaries(d, "a failed write")

    # 8. SIGINT at any moment of a run: either exit 130 with nothing written, or exit 0 with every
    #    output complete; never a temporary file.
    #    A deeper model and more data, so that most of the run's time is the quantization itself.
    torch.jit.save(torch.jit.script(torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(12)])), p("deep.pt"))
    torch.save(torch.randn(2048, 64), p("deep_calib.pt"))
    deep = ["quantize", p("deep.pt"), "--format", "int4@g8", "--quiet", "--calib", p("deep_calib.pt")]
    r = run(*deep, "-o", p("whole.pt"))
    check(r.returncode == 0, "a plain quantize failed: " + r.stderr)
    span = max(0.5, r.seconds)
    outcomes = []
    for k in range(8):
        outs = [p("s%d.pt" % k), p("s%d.qpack" % k), p("s%d.json" % k)]
        proc = subprocess.Popen([qcast, *deep, "-o", outs[0], "--export", outs[1], "--report", outs[2]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(span * (0.1 + 0.13 * k))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        present = [os.path.exists(o) for o in outs]
        outcomes.append(proc.returncode)
        if proc.returncode == 130:
            check(not any(present), "SIGINT %d: exit 130 but outputs %s exist" % (k, present))
        else:
            check(proc.returncode in (0, -signal.SIGINT) and (all(present) or not any(present)),
                  "SIGINT %d: exit %d with outputs %s: %s" % (k, proc.returncode, present, err[-500:]))
            if proc.returncode == 0:
                check(os.path.getsize(outs[0]) == os.path.getsize(p("whole.pt")), "SIGINT %d: a short model" % k)
    print("SIGINT at 8 moments of a %.1fs run: exit codes %s" % (span, outcomes))
    no_temporaries(d, "SIGINT runs")

finish("all hostile-input checks passed")
