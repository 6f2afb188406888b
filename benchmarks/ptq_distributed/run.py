"""Calibration across local processes: wall time and bytes all-reduced per layer for 1..N ranks of
`qcast quantize --dist-init` on one machine, beside the cost model of
docs/design/0016-distributed-calibration.md (bytes handed to the all-reduce per layer = groups x
(2 cols^2 + 3 cols (cols + 1) / 2 + 2 cols + 1) x 8: D's two halves whole, the three symmetric sums
as upper triangles, the input sums and the token count), and whether every run's
codes equal the one-process run's.

  python run.py --qcast build/qcast --shared ../shared --work DIR [--ranks 1,2,3] [--format int4@g128]
                [--method gptq] [--results R.jsonl]

The model is the MiniLM of docs/results.md (benchmarks/ptq/tasks.py prepares it in DIR), with its 64
calibration windows in batches of 8.
"""
import argparse, json, os, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "ptq"))
import tasks  # noqa: E402
import torch  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predicted_bytes(report):
    """Per quantized layer with statistics of its own, per group: D's halves (2 cols^2), the upper
    triangles of G's halves and XX^T (3 cols (cols+1)/2), the two input sums, the token count; float64."""
    out = {}
    for l in report["layers"]:
        if l["status"] != "quantized" or l.get("notes", {}).get("shared_statistics"):
            continue  # a layer that reads the previous one's input shares its statistics: no reduce
        shape = l["shape"]
        cols = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1) if l["op"] != "aten::matmul" else shape[0]
        out[l["name"]] = (2 * cols * cols + 3 * cols * (cols + 1) // 2 + 2 * cols + 1) * 8
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qcast", required=True)
    p.add_argument("--shared", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--ranks", default="1,2,3")
    p.add_argument("--format", default="int4@g128")
    p.add_argument("--method", default="gptq")
    p.add_argument("--results", default=None)
    a = p.parse_args()
    t = tasks.Minilm(os.path.join(a.shared, "data"))
    model = t.prepare(os.path.join(a.shared, "models"), a.work)
    calib = os.path.join(a.work, "minilm_l6_calib.pt")
    torch.save(t.calibration(), calib)
    common = [model, "--calib", calib, "--batch-size", "8", "--format", a.format, "--method", a.method, "--quiet"]
    rows, reference = [], None
    for n in [int(x) for x in a.ranks.split(",")]:
        out = os.path.join(a.work, f"dist_{n}")
        port = free_port()
        start = time.time()
        procs = []
        for r in range(n):
            dist = [] if n == 1 else ["--dist-init", f"tcp://127.0.0.1:{port}", "--rank", str(r), "--world-size", str(n)]
            procs.append(subprocess.Popen([a.qcast, "quantize", *common, *dist, "-o", out + ".pt", "--export", out + ".qpack",
                                           "--report", out + ".json"], stdout=subprocess.DEVNULL))
        if any(pr.wait() != 0 for pr in procs):
            sys.exit(f"{n} ranks: a rank failed")
        wall = time.time() - start
        rep = json.load(open(out + ".json"))
        codes = open(out + ".qpack", "rb").read()
        reference = reference or codes
        layers = sum(1 for l in rep["layers"] if l["status"] == "quantized")
        predicted = sum(predicted_bytes(rep).values()) if n > 1 else 0
        row = {"ranks": n, "wall_s": wall, "forward_s": rep["forward_seconds"], "statistics_s": rep["statistics_seconds"],
               "solve_s": rep["solve_seconds"], "bytes": rep.get("collective_bytes", 0), "predicted_bytes": predicted,
               "layers": layers, "same_codes": codes == reference, "cores": os.cpu_count()}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.results:
            with open(a.results, "a") as f:
                f.write(json.dumps(row) + "\n")
    print("| ranks | wall s | forward s (rank 0) | statistics s | solve s | MiB all-reduced per layer | predicted | codes = 1 rank |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = r["bytes"] / r["layers"] / 2**20
        pred = r["predicted_bytes"] / r["layers"] / 2**20
        print(f"| {r['ranks']} | {r['wall_s']:.1f} | {r['forward_s']:.1f} | {r['statistics_s']:.1f} | {r['solve_s']:.1f} | "
              f"{per:.2f} | {pred:.2f} | {'yes' if r['same_codes'] else 'NO'} |")


if __name__ == "__main__":
    main()
