"""Mixed precision from the command line, checked from outside:

- the allocation (`qcast allocate`, the solver `qcast quantize --candidates` runs) against an
  independent solver, HiGHS through scipy.optimize.milp with a zero gap, on random instances of up
  to 40 layers and on the table of a real run;
- a real run (`qcast quantize --candidates ... --budget B`) keeps the budget, stores each layer in
  the format the report names, and chose the MILP's optimum of its own sensitivity table;
- its HTML report opens in a real headless browser (Debian's chromium-headless-shell) without
  console errors, and its charts are laid out with their marks; a page with a script error is
  caught the same way, so the check can fail.

usage: mixed_precision_check.py QCAST [SCREENSHOT.png]
"""
import json, os, random, shutil, subprocess, sys, tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import Bounds, LinearConstraint, milp

from checks import check, finish

qcast = sys.argv[1]
screenshot = sys.argv[2] if len(sys.argv) > 2 else None
work = tempfile.mkdtemp(prefix="qcast_mixed_")


def highs_optimum(layers, capacity):
    """HiGHS's bounds on the least summed cost with one choice per layer and bytes <= capacity:
    (a feasible assignment's cost, the dual bound below every one), or None when none fits. The
    costs are scaled so that the least possible sum is about 1e4: HiGHS stops within an absolute
    gap of 1e-6, which would otherwise hide differences in sums of small sensitivities."""
    costs = np.array([c["cost"] for l in layers for c in l["candidates"]])
    sizes = np.array([c["bytes"] for l in layers for c in l["candidates"]], dtype=float)
    least = sum(min(c["cost"] for c in l["candidates"]) for l in layers)
    scale = min(1e4 / least if least > 0 else 1e4, 1e12 / max(costs.sum(), 1e-300))
    n = len(costs)
    pick = np.zeros((len(layers), n))
    k = 0
    for i, l in enumerate(layers):
        pick[i, k:k + len(l["candidates"])] = 1
        k += len(l["candidates"])
    res = milp(costs * scale, integrality=np.ones(n), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(pick, 1, 1), LinearConstraint(sizes[None, :], -np.inf, capacity)],
               options={"mip_rel_gap": 0, "presolve": True})
    if res.status == 2:
        return None
    assert res.status == 0, res.message
    x = np.round(res.x)
    assert x @ sizes <= capacity
    return float(x @ costs), res.mip_dual_bound / scale


def agrees(cost, bounds):
    """cost lies between HiGHS's dual bound and its assignment's cost (to rounding)."""
    primal, dual = bounds
    tol = 1e-9 * max(primal, 1e-300)
    check(primal - dual <= tol, f"HiGHS left a gap: [{dual!r}, {primal!r}]")  # else the comparison says little
    return dual - tol <= cost <= primal + tol


def allocate(report_path, capacity):
    p = subprocess.run([qcast, "allocate", report_path, "--budget-bytes", str(capacity), "--json"], capture_output=True, text=True)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else p.stderr)


def against_highs(layers, capacity, what):
    path = os.path.join(work, "instance.json")
    with open(path, "w") as f:
        json.dump({"schema": "qcast.ptq.report", "layers": layers}, f)
    want = highs_optimum(layers, capacity)
    rc, got = allocate(path, capacity)
    if want is None:
        check(rc == 1 and "below the smallest assignment" in got, f"{what}: infeasible budget not reported ({rc}: {got})")
        return
    check(rc == 0, f"{what}: qcast allocate failed: {got}")
    if rc != 0:
        return
    bytes_ = sum(l["candidates"][c["choice"]]["bytes"] for l, c in zip(layers, got["layers"]))
    cost = sum(l["candidates"][c["choice"]]["cost"] for l, c in zip(layers, got["layers"]))
    check(bytes_ == got["bytes"] and bytes_ <= capacity, f"{what}: {bytes_} bytes for a budget of {capacity}")
    check(abs(cost - got["cost"]) <= 1e-12 * max(1.0, cost), f"{what}: the reported cost {got['cost']} is not its choices' {cost}")
    check(agrees(cost, want), f"{what}: qcast's optimum {cost!r} is outside HiGHS's [dual bound, optimum] {want[::-1]!r}")


