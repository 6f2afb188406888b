"""Which candidate the `gain` sensitivity should probe: from the report of a run with every
candidate probed (`qcast quantize --candidates ... --sensitivity e2e --report R.json`), each rule's
cost table is rebuilt as `gain` would build it (one candidate's probe per layer, cost = probe /
e_probed² · e² for the others), allocated at each budget by `qcast allocate`, quantized with that
assignment, and scored with the task's metric (tasks.py). Rows `e2e` (every candidate probed) and
`output` (e² alone) bound the rules from both sides.

  python gain_probe.py --qcast build/qcast --shared ../shared --work DIR --report R.json
                       --model minilm_l6 [--budgets 4.5,5] [--method gptq]
                       [--rules e2e,output,loudest,median,quietest,format:nvfp4]

Rules: loudest / median (the lower one) / quietest by output error, or format:F.
"""
import argparse, copy, json, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def probed_candidate(quantized, rule):
    by_error = sorted((c for c in quantized if c["relative_error"] > 0), key=lambda c: c["relative_error"])
    if not by_error:
        return None
    if rule == "loudest":
        return by_error[-1]
    if rule == "median":
        return by_error[(len(by_error) - 1) // 2]
    if rule == "quietest":
        return by_error[0]
    if rule.startswith("format:"):
        return next((c for c in by_error if c["format"] == rule[len("format:"):]), by_error[(len(by_error) - 1) // 2])
    raise SystemExit(f"unknown rule {rule!r}; valid: e2e, output, loudest, median, quietest, format:F")


def table_for(report, rule):
    r = copy.deepcopy(report)
    for layer in r["layers"]:
        if "candidates" not in layer:
            continue
        quantized = [c for c in layer["candidates"] if c["format"] != "float"]
        if any(c["e2e"] is None for c in quantized):
            raise SystemExit("the report must come from --sensitivity e2e or e2e-mse (every candidate probed)")
        if rule == "e2e":
            continue
        if rule == "output":
            for c in quantized:
                c["cost"] = c["relative_error"] ** 2
            continue
        p = probed_candidate(quantized, rule)
        gain = p["e2e"] / p["relative_error"] ** 2 if p else 0.0
        for c in quantized:
            c["cost"] = gain * c["relative_error"] ** 2
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qcast", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--budgets", default="4.5,5")
    ap.add_argument("--method", default="gptq")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rules", default="e2e,output,loudest,median,quietest")
    a = ap.parse_args()
    import torch
    import tasks
    t = tasks.TASKS[a.model](os.path.join(a.shared, "data"))
    os.makedirs(a.work, exist_ok=True)
    model_path = t.prepare(os.path.join(a.shared, "models"), a.work)
    calib_path = os.path.join(a.work, a.model + "_calib.pt")
    torch.save(t.calibration(), calib_path)
    float_outs = t.outputs(torch.jit.load(model_path).eval())
    report = json.load(open(a.report))
    print(f"| rule | budget | {t.metric} | fidelity |\n|---|---|---|---|", flush=True)
    for rule in a.rules.split(","):
        table_path = os.path.join(a.work, f"{a.model}_gain_probe_{rule.replace(':', '_')}.json")
        with open(table_path, "w") as f:
            json.dump(table_for(report, rule), f)
        for b in a.budgets.split(","):
            p = subprocess.run([a.qcast, "allocate", table_path, "--budget", b, "--json"], check=True, capture_output=True, text=True)
            options = [w for o in json.loads(p.stdout)["quantize_options"] for w in o.split(" ", 1)]
            out = os.path.join(a.work, f"{a.model}_gain_probe_{rule.replace(':', '_')}_{b}.pt")
            first = next(c for c in report["allocation"]["candidates"] if c != "float")
            subprocess.run([a.qcast, "quantize", model_path, "--format", first, *options, "--method", a.method, "--calib", calib_path,
                            "--batch-size", str(a.batch_size), "--quiet", "-o", out], check=True, stdout=subprocess.DEVNULL)
            s = t.score(t.outputs(torch.jit.load(out).eval()), float_outs)
            print(f"| {rule} | {b} | {s['metric']:.4g} | {s['fidelity']:.4g} |", flush=True)


if __name__ == "__main__":
    main()
