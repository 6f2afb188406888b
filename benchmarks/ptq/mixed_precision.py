"""Mixed precision against uniform formats on the real models of the PTQ benchmark: for each model,
`qcast quantize --candidates C --budget B` at the first budget (its sensitivity pass measured once),
the other budgets re-allocated from that report by `qcast allocate` and quantized with the
assignment, and each uniform format with the same method; every model scored by its task metric
and its fidelity to the float model (tasks.py). Appends a JSON line per run to --results, prints the
markdown table, and with --plots DIR draws a size-vs-metric chart per model (PNG, matplotlib).

  python mixed_precision.py --qcast build/qcast --shared ../shared --work DIR --results R.jsonl
                            [--models a,b] [--method gptq] [--budgets 4.25,4.5,5]
                            [--candidates int4@g128,mxfp4,nvfp4,mxfp6_e2m3,mxfp8_e4m3]
                            [--uniform int4@g128,mxfp4,nvfp4,mxfp6_e2m3] [--resume]
  python mixed_precision.py --table R.jsonl [--plots DIR]

Bits per weight are over the layers the allocation decides (every quantizable weight), codes +
scales as stored, for the uniform runs too.
"""
import argparse, json, math, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def bits_over(report, names=None):
    """Bits per weight of the named layers in a run's report (None: those with a sensitivity table)."""
    if names is None:
        names = {l["name"] for l in report["layers"] if "candidates" in l}
    bytes_, weights = 0, 0
    for l in report["layers"]:
        if l["name"] in names:
            n = 1
            for d in l["shape"]:
                n *= d
            weights += n
            bytes_ += l["quantized_bytes"]
    return 8.0 * bytes_ / weights


def table(rows):
    out = []
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    for model, rs in by_model.items():
        infeasible = [r for r in rs if r["kind"] == "infeasible"]
        rs = [r for r in rs if r["kind"] != "infeasible"]
        f = next(r for r in rs if r["kind"] == "mixed")
        passes = {r.get("sensitivity", "output"): r["sensitivity_seconds"] for r in rs if r.get("sensitivity_seconds")}
        higher = f["higher_is_better"]
        out.append(f"\n### {model}: mixed against uniform\n")
        out.append(f"float: {f['metric_name']} = {f['float_metric']:.4g}; method {f['method']}; {f['fidelity_name']} vs float. "
                   "Sensitivity pass (once for all budgets): " + ", ".join(f"{k} {v:.0f} s" for k, v in passes.items()) + ".\n")
        out.append(f"| weights | bits per weight | {f['metric_name']} | {f['fidelity_name']} | quantize s | "
                   "by the metric, vs the best uniform run of ≤ its size | by fidelity |")
        out.append("|---|---|---|---|---|---|---|")
        uniform = [r for r in rs if r["kind"] == "uniform"]
        fidelity_up = next((r["fidelity_higher_is_better"] for r in rs if "fidelity_higher_is_better" in r), None)
        if fidelity_up is None:  # rows written before the field: the task says
            import tasks
            fidelity_up = tasks.TASKS[model].fidelity_higher_is_better

        def verdict(r, key, up):
            # Uniform runs at most 1 % larger (a format's partial blocks make its size differ by a
            # hair from its nominal bits): mixed must beat the best of them.
            peers = [u for u in uniform if u["bits_per_weight"] <= r["bits_per_weight"] * 1.01]
            if not peers:
                return ""
            best = max(peers, key=lambda u: u[key] if up else -u[key])
            if r[key] == best[key]:
                return f"tie with {best['format']}"
            better = r[key] > best[key] if up else r[key] < best[key]
            return ("better" if better else "**worse**") + f" than {best['format']} ({best[key]:.4g})"

        for r in sorted(rs, key=lambda r: r["bits_per_weight"]):
            by_metric = verdict(r, "metric", higher) if r["kind"] == "mixed" else ""
            by_fidelity = verdict(r, "fidelity", fidelity_up) if r["kind"] == "mixed" else ""
            name = r["format"] if r["kind"] == "uniform" else \
                f"mixed{'' if r.get('sensitivity', 'output') == 'output' else ' (' + r['sensitivity'] + ')'} @ {r['budget']}"
            out.append(f"| {name} | {r['bits_per_weight']:.3f} | {r['metric']:.4g} | {r['fidelity']:.4g} | {r['seconds']:.1f} | "
                       f"{by_metric} | {by_fidelity} |")
        for message in dict.fromkeys(f"Budget {r['budget']}: {r['message'].replace('qcast allocate: error: ', '')}" for r in infeasible):
            out.append("\n" + message)  # once: every sensitivity's table has the same sizes
    return "\n".join(out)


