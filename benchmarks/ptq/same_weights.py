"""Whether the models a benchmark run saved at other batch sizes (run.py --batch-sizes; files
NAME_b16.pt, NAME_b32.pt beside NAME.pt, batch 8) have the same parameters, bit for bit, as batch 8's.

  python same_weights.py --work DIR
"""
import argparse, glob, os, re

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    a = p.parse_args()
    print("| model | batch 8 against | parameters that differ |")
    print("|---|---|---|")
    for path in sorted(glob.glob(os.path.join(a.work, "*_b[0-9]*.pt"))):
        m = re.match(r"(.*)_b(\d+)\.pt$", path)
        base = m.group(1) + ".pt"
        if not os.path.exists(base):
            continue
        ref = dict(torch.jit.load(base).named_parameters())
        other = dict(torch.jit.load(path).named_parameters())
        differ = sum(not torch.equal(v, other[k]) for k, v in ref.items())
        print(f"| {os.path.basename(base)} | batch {m.group(2)} | {differ} of {len(ref)} |")


if __name__ == "__main__":
    main()
