"""Peer comparison: torchao's MX and NVFP4 fake quantization (quantize + dequantize) on CPU against
`qcast bench` on the same tensor shape, in one run, printing the ratios.

Usage (from the repository root, after scripts/test.sh or scripts/demo.sh built build/qcast):
    .venv/bin/python benchmarks/torchao_compare.py [--elements N] [--threads T] [--repeats R]
Installs torchao into the running interpreter's environment (pip) when it is missing.
"""
import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TORCHAO_VERSION = "0.18.0"


def ensure_torchao():
    try:
        return importlib.import_module("torchao")
    except ImportError:
        print(f"installing torchao=={TORCHAO_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"torchao=={TORCHAO_VERSION}"],
                       check=True)
        return importlib.import_module("torchao")


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=1 << 24, help="tensor size (rows of 4096); default 16M")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--qcast", default=str(ROOT / "build" / "qcast"), help="path of the qcast binary")
    args = parser.parse_args()

    ensure_torchao()
    from torchao.prototype.mx_formats.mx_tensor import MXTensor
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    torch.set_num_threads(args.threads)
    rows = max(1, args.elements // 4096)
    x = torch.randn(rows, 4096)
    n = x.numel()
    gbytes = 2 * 4 * n / 1e9  # bytes read + written, as qcast bench counts them

    def mx(elem):
        return lambda: MXTensor.to_mx(x, elem, 32).dequantize(torch.float32)

    def nvfp4():
        scale = per_tensor_amax_to_scale(x.abs().amax())
        return NVFP4Tensor.to_nvfp4(x, 16, per_tensor_scale=scale).dequantize(torch.float32)

    cases = [("mxfp8_e4m3", mx(torch.float8_e4m3fn)), ("mxfp6_e2m3", mx("fp6_e2m3")),
             ("mxfp4", mx(torch.float4_e2m1fn_x2)), ("nvfp4", nvfp4)]

    names = ",".join(name for name, _ in cases)
    out = subprocess.run([args.qcast, "bench", "--formats", names, "--elements", str(n), "--threads",
                          str(args.threads), "--repeats", str(args.repeats), "--json"],
                         check=True, capture_output=True, text=True).stdout
    qcast = {row["format"]: row for row in map(json.loads, out.splitlines())}

    print(f"{n} float32 elements (rows of 4096), {args.threads} threads, CPU, torch {torch.__version__}, "
          f"torchao {importlib.import_module('torchao').__version__}; median of {args.repeats} runs")
    print(f"{'format':<12} {'qcast GB/s':>11} {'torchao GB/s':>13} {'qcast/torchao':>14}")
    for name, fn in cases:
        try:
            t = median_seconds(fn, args.repeats)
            peer = f"{gbytes / t:13.3f}"
            ratio = f"{qcast[name]['gbps'] / (gbytes / t):13.1f}x"
        except Exception as error:  # a format torchao cannot run on CPU: say so
            peer, ratio = f"{'fails on CPU':>13}", f"{'-':>14}"
            print(f"  torchao {name}: {type(error).__name__}: {error}".splitlines()[0][:150])
        print(f"{name:<12} {qcast[name]['gbps']:11.2f} {peer} {ratio}")


if __name__ == "__main__":
    main()
