"""What the engine's per-sample convolutions (docs/design/0007, decision 6a) cost and guarantee, on
the convolutional models of ../shared/models, in plain PyTorch at one intra-op thread (as the engine
runs its stages):

- bit-equality: each model's float output for the first samples, computed in batches of 1, 4, 8, 16
  and 32, against the batch of 32, with ATen's own kernel choice and with oneDNN and NNPACK off;
- time: the forward of one batch (--batch, default 8) both ways, alternated, median of --repeats
  after two warm-up rounds.

  python conv_kernels.py --shared ../shared [--batch 8] [--repeats 5]

Inputs are uniform random in [0, 1) at each model's input size (the README of ../shared/models).
"""
import argparse, os, statistics, time

import torch

MODELS = {  # name -> input shape of one sample
    "mobilenet_v2_nsfwjs": (3, 224, 224),
    "ppocr_v4_rec": (3, 48, 320),
    "esrgan_medium_x2": (3, 64, 64),
}


def kernels(per_sample):
    """ATen's flags as the engine sets them (per_sample) or as they are by default."""
    return (torch.backends.mkldnn.flags(enabled=not per_sample), torch.backends.nnpack.flags(enabled=not per_sample))


def outputs(model, x, batch, per_sample):
    m, n = kernels(per_sample)
    with m, n, torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def forward_seconds(model, x, repeats):
    """Medians of one forward with ATen's choice and with the per-sample kernel, alternated so that
    both see the same load."""
    times = {False: [], True: []}
    with torch.no_grad():
        for k in range(repeats + 2):
            for per_sample in (False, True):
                m, n = kernels(per_sample)
                with m, n:
                    t = time.perf_counter()
                    model(x)
                    if k >= 2:  # two warm-up rounds
                        times[per_sample].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default="../shared")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| model | kernels | outputs that differ from batch 32 at batch 1 / 4 / 8 / 16 | forward s (batch %d) | ratio |" % a.batch)
    print("|---|---|---|---|---|")
    for name, shape in MODELS.items():
        path = os.path.join(a.shared, "models", name + ".pt")
        model = torch.jit.load(path).eval()
        x = torch.rand(32, *shape)
        seconds = forward_seconds(model, x[:a.batch], a.repeats)
        for per_sample in (False, True):
            ref = outputs(model, x, 32, per_sample)
            differ = [int((outputs(model, x, b, per_sample) != ref).sum()) for b in (1, 4, 8, 16)]
            label = "per-sample (engine)" if per_sample else "ATen's choice"
            ratio = seconds[per_sample] / seconds[False]
            print(f"| {name} | {label} | {' / '.join(map(str, differ))} of {ref.numel()} | {seconds[per_sample]:.3f} | {ratio:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
