"""PTQ benchmark on real models: each model x format x method through `qcast quantize`, scored by
the model's task metric and its fidelity to the float model (benchmarks/ptq/tasks.py), with the
quantization time. Appends one JSON line per run to --results (so a partial run keeps what it did)
and prints the markdown table (also: `run.py --table RESULTS.jsonl`).

  python run.py --qcast build/qcast --shared ../shared --work DIR --results R.jsonl
                [--models a,b] [--formats mxfp4,nvfp4,int4@g128,mxfp6_e2m3] [--methods rtn,gptq,ed]
                [--batch-sizes 8,16,32] [--resume]
--resume keeps the rows already in --results and runs only the missing ones; without it the file is
started afresh. A method may carry method options after '+', e.g. `ed+scales=diffused` runs
`--method ed --scales diffused`; activation formats go the same way, `gptq+act-format=mxfp8_e4m3`
(W4A8; the saved model then needs the operator library, --ops-library, default libqcast_ops.so
beside --qcast). With several batch sizes the main table shows the first and a stability table
gives the metric at each and the spread. Rows with an activation format form their own table, with
the quantized model's forward time over the float model's (CPU, measured in the same run).
"""
import argparse, json, os, subprocess, sys, time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402


def compare(task, a, b):
    """+1 if row a is better than row b, -1 if worse, 0 if equal: by the task metric, and where the
    metric ties (e.g. top-1 agreement on 12 images) by the fidelity to the float model."""
    for key, higher in (("metric", task.higher_is_better), ("fidelity", task.fidelity_higher_is_better)):
        if a[key] != b[key]:
            return 1 if (a[key] > b[key]) == higher else -1
    return 0


def method_args(method):
    """'ed+scales=diffused+fold=full' -> ('ed', ['--scales', 'diffused', '--fold', 'full'])."""
    name, *opts = method.split("+")
    args = []
    for o in opts:
        k, _, v = o.partition("=")
        args += ["--" + k] + ([v] if v else [])
    return name, args


def batch_of(r):
    return r.get("batch_size", 8)


