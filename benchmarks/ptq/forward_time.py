"""Forward time of the quantized models of a benchmark run against the float model's, on one
calibration batch, timed in alternation (float, quantized, float, ...) after two warm-up calls of
each, median of --repeats; on the CPU with every core. The WxAy table of docs/results.md comes
from this, run on an otherwise idle machine (run.py's own forward_s includes whatever else ran).

  python forward_time.py --results R.jsonl --work DIR --ops-library build/libqcast_ops.so
                         [--batch 8] [--repeats 5] [--only-act]
"""
import argparse, json, os, statistics, time

import torch


def quantized_path(row):
    args = row["command"].split(" ")
    return args[args.index("-o") + 1]


def inputs(calib, batch):
    if isinstance(calib, (tuple, list)):
        return tuple(t[:batch] for t in calib)
    return (calib[:batch],)


def timed(model, x, repeats, other, y):
    """Medians of model(x) and other(y), alternated."""
    a, b = [], []
    with torch.no_grad():
        for _ in range(2):
            model(*x)
            other(*y)
        for _ in range(repeats):
            t = time.perf_counter()
            model(*x)
            a.append(time.perf_counter() - t)
            t = time.perf_counter()
            other(*y)
            b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--ops-library", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only-act", action="store_true", help="only rows with an activation format")
    a = p.parse_args()
    torch.ops.load_library(a.ops_library)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    if a.only_act:
        rows = [r for r in rows if "act-format=" in r["method"]]
    print("| model | weights | method | float ms | quantized ms | ratio |")
    print("|---|---|---|---|---|---|")
    float_models, calib = {}, {}
    for r in rows:
        m = r["model"]
        if m not in float_models:
            c = torch.load(os.path.join(a.work, m + "_calib.pt"))
            calib[m] = inputs(c, a.batch)
            float_path = [w for w in r["command"].split(" ") if w.endswith(".pt")][0]
            float_models[m] = torch.jit.load(float_path).eval()
        q = torch.jit.load(quantized_path(r)).eval()
        tq, tf = timed(q, calib[m], a.repeats, float_models[m], calib[m])
        print(f"| {m} | {r['format']} | {r['method']} | {tf * 1e3:.1f} | {tq * 1e3:.1f} | {tq / tf:.2f} |", flush=True)


if __name__ == "__main__":
    main()
