"""`qcast cast` against PyTorch's own conversions, a second independent reference beside
tests/oracle: float8_e4m3fn / e5m2 / e4m3fnuz / e5m2fnuz (ties to even; clamped first, since the
qcast names saturate), float16 and bfloat16 (IEEE). Inputs: scaled normals with specials, and random
binary32 bit patterns, written by numpy.

usage: python torch_crosscheck.py QCAST_BINARY
"""
import subprocess
import sys
import tempfile

import numpy as np
import torch

CASES = [("fp8_e4m3", torch.float8_e4m3fn, 448.0), ("fp8_e5m2", torch.float8_e5m2, 57344.0),
         ("fp8_e4m3fnuz", torch.float8_e4m3fnuz, 240.0), ("fp8_e5m2fnuz", torch.float8_e5m2fnuz, 57344.0),
         ("fp16", torch.float16, None), ("bf16", torch.bfloat16, None)]


def main():
    qcast = sys.argv[1]
    rng = np.random.default_rng(0)
    normal = (rng.standard_normal((64, 333)) * np.exp2(rng.integers(-30, 30, (64, 1)))).astype(np.float32)
    normal[0, :8] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, 3.4e38, -1e30]
    bits = rng.integers(0, 2**32, 40000, dtype=np.uint64).astype(np.uint32).view(np.float32).reshape(8, 5000)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as d:
        for label, data in [("normal", normal), ("bit patterns", bits)]:
            np.save(f"{d}/in.npy", data)
            t = torch.from_numpy(data)
            for name, dtype, limit in CASES:
                subprocess.run([qcast, "cast", "--format", name, f"{d}/in.npy", f"{d}/out.npy"], check=True)
                got = np.load(f"{d}/out.npy")
                want = (t.clamp(-limit, limit) if limit else t).to(dtype).float().numpy()
                same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
                bad = int((~same).sum())
                print(f"{label:12} {name:13} {bad} mismatches of {got.size}")
                passed, failed = passed + (bad == 0), failed + (bad != 0)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