def stability(rows):
    """The metric at each batch size and its spread, per model x format x method."""
    out = []
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["format"], r["method"]), {})[batch_of(r)] = r
    sizes = sorted({batch_of(r) for r in rows})
    if len(sizes) < 2:
        return ""
    out.append("| model | format | method | " + " | ".join(f"batch {b}" for b in sizes) + " | spread |")
    out.append("|---|---|---|" + "---|" * len(sizes) + "---|")
    for (model, fmt, meth), rs in by.items():
        if len(rs) < 2:
            continue
        vals = [rs[b]["metric"] for b in sizes if b in rs]
        cells = [f"{rs[b]['metric']:.4g}" if b in rs else "" for b in sizes]
        spread = f"{max(vals) - min(vals):.3g}" if len(vals) > 1 else ""
        out.append(f"| {model} | {fmt} | {meth} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(out)


def variants(rows):
    """Rows run with method options (e.g. ed+scales=diffused) beside the same method at its defaults."""
    first = min((batch_of(r) for r in rows), default=8)
    plain = {(r["model"], r["format"], r["method"]): r for r in rows if batch_of(r) == first}
    out = ["| model | format | method | options | metric | at defaults | fidelity | at defaults |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "+" not in r["method"] or batch_of(r) != first or act_of(r["method"]):
            continue
        name, _, opts = r["method"].partition("+")
        base = plain.get((r["model"], r["format"], name))
        cell = lambda k: f"{base[k]:.4g}" if base else ""
        out.append(f"| {r['model']} | {r['format']} | {name} | {opts.replace('+', ' ')} | {r['metric']:.4g} | {cell('metric')} | "
                   f"{r['fidelity']:.4g} | {cell('fidelity')} |")
    return "\n".join(out) if len(out) > 2 else ""


def act_of(method):
    """The activation format a method string carries ('gptq+act-format=nvfp4' -> 'nvfp4'), or ''."""
    for o in method.split("+")[1:]:
        k, _, v = o.partition("=")
        if k == "act-format":
            return v
    return ""


def act_table(rows):
    """WxAy rows: weights x activations x method, with the forward time against the float model's."""
    rows = [r for r in rows if act_of(r["method"])]
    if not rows:
        return ""
    out = ["| model | weights | activations | method | metric | fidelity | forward / float |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name, _, opts = r["method"].partition("+")
        rest = "+".join(o for o in opts.split("+") if not o.startswith("act-format="))
        ratio = f"{r['forward_s'] / r['float_forward_s']:.2f}" if r.get("float_forward_s") else ""
        out.append(f"| {r['model']} | {r['format']} | {act_of(r['method'])}{' ' + rest if rest else ''} | {name} | "
                   f"{r['metric']:.4g} | {r['fidelity']:.4g} | {ratio} |")
    return "\n".join(out)


def table(rows):
    first = min((batch_of(r) for r in rows), default=8)
    rows = [r for r in rows if batch_of(r) == first]
    out = []
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    for model, rs in by_model.items():
        t = tasks.TASKS[model]
        f = rs[0]
        out.append(f"\n### {model}\n")
        out.append(f"float: {t.metric} = {f['float_metric']:.4g}; {rs[0]['fidelity_name']} of each quantized model vs float; "
                   f"calibration: {f['calib_samples']} samples. "
                   f"ED vs RTN / GPTQ: whether ED is better by the task metric, or by fidelity where the metric ties.\n")
        out.append(f"| format | method | {t.metric} | {rs[0]['fidelity_name']} | quantize s | peak MiB | ED beats RTN | ED ≥ GPTQ | ED time / GPTQ |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        fmts = []
        for r in rs:
            if r["format"] not in fmts:
                fmts.append(r["format"])
        for fmt in fmts:
            m = {r["method"]: r for r in rs if r["format"] == fmt}
            for meth in ["rtn", "gptq", "ed"] + sorted(k for k in m if k not in ("rtn", "gptq", "ed") and "+" not in k):
                if meth not in m:
                    continue
                r = m[meth]
                extra = ["", "", ""]
                if meth == "ed" and "rtn" in m and "gptq" in m:
                    extra = ["yes" if compare(t, r, m["rtn"]) > 0 else "**no**",
                             "yes" if compare(t, r, m["gptq"]) >= 0 else "**no**",
                             f"{r['seconds'] / m['gptq']['seconds']:.2f}"]
                peak = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else ""
                out.append(f"| {fmt} | {meth} | {r['metric']:.4g} | {r['fidelity']:.4g} | {r['seconds']:.1f} | {peak} | " + " | ".join(extra) + " |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qcast")
    p.add_argument("--shared")
    p.add_argument("--work")
    p.add_argument("--results")
    p.add_argument("--models", default="mobilenet_v2_nsfwjs,esrgan_medium_x2,ppocr_v4_rec,minilm_l6,austen_lm")
    p.add_argument("--formats", default="mxfp4,nvfp4,int4@g128,mxfp6_e2m3")
    p.add_argument("--methods", default="rtn,gptq,ed")
    p.add_argument("--batch-sizes", default="8")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--table")
    p.add_argument("--ops-library")
    a = p.parse_args()
    if a.table:
        rows = [json.loads(l) for l in open(a.table) if l.strip()]
        print(table([r for r in rows if not act_of(r["method"])]))
        print(stability(rows))
        print(variants(rows))
        print(act_table(rows))
        return
    ops = a.ops_library or os.path.join(os.path.dirname(os.path.realpath(a.qcast)), "libqcast_ops.so")
    if os.path.exists(ops):
        torch.ops.load_library(ops)
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(a.work, exist_ok=True)
    models_dir, data_dir = os.path.join(a.shared, "models"), os.path.join(a.shared, "data")
    rows = []
    if a.resume and os.path.exists(a.results):
        rows = [json.loads(l) for l in open(a.results) if l.strip()]
    else:
        open(a.results, "w").close()
    done = {(r["model"], r["format"], r["method"], batch_of(r)) for r in rows}
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    for name in a.models.split(","):
        if all((name, f, m, b) in done for f in a.formats.split(",") for m in a.methods.split(",") for b in sizes):
            continue
        t = tasks.TASKS[name](data_dir)
        model_path = t.prepare(models_dir, a.work)
        calib = t.calibration()
        samples = len(calib[0]) if isinstance(calib, (tuple, list)) else len(calib)
        calib_path = os.path.join(a.work, name + "_calib.pt")
        torch.save(calib, calib_path)
        # Forward times are of the scoring pass itself, the float model's and each quantized one's
        # alike (TorchScript's profiling runs included in both).
        start = time.time()
        float_outs = t.outputs(torch.jit.load(model_path).eval())
        float_forward_s = time.time() - start
        float_metric = t.score(float_outs, float_outs)["metric"]
        for fmt, meth, batch in ((f, m, b) for f in a.formats.split(",") for m in a.methods.split(",") for b in sizes):
            if (name, fmt, meth, batch) in done:
                continue
            tag = meth.replace("+", "_").replace("=", "-")
            out = os.path.join(a.work, f"{name}_{fmt.replace('@', '_')}_{tag}" + (f"_b{batch}" if batch != 8 else "") + ".pt")
            method, extra = method_args(meth)
            cmd = [a.qcast, "quantize", model_path, "--format", fmt, "--method", method, *extra, "--calib", calib_path,
                   "--batch-size", str(batch), "-o", out, "--report", out + ".json", "--quiet"]
            start = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            seconds = time.time() - start
            start = time.time()
            outs = t.outputs(torch.jit.load(out).eval())
            forward_s = time.time() - start
            s = t.score(outs, float_outs)
            report = json.load(open(out + ".json"))
            row = {"model": name, "format": fmt, "method": meth, "batch_size": batch, "seconds": seconds,
                   "float_metric": float_metric,
                   "calib_samples": samples, "command": " ".join(cmd),
                   "forward_s": forward_s, "float_forward_s": float_forward_s,
                   "peak_rss_mb": report.get("peak_rss_bytes", 0) / 2**20, **s}
            rows.append(row)
            with open(a.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} {fmt} {meth} batch {batch}: {t.metric} {s['metric']:.4g}, {s['fidelity_name']} {s['fidelity']:.4g}, "
                  f"{seconds:.1f} s", flush=True)
    order = {n: i for i, n in enumerate(a.models.split(","))}
    rows = sorted(rows, key=lambda r: order.get(r["model"], len(order)))
    print(table([r for r in rows if not act_of(r["method"])]))
    print(stability(rows))
    print(act_table(rows))


if __name__ == "__main__":
    main()