# Random instances: realistic format ladders (bits per weight x layer size, with noise) and
# arbitrary ones, 5-40 layers, budgets from below the least size to above the largest.
rng = random.Random(20261204)
ladder = [4.125, 4.25, 4.5, 6.25, 8.25, 16.0]
for trial in range(24):
    n = rng.randint(5, 40)
    layers = []
    for i in range(n):
        weights = rng.choice([64, 576, 4096, 147456, 589824])
        if trial % 2:
            cands = [{"format": f"f{j}", "bytes": int(b * weights / 8), "cost": rng.random() * 0.1 * 2.0 ** (-2 * b)}
                     for j, b in enumerate(ladder)]
        else:
            cands = [{"format": f"f{j}", "bytes": rng.randint(1, 5000), "cost": rng.random()} for j in range(rng.randint(1, 5))]
        layers.append({"name": f"layer{i}", "shape": [weights], "candidates": cands})
    low = sum(min(c["bytes"] for c in l["candidates"]) for l in layers)
    high = sum(max(c["bytes"] for c in l["candidates"]) for l in layers)
    for cap in (low - 1, low, low + (high - low) // 7, (low + high) // 2, high):
        against_highs(layers, cap, f"random instance {trial}, budget {cap}")


# A real run on a small network.
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Conv2d(32, 64, 3, padding=1)
        self.head = nn.Linear(64, 128)
        self.mid = nn.Linear(128, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.body(x))
        x = F.relu(self.head(x.mean((2, 3))))
        x = F.relu(self.mid(x))
        return self.out(x)


torch.manual_seed(0)
model_path, calib_path = os.path.join(work, "net.pt"), os.path.join(work, "calib.pt")
torch.jit.script(Net().eval()).save(model_path)
torch.save(torch.randn(32, 3, 12, 12), calib_path)
candidates = "int4@g32,mxfp4,nvfp4,mxfp6_e2m3,float"
base = [qcast, "quantize", model_path, "--candidates", candidates, "--budget", "5", "--method", "gptq", "--calib", calib_path,
        "--batch-size", "8", "--quiet"]
out_pt, report_json, report_html = (os.path.join(work, n) for n in ("q.pt", "r.json", "r.html"))
p = subprocess.run(base + ["-o", out_pt, "--report", report_json], capture_output=True, text=True)
check(p.returncode == 0, f"quantize --candidates failed: {p.stderr}")
r = json.load(open(report_json))
a = r["allocation"]
check(a["sensitivity"] == "gain", f"the default sensitivity is {a['sensitivity']}, not gain")
measured = [l for l in r["layers"] if "candidates" in l]
check(len(measured) == 5, f"{len(measured)} layers measured, not 5")
check(a["bytes"] <= a["budget_bytes"], f"allocated {a['bytes']} bytes over the budget {a['budget_bytes']}")
check(sum(l["quantized_bytes"] for l in measured) == a["bytes"], "the stored bytes differ from the allocation's")
check(agrees(a["cost"], highs_optimum(measured, a["budget_bytes"])), "the run's allocation is not HiGHS's optimum of its own table")
for l in measured:
    chosen = l["format"] if l["status"] == "quantized" else "float"
    check(any(c["format"] == chosen and c["bytes"] == l["quantized_bytes"] for c in l["candidates"]),
          f"{l['name']}: stored as {chosen} in {l['quantized_bytes']} bytes, not a candidate of the table")
# qcast allocate on the run's report at its budget repeats the run's choice.
rc, again = allocate(report_json, a["budget_bytes"])
check(rc == 0 and abs(again["cost"] - a["cost"]) <= 1e-12 * max(1.0, a["cost"]), f"qcast allocate on the report: {again}")

# The gain sensitivity: one probe per layer (the candidate of the lower median output error), the
# others' costs scaled from it; the allocation is still HiGHS's optimum of the table.
report_gain = os.path.join(work, "gain.json")
p = subprocess.run([*base, "--sensitivity", "gain", "-o", os.path.join(work, "qg.pt"), "--report", report_gain], capture_output=True, text=True)
check(p.returncode == 0, f"quantize --sensitivity gain failed: {p.stderr}")
g = json.load(open(report_gain))
check(g["allocation"]["sensitivity"] == "gain", f"sensitivity named {g['allocation']['sensitivity']}")
gm = [l for l in g["layers"] if "candidates" in l]
check(agrees(g["allocation"]["cost"], highs_optimum(gm, g["allocation"]["budget_bytes"])), "the gain run's allocation is not HiGHS's optimum")
for l in gm:
    quantized = [c for c in l["candidates"] if c["format"] != "float"]
    probed = [c for c in quantized if c["e2e"] is not None]
    changed = [c for c in quantized if c["relative_error"] > 0]  # the candidates that leave the output exact cost 0
    median = sorted(changed, key=lambda c: c["relative_error"])[(len(changed) - 1) // 2]  # stable: the order given on ties
    check(len(probed) == 1 and probed[0] is median, f"{l['name']}: probed {[c['format'] for c in probed]}, median {median['format']}")
    gain = median["e2e"] / median["relative_error"] ** 2
    check(abs(l["notes"]["output_gain"] - gain) <= 1e-9 * gain, f"{l['name']}: output_gain {l['notes']['output_gain']} != {gain}")
    for c in quantized:
        want = median["e2e"] if c is median else gain * c["relative_error"] ** 2
        check(abs(c["cost"] - want) <= 1e-9 * max(want, 1e-300), f"{l['name']} {c['format']}: cost {c['cost']} != {want}")

# The HTML report in a real browser.
p = subprocess.run(base + ["-o", os.path.join(work, "q2.pt"), "--report", report_html], capture_output=True, text=True)
check(p.returncode == 0, f"quantize --report R.html failed: {p.stderr}")
browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
check(browser is not None, "no chromium-headless-shell or chromium on PATH (scripts/setup.sh installs it)")


def open_in_browser(path):
    """The DOM after load and the console lines, with a probe script that writes each chart's laid-out
    size and mark count into the page (the report itself has no script)."""
    probed = path + ".probe.html"
    probe = ("<script>document.body.setAttribute('data-layout', JSON.stringify([...document.querySelectorAll('svg')]"
             ".map(s => ({id: s.id, width: s.getBoundingClientRect().width, height: s.getBoundingClientRect().height,"
             " marks: s.querySelectorAll('circle,rect,path').length}))));</script>")
    html = open(path, encoding="utf-8").read()
    with open(probed, "w", encoding="utf-8") as f:
        f.write(html.replace("</body>", probe + "</body>"))
    p = subprocess.run([browser, "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000",
                        "--dump-dom", "file://" + probed], capture_output=True, text=True, timeout=120)
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
    return p.returncode, p.stdout, console


if browser:
    rc, dom, console = open_in_browser(report_html)
    check(rc == 0, f"the browser failed on the report (exit {rc})")
    check(not console, f"console messages on the report: {console}")
    layout = json.loads(dom.split('data-layout="')[1].split('"')[0].replace("&quot;", '"')) if 'data-layout="' in dom else []
    charts = {c["id"]: c for c in layout}
    for cid in ("chart-errors", "chart-bytes", "chart-budget"):
        c = charts.get(cid)
        check(c is not None and c["width"] > 300 and c["height"] > 100 and c["marks"] > 10, f"chart {cid} not laid out with marks: {c}")
    for element in ('id="layer-table"', 'id="allocation-point"', "mixed: int4@g32"):
        check(element in dom, f"{element} missing from the rendered report")
    # The check itself: a page with a script error is caught.
    bad = os.path.join(work, "bad.html")
    with open(bad, "w") as f:
        f.write(open(report_html, encoding="utf-8").read().replace("</body>", "<script>no_such_function();</script></body>"))
    _, _, console = open_in_browser(bad)
    check(any("no_such_function" in line for line in console), f"a script error went unseen: {console}")
    if screenshot:
        subprocess.run([browser, "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1500",
                        "--screenshot=" + os.path.abspath(screenshot), "file://" + report_html], capture_output=True, timeout=120)

# Usage errors: exit 2 with the reason.
for args, says in (([], "one budget"), (["--budget", "4", "--budget-mb", "1"], "one budget"), (["--budget", "x"], "--budget")):
    p = subprocess.run([qcast, "quantize", model_path, "--candidates", "mxfp4", "--calib", calib_path, "-o", out_pt, *args],
                       capture_output=True, text=True)
    check(p.returncode == 2 and says in p.stderr, f"quantize {args}: exit {p.returncode}, {p.stderr.strip()}")
p = subprocess.run([qcast, "quantize", model_path, "--candidates", "mxfp4", "--budget", "5", "--sensitivity", "hessian", "--calib", calib_path,
                    "-o", out_pt], capture_output=True, text=True)
check(p.returncode == 2 and all(n in p.stderr for n in ("hessian", "output", "gain", "gain-mse", "e2e", "e2e-mse")),
      f"an unknown sensitivity must list the valid ones: {p.stderr.strip()}")
p = subprocess.run([qcast, "quantize", model_path, "--format", "mxfp4", "--budget", "4", "--calib", calib_path, "-o", out_pt],
                   capture_output=True, text=True)
check(p.returncode == 2 and "--candidates" in p.stderr, f"--budget without --candidates: {p.stderr.strip()}")
p = subprocess.run([qcast, "quantize", model_path, "--candidates", "mxfp4,mxfp9", "--budget", "4", "--calib", calib_path, "-o", out_pt],
                   capture_output=True, text=True)
check(p.returncode == 2 and "mxfp9" in p.stderr, f"an unknown candidate: {p.stderr.strip()}")
p = subprocess.run([qcast, "allocate", model_path, "--budget", "4"], capture_output=True, text=True)
check(p.returncode == 1 and model_path in p.stderr, f"allocate on a non-report: {p.stderr.strip()}")

shutil.rmtree(work)
finish("mixed precision: allocations equal HiGHS's optima, the run keeps its budget, the HTML report renders")