def plots(rows, folder):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    by_model = {}
    for r in rows:
        if r["kind"] != "infeasible":
            by_model.setdefault(r["model"], []).append(r)
    for model, rs in by_model.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        uni = sorted((r for r in rs if r["kind"] == "uniform"), key=lambda r: r["bits_per_weight"])
        mixes = {}
        for r in rs:
            if r["kind"] == "mixed":
                mixes.setdefault(r.get("sensitivity", "output"), []).append(r)
        ax.scatter([r["bits_per_weight"] for r in uni], [r["metric"] for r in uni], color="#0072B2", marker="s", label="uniform format", zorder=3)
        for k, r in enumerate(uni):  # alternate above and below: formats of one size share a point
            ax.annotate(r["format"], (r["bits_per_weight"], r["metric"]), textcoords="offset points",
                        xytext=(5, 4 if k % 2 == 0 else -11), fontsize=8)
        for (sens, mix), colour in zip(sorted(mixes.items(), key=lambda kv: kv[0] != "output"), ["#D55E00", "#009E73", "#CC79A7"]):
            mix.sort(key=lambda r: r["bits_per_weight"])
            ax.plot([r["bits_per_weight"] for r in mix], [r["metric"] for r in mix], color=colour, marker="o",
                    label=f"mixed, {sens} sensitivity ({rs[0]['method']}; budgets {', '.join(str(r['budget']) for r in mix)})", zorder=4)
        ax.axhline(rs[0]["float_metric"], color="#777777", linestyle="--", linewidth=1, label="float")
        ax.set_xlabel("bits per weight (codes + scales)")
        ax.set_ylabel(rs[0]["metric_name"] + (" (higher is better)" if rs[0]["higher_is_better"] else " (lower is better)"))
        ax.set_title(f"{model}: size vs task metric")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, f"pareto_{model}.png"))
        plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qcast")
    p.add_argument("--shared")
    p.add_argument("--work")
    p.add_argument("--results")
    p.add_argument("--models", default="minilm_l6,austen_lm,mobilenet_v2_nsfwjs,esrgan_medium_x2,ppocr_v4_rec")
    p.add_argument("--method", default="gptq")
    p.add_argument("--budgets", default="4.25,4.5,5")
    p.add_argument("--candidates", default="int4@g128,mxfp4,nvfp4,mxfp6_e2m3,mxfp8_e4m3")
    p.add_argument("--uniform", default="int4@g128,mxfp4,nvfp4,mxfp6_e2m3")
    p.add_argument("--sensitivity", default="output", choices=["output", "gain", "gain-mse", "e2e", "e2e-mse"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--table")
    p.add_argument("--plots")
    a = p.parse_args()
    if a.table:
        rows = [json.loads(l) for l in open(a.table) if l.strip()]
        print(table(rows))
        if a.plots:
            plots(rows, a.plots)
        return
    import torch
    import tasks
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(a.work, exist_ok=True)
    models_dir, data_dir = os.path.join(a.shared, "models"), os.path.join(a.shared, "data")
    rows = [json.loads(l) for l in open(a.results) if l.strip()] if a.resume and os.path.exists(a.results) else []
    if not a.resume:
        open(a.results, "w").close()
    kind_of = lambda r: r["kind"] if r["kind"] == "uniform" else "mixed" + ("" if r.get("sensitivity", "output") == "output" else " " + r["sensitivity"])
    done = {(r["model"], kind_of(r), r.get("format"), r.get("budget")) for r in rows if r["kind"] != "infeasible"} | \
        {(r["model"], kind_of(r), None, r["budget"]) for r in rows if r["kind"] == "infeasible"}
    mixed = "mixed" if a.sensitivity == "output" else "mixed " + a.sensitivity
    tag = "mixed" if a.sensitivity == "output" else "mixed_" + a.sensitivity.replace("-", "_")
    budgets = a.budgets.split(",")
    for name in a.models.split(","):
        pending_equal = any(r["model"] == name and r["kind"] == "infeasible" and r.get("sensitivity", "output") == a.sensitivity and
                            not any(m["model"] == name and (m.get("budget") or "").startswith("=") and kind_of(m) == mixed for m in rows)
                            for r in rows)
        if all((name, mixed, None, b) in done for b in budgets) and all((name, "uniform", f, None) in done for f in a.uniform.split(",")) \
                and not pending_equal:
            continue
        t = tasks.TASKS[name](data_dir)
        model_path = t.prepare(models_dir, a.work)
        calib = t.calibration()
        calib_path = os.path.join(a.work, name + "_calib.pt")
        torch.save(calib, calib_path)
        float_outs = t.outputs(torch.jit.load(model_path).eval())
        float_metric = t.score(float_outs, float_outs)["metric"]
        common = ["--method", a.method, "--calib", calib_path, "--batch-size", str(a.batch_size), "--quiet"]

        def run(kind, label, cmd, out, extra, names):
            start = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            seconds = time.time() - start + extra.pop("extra_seconds", 0)
            report = json.load(open(out + ".json"))
            s = t.score(t.outputs(torch.jit.load(out).eval()), float_outs)
            row = {"model": name, "kind": kind, "method": a.method, "seconds": seconds, "float_metric": float_metric,
                   "metric_name": t.metric, "higher_is_better": t.higher_is_better,
                   "fidelity_higher_is_better": t.fidelity_higher_is_better,
                   "bits_per_weight": bits_over(report, names), "command": " ".join(cmd), **extra, **s}
            rows.append(row)
            with open(a.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} {label}: {row['bits_per_weight']:.3f} bits per weight, {t.metric} {s['metric']:.4g}, "
                  f"{s['fidelity_name']} {s['fidelity']:.4g}, {seconds:.1f} s", flush=True)
            return report

        # Mixed: the largest budget measures (the one most likely to fit); the report's table
        # re-allocates the others. A budget below every layer's smallest candidate is recorded as such.
        top = max(budgets, key=float)
        first = os.path.join(a.work, f"{name}_{tag}_{top}.pt")
        if (name, mixed, None, top) not in done or not os.path.exists(first + ".json"):
            cmd = [a.qcast, "quantize", model_path, "--candidates", a.candidates, "--budget", top, "--sensitivity", a.sensitivity,
                   *common, "-o", first, "--report", first + ".json"]
            rows[:] = [r for r in rows if not (r["model"] == name and kind_of(r) == mixed and r["budget"] == top)]
            run("mixed", f"{mixed} @ {top}", cmd, first, {"budget": top, "candidates": a.candidates, "format": None,
                                                        "sensitivity": a.sensitivity}, None)
        report = json.load(open(first + ".json"))
        names = {l["name"] for l in report["layers"] if "candidates" in l}
        sensitivity_seconds = report["allocation"]["seconds"]
        for r in rows:
            if r["model"] == name and kind_of(r) == mixed and r["budget"] == top:
                r["sensitivity_seconds"] = sensitivity_seconds
        with open(a.results, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        def replay(alloc, label, file, start):
            """Quantizes with the assignment `qcast allocate --json` printed, as one mixed row."""
            out = os.path.join(a.work, file)
            opts = [w for o in alloc["quantize_options"] for w in o.split(" ", 1)]
            cmd = [a.qcast, "quantize", model_path, "--format", a.candidates.split(",")[0], *opts, *common, "-o", out,
                   "--report", out + ".json"]
            run("mixed", f"{mixed} @ {label}", cmd, out, {"budget": label, "candidates": a.candidates, "format": None,
                                                          "sensitivity": a.sensitivity, "sensitivity_seconds": sensitivity_seconds,
                                                          "extra_seconds": time.time() - start}, names)

        for b in budgets:
            if b == top or (name, mixed, None, b) in done:
                continue
            start = time.time()
            p = subprocess.run([a.qcast, "allocate", first + ".json", "--budget", b, "--json"], capture_output=True, text=True)
            if p.returncode != 0:
                row = {"model": name, "kind": "infeasible", "budget": b, "format": None, "method": a.method, "message": p.stderr.strip(),
                       "sensitivity": a.sensitivity}
                rows.append(row)
                with open(a.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} {mixed} @ {b}: {p.stderr.strip()}", flush=True)
                continue
            replay(json.loads(p.stdout), b, f"{name}_{tag}_{b}.pt", start)
        for fmt in a.uniform.split(","):
            if (name, "uniform", fmt, None) in done:
                continue
            out = os.path.join(a.work, f"{name}_{fmt.replace('@', '_')}_{a.method}_uniform.pt")
            cmd = [a.qcast, "quantize", model_path, "--format", fmt, *common, "-o", out, "--report", out + ".json"]
            run("uniform", fmt, cmd, out, {"format": fmt, "budget": None}, names)
        # A budget below the least assignment (small layers whose partial blocks cost extra scales):
        # mixed at the size of the smallest uniform run instead, byte for byte.
        for r in [r for r in rows if r["model"] == name and r["kind"] == "infeasible" and r.get("sensitivity", "output") == a.sensitivity]:
            smallest = min((u for u in rows if u["model"] == name and u["kind"] == "uniform"), key=lambda u: u["bits_per_weight"])
            label = "=" + smallest["format"]
            if (name, mixed, None, label) in done:
                continue
            weights = sum(math.prod(l["shape"]) for l in report["layers"] if l["name"] in names)
            budget_bytes = round(smallest["bits_per_weight"] * weights / 8)
            start = time.time()
            alloc = json.loads(subprocess.run([a.qcast, "allocate", first + ".json", "--budget-bytes", str(budget_bytes), "--json"],
                                              check=True, capture_output=True, text=True).stdout)
            replay(alloc, label, f"{name}_{tag}_as_{smallest['format'].replace('@', '_')}.pt", start)
    print(table(rows))
    if a.plots:
        plots(rows, a.plots)


if __name__ == "__main__":
    main()
