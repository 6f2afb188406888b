"""Train a small CNN on Fashion-MNIST (Debian's dataset-fashion-mnist), save it as TorchScript, and
evaluate TorchScript models on the test set. Used by scripts/demo.sh.

  python fashion_mnist.py train --out DIR [--data DIR] [--seconds S]
      writes DIR/cnn.pt (scripted model), DIR/calib.pt (512 training images, for calibration)
  python fashion_mnist.py evaluate [--data DIR] MODEL.pt...
      prints the test accuracy of each model (one line each: path accuracy)
"""
import argparse, gzip, os, struct, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    try:
        images = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    except OSError as e:
        sys.exit(f"cannot read Fashion-MNIST from {data_dir}: {e} (apt-get install dataset-fashion-mnist)")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels.astype(np.int64))


class SmallCNN(nn.Module):
    """Conv stem, a residual depthwise-separable block, a strided conv and a two-layer classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 32, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = x + F.relu(self.pw(F.relu(self.dw(x))))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def train(args):
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    x, y = load(args.data, "train")
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start, step, epoch = time.time(), 0, 0
    while time.time() - start < args.seconds:
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - 127, 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 200 == 0:
                print(f"  step {step}, epoch {epoch}, loss {loss.item():.3f}, {time.time() - start:.0f}s", flush=True)
            if time.time() - start >= args.seconds:
                break
        epoch += 1
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    torch.jit.script(model).save(os.path.join(args.out, "cnn.pt"))
    g = torch.Generator().manual_seed(1)
    calib = x[torch.randperm(len(x), generator=g)[:512]].contiguous()
    torch.save(calib, os.path.join(args.out, "calib.pt"))
    print(f"trained {step} steps in {time.time() - start:.0f}s; wrote {args.out}/cnn.pt and calib.pt")


@torch.no_grad()
def evaluate(args):
    x, y = load(args.data, "test")
    for path in args.models:
        model = torch.jit.load(path).eval()
        correct = sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item() for i in range(0, len(x), 1000))
        print(f"{path} {correct / len(x):.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--data", default=DEFAULT_DATA)
    t.add_argument("--seconds", type=float, default=90)
    e = sub.add_parser("evaluate")
    e.add_argument("--data", default=DEFAULT_DATA)
    e.add_argument("models", nargs="+")
    args = p.parse_args()
    train(args) if args.command == "train" else evaluate(args)


if __name__ == "__main__":
    main()
