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
"""
import glob, os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def png(path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


class Esrgan:
    name, file = "esrgan_medium_x2", "esrgan_medium_x2.pt"
    metric = "PSNR dB"
    higher_is_better = True

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


class Mobilenet:
    name, file = "mobilenet_v2_nsfwjs", "mobilenet_v2_nsfwjs.pt"
    metric = "top-1 agreement"
    higher_is_better = True

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


class Ppocr:
    name, file = "ppocr_v4_rec", "ppocr_v4_rec.pt"
    metric = "CER % (held-out 168 lines)"
    higher_is_better = False

    def __init__(self, data):
        d = os.path.join(data, "ocr_lines")
        self.lines = []
        with open(os.path.join(d, "labels.tsv"), encoding="utf-8") as f:
            for row in f:
                name, text = row.rstrip("\n").split("\t", 1)
                self.lines.append((os.path.join(d, name), text))
        keys = os.path.join(os.path.dirname(os.path.dirname(d)), "models", "ppocr_keys_v1.txt")
        self.keys_path = keys

    def set_models_dir(self, models):
        with open(os.path.join(models, "ppocr_keys_v1.txt"), encoding="utf-8") as f:
            self.chars = [""] + [l.rstrip("\n") for l in f] + [" "]

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


TASKS = {t.name: t for t in (Esrgan, Mobilenet, Ppocr)}
