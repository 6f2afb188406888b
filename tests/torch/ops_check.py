"""The operator library (libqcast_ops.so) from PyTorch: torch.ops.qcast.cast gives the bits of
`qcast cast` for the same tensor, format and options; its gradient passes straight through;
torch.ops.qcast.hadamard is the orthonormal block-diagonal Sylvester-Hadamard transform (against
the explicit matrix) and its own inverse; both work in a scripted module that is saved, loaded in
another process and run there; bad arguments give clear errors. CUDA tensors, where a GPU is
usable, give the CPU's bits.

The same saved module also runs from C++ (examples/05_torchscript_ops.cpp) with the same bits.

usage: ops_check.py LIBQCAST_OPS QCAST EXAMPLE_05
"""
import os, subprocess, sys, tempfile, textwrap

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from checks import check, finish

lib, qcast, example = sys.argv[1], sys.argv[2], sys.argv[3]


def same(a, b):
    """Equal values, NaN where the other has NaN (overflow without saturation, NaN blocks)."""
    return a.shape == b.shape and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
torch.ops.load_library(lib)

with tempfile.TemporaryDirectory() as d:
    torch.manual_seed(0)
    x = torch.randn(16, 96) * torch.logspace(-2, 2, 96)
    x[3, :32] = 0.0
    x[5, 7] = 1e6
    cases = [("mxfp4", [], {}), ("nvfp4", [], {}), ("nvfp4", ["--tensor-amax", "2.5"], {"tensor_amax": 2.5}),
             ("fp8_e4m3", ["--no-saturate"], {"saturate": False}), ("int4@g32", ["--round", "away"], {"rounding": "away"}),
             ("mxfp6_e3m2", ["--round", "stochastic", "--seed", "7"], {"rounding": "stochastic", "seed": 7}),
             ("int8@channel", ["--axis", "1"], {"axis": 1}), ("mxfp8_e4m3", ["--round", "zero"], {"rounding": "zero"})]
    np.save(os.path.join(d, "x.npy"), x.numpy())
    for fmt, flags, kwargs in cases:
        y_cli = os.path.join(d, "y.npy")
        r = subprocess.run([qcast, "cast", "--format", fmt, *flags, os.path.join(d, "x.npy"), y_cli], capture_output=True, text=True)
        check(r.returncode == 0, f"qcast cast {fmt} {flags}: {r.stderr}")
        y = torch.ops.qcast.cast(x, fmt, **kwargs)
        check(same(y, torch.from_numpy(np.load(y_cli))), f"torch.ops.qcast.cast {fmt} {kwargs} equals qcast cast bit for bit")
        if torch.cuda.is_available():
            check(same(torch.ops.qcast.cast(x.cuda(), fmt, **kwargs).cpu(), y), f"{fmt} {kwargs}: CUDA gives the CPU's bits")
    for dtype in (torch.bfloat16, torch.float16):
        xs = x.to(dtype)
        y = torch.ops.qcast.cast(xs, "mxfp4")
        check(y.dtype == dtype and same(y.float(), torch.ops.qcast.cast(xs.float(), "mxfp4")),
              f"{dtype}: same dtype out, the float32 cast's values")

    # Straight-through gradient.
    xg = x.clone().requires_grad_(True)
    w = torch.randn_like(x)
    (torch.ops.qcast.cast(xg, "nvfp4") * w).sum().backward()
    check(torch.equal(xg.grad, w), "the gradient passes straight through the cast")

    # Hadamard: against the explicit Sylvester matrix, orthonormal, its own inverse, differentiable.
    def sylvester(n):
        h = torch.ones(1, 1, dtype=torch.float64)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        return h / n ** 0.5
    for block in (1, 2, 32):
        xd = x.double()
        ref = (xd.reshape(16, -1, block) @ sylvester(block)).reshape(16, 96)
        got = torch.ops.qcast.hadamard(xd, block)
        check(torch.allclose(got, ref, rtol=1e-12, atol=1e-9 * float(xd.abs().max())), f"hadamard {block} equals x · H/sqrt(B)")
        check(torch.allclose(torch.ops.qcast.hadamard(got, block), xd, rtol=1e-12, atol=1e-9 * float(xd.abs().max())),
              f"hadamard {block} is its own inverse")
    # Along another dimension: the transform of the transpose, transposed back.
    xt = torch.randn(64, 5, 3, dtype=torch.float64)
    check(torch.equal(torch.ops.qcast.hadamard(xt, 16, 0), torch.ops.qcast.hadamard(xt.movedim(0, -1), 16).movedim(-1, 0)),
          "hadamard along dim 0 equals the last-dim transform of the moved tensor")
    xh = x.clone().requires_grad_(True)
    torch.ops.qcast.hadamard(xh, 32).sum().backward()
    check(torch.allclose(xh.grad, torch.ones(16, 96) @ torch.block_diag(*[sylvester(32).float()] * 3), atol=1e-5),
          "hadamard's gradient is H applied to the output gradient")

    # Bad arguments: clear errors.
    for call, says in ((lambda: torch.ops.qcast.cast(x, "mxfp3"), "valid names"),
                       (lambda: torch.ops.qcast.cast(x, "mxfp4", rounding="up"), "rounding must be"),
                       (lambda: torch.ops.qcast.cast(x, "fp8_e4m3", axis=0), "axis applies"),
                       (lambda: torch.ops.qcast.cast(x, "nvfp4", tensor_amax=0.0), "tensor_amax"),
                       (lambda: torch.ops.qcast.cast(x, "mxfp4", tensor_amax=1.0), "no tensor-wide scale"),
                       (lambda: torch.ops.qcast.hadamard(x, 24), "power of two"),
                       (lambda: torch.ops.qcast.hadamard(x, 64), "does not divide"),
                       (lambda: torch.ops.qcast.hadamard(x, 2, 5), "out of range")):
        try:
            call()
            check(False, f"no error (wanted '{says}')")
        except RuntimeError as e:
            check(says in str(e) and "Exception raised from" not in str(e).splitlines()[0], f"error says '{says}': {str(e)[:200]}")

    # TorchScript: a scripted module calling both ops, saved, loaded and run in another process.
    src = os.path.join(d, "rotated.py")
    with open(src, "w") as f:
        f.write(textwrap.dedent('''
            import torch
            class Rotated(torch.nn.Module):
                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    return torch.ops.qcast.cast(torch.ops.qcast.hadamard(x, 32), "mxfp4", rounding="even")
            '''))
    sys.path.insert(0, d)
    import rotated
    module = torch.jit.script(rotated.Rotated())
    module.save(os.path.join(d, "rotated.pt"))
    expected = module(x)
    check(torch.equal(expected, torch.ops.qcast.cast(torch.ops.qcast.hadamard(x, 32), "mxfp4")), "scripted == eager")
    torch.save(x, os.path.join(d, "x.pt"))
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        import torch
        torch.ops.load_library({lib!r})
        m = torch.jit.load({os.path.join(d, "rotated.pt")!r})
        torch.save(m(torch.load({os.path.join(d, "x.pt")!r})), {os.path.join(d, "y.pt")!r})
        ''')], capture_output=True, text=True)
    check(run.returncode == 0, "the saved module loads and runs in another process: " + run.stderr[-500:])
    if run.returncode == 0:
        check(torch.equal(torch.load(os.path.join(d, "y.pt")), expected), "same bits in the other process")
    run = subprocess.run([example, os.path.join(d, "rotated.pt"), os.path.join(d, "x.pt"), os.path.join(d, "y_cpp.pt")],
                         capture_output=True, text=True)
    check(run.returncode == 0, "example 05 runs the saved module from C++: " + run.stderr[-500:])
    if run.returncode == 0:
        check(torch.equal(torch.load(os.path.join(d, "y_cpp.pt")), expected), "same bits from C++")

finish("torch.ops.qcast: cast bit-identical to the CLI, straight-through gradient, hadamard exact, TorchScript round trip")
