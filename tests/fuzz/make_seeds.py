#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/NAME) and the regression inputs
of issue-reported failures (tests/fuzz/crashes/NAME).

    .venv/bin/python tests/fuzz/make_seeds.py build/qcast

Needs numpy and torch (the project venv) and a built qcast (for .qpack files written by `qcast
quantize --export`). Seeds are small, valid or nearly valid inputs of each kind; libFuzzer mutates
from there. Run it again after a format change and commit what changed.
"""
import io, json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def out(kind, folder, name, data):
    d = os.path.join(HERE, kind, folder)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def npy_bytes(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def npy_raw(header_dict, payload=b"", version=1):
    h = header_dict
    pre = 10 if version == 1 else 12
    h = h + " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    length = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + length + h.encode() + payload


def format_names():
    names = ["fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "bf16",
             "fp16", "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4", "int2",
             "int8", "int4@g128", "int8@channel", "int16@none", "uint8@g32", "int8f7@g16+tensor:scale=fp32",
             "e2m1@g32:scale=e8m0:rule=rceil", "e4m3fnb16@g16+tensor:scale=fp32", "ue4m3", "e5m2fnuzb16",
             "e3m2nosp@channel:axis=1", "mxfp4:axis=0", "nvfp4:axis=-2", "fp4_e2m1@g16:scale=ue4m3",
             "e8m0", "e2m1nospb4@g32+tensor:scale=bf16", "int4@g32:axis=0", "e4m3@tensor:rule=amax"]
    bad = ["mxfp9", "int1", "e9m2", "int4@g0", "mxfp4:axis=x", "e2m1@g32+tensor:scale=fp32", "@", "int8@",
           "e4m3:scale=e8m0", "int4@g32:key=1", "int4@g999999999"]
    for i, n in enumerate(names + bad):
        out("corpus", "format_name", "%02d" % i, n)
    # A 100,000-character name once echoed 200 KB to stderr.
    out("crashes", "format_name", "long_name", "x" * 100000)


def npy_seeds():
    rng = np.random.default_rng(7)
    seeds = {
        "f32_2d": rng.standard_normal((4, 8)).astype(np.float32),
        "f16_3d": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "f32_scalar": np.float32(1.5).reshape(()),
        "f32_empty": np.zeros((0, 5), np.float32),
        "f32_1d": np.arange(7, dtype=np.float32),
        "f32_specials": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38], np.float32),
        "f64": np.ones(3, np.float64),
        "i8": np.ones(3, np.int8),
    }
    for name, a in seeds.items():
        out("corpus", "npy", name, npy_bytes(a))
    out("corpus", "npy", "fortran", npy_bytes(np.asfortranarray(np.ones((2, 3), np.float32))))
    out("corpus", "npy", "v2", npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                                       np.ones(2, np.float32).tobytes(), version=2))
    out("corpus", "npy", "v3_dq", npy_raw('{"descr": "<f2", "shape": (1, 2), "fortran_order": False}',
                                          np.ones(2, np.float16).tobytes(), version=3))
    ones = np.ones(256, np.float32).tobytes()
    # Inputs that crashed, hung or were misread before the strict reader (issue 24).
    crashes = {
        "overflow_shape": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", b"\0" * 64),
        "space_separated_shape": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4 64), }", ones),
        "junk_in_shape": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 64abc), }", ones),
        "junk_after_dict": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 64), }junk", ones),
        "claims_1gib": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }", b"\0" * 1100),
        "negative_dim": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }", ones),
        "zero_times_huge": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 99999999999, 99999999999), }"),
        "trailing_bytes": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", ones),
        "int_not_tuple": npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (256), }", ones),
        "header_len_past_end": b"\x93NUMPY\x01\x00\xff\xff{'descr'",
    }
    for name, data in crashes.items():
        out("crashes", "npy", name, data)


def qpack_seeds(qcast):
    with tempfile.TemporaryDirectory() as tmp:
        lin = torch.nn.Sequential(torch.nn.Linear(40, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1, groups=2))
        models = {"lin": lin, "conv": conv}
        for mname, m in models.items():
            path = os.path.join(tmp, mname + ".pt")
            torch.jit.save(torch.jit.script(m.eval()), path)
            for fmt in ["mxfp4", "nvfp4", "int4@g32", "fp8_e4m3", "int8@channel", "mxint8", "mxfp6_e3m2"]:
                for kind in ("qpack", "safetensors"):
                    q = os.path.join(tmp, "q." + kind)
                    subprocess.run([qcast, "quantize", path, "--format", fmt, "--method", "rtn", "-o",
                                    os.path.join(tmp, "q.pt"), "--export", q, "--quiet"], check=True,
                                   stdout=subprocess.DEVNULL)
                    with open(q, "rb") as f:
                        data = f.read()
                    out("corpus", kind, "%s_%s" % (mname, fmt.replace("@", "_")), data)
    # Inputs that crashed the reader before its checks (issue 24): a dimension product that
    # overflows, and a transposed entry whose matrix is not its parameter.
    def entry(name, fmt, shape, layout, rows, cols, codes, scales):
        b = struct.pack("<I", len(name)) + name + struct.pack("<I", len(fmt)) + fmt
        b += struct.pack("<I", len(shape)) + b"".join(struct.pack("<q", d) for d in shape)
        b += struct.pack("<Bqqf", layout, rows, cols, 1.0)
        return b + struct.pack("<Q", len(codes)) + codes + struct.pack("<Q", len(scales)) + scales
    head = b"QCASTPK1" + struct.pack("<II", 1, 1)
    out("crashes", "qpack", "overflow_dims", head + entry(b"w", b"int8", [1 << 32, 1 << 32], 0, 1 << 32, 1 << 32, b"", b""))
    out("crashes", "qpack", "transposed_mismatch", head + entry(b"w", b"fp8_e4m3", [2, 3], 1, 2, 3, b"\0" * 6, b""))
    out("crashes", "qpack", "huge_blob", head + entry(b"w", b"fp8_e4m3", [2, 3], 0, 2, 3, b"", b"")[:-16]
        + struct.pack("<Q", 1 << 60))


def safetensors_seeds():
    """Hand-made files beside the ones qpack_seeds exports: each breaks one rule of the reader."""
    def st(header, data=b""):
        h = json.dumps(header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        return struct.pack("<Q", len(h)) + h + data
    meta = {"qcast:w": json.dumps({"format": "mxfp4", "shape": [2, 32], "layout": "rows", "matrix": [2, 32]})}
    good = {"__metadata__": meta, "w": {"dtype": "F4", "shape": [2, 32], "data_offsets": [0, 32]},
            "w_scale": {"dtype": "F8_E8M0", "shape": [2, 1], "data_offsets": [32, 34]}}
    out("corpus", "safetensors", "hand_mxfp4", st(good, bytes(range(32)) + b"\x7f\x80"))
    bad = {
        "header_past_end": struct.pack("<Q", 1 << 40) + b"{}",
        "not_json": struct.pack("<Q", 4) + b"{\"a\"",
        "overlap": st({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                       "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(6)),
        "hole": st({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)),
        "odd_f4": st({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, bytes(1)),
        "huge_shape": st({"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 4]}}, bytes(4)),
        "missing_scale": st({"__metadata__": meta, "w": good["w"]}, bytes(32)),
        "bad_metadata": st({"__metadata__": {"qcast:w": "{"}, "w": good["w"]}, bytes(32)),
        "matrix_mismatch": st({"__metadata__": {"qcast:w": json.dumps({"format": "mxfp4", "shape": [4, 32],
                                                                      "layout": "rows", "matrix": [2, 32]})},
                               "w": good["w"], "w_scale": good["w_scale"]}, bytes(34)),
    }
    for name, data in bad.items():
        out("corpus", "safetensors", "hand_" + name, data)


def calibration_seeds():
    def torch_bytes(obj):
        b = io.BytesIO()
        torch.save(obj, b)
        return b.getvalue()
    pt = {
        "tensor": torch.randn(4, 3),
        "tuple": (torch.randn(3, 2), torch.randn(3, 5)),
        "list": [torch.randn(2, 2)],
        "dict": {"x": torch.randn(2)},
        "int_tensor": torch.arange(6).reshape(3, 2),
        "scalar": torch.tensor(1.0),
        "nan": torch.tensor([[1.0, float("nan")], [2.0, 3.0]]),
        "mismatch": (torch.randn(3, 2), torch.randn(4, 2)),
        "half": torch.randn(5, 2).half(),
    }
    for i, (name, obj) in enumerate(pt.items()):
        out("corpus", "calibration", "pt_" + name, bytes([0, i]) + torch_bytes(obj))
    rng = np.random.default_rng(3)
    for i, (name, a) in enumerate({"f32": rng.standard_normal((5, 3)).astype(np.float32),
                                   "f16": rng.standard_normal((3, 2, 2)).astype(np.float16),
                                   "scalar": np.float32(2).reshape(()),
                                   "inf": np.array([[1, np.inf]], np.float32)}.items()):
        out("corpus", "calibration", "npy_" + name, bytes([1, i]) + npy_bytes(a))
    # A calibration folder whose .npy claimed an overflowing shape printed a c10 backtrace.
    out("crashes", "calibration", "npy_overflow_shape",
        bytes([1, 0]) + npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    format_names()
    npy_seeds()
    qpack_seeds(sys.argv[1])
    safetensors_seeds()
    calibration_seeds()
