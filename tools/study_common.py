"""What the study tools share: judge A's protocol scoring (docs/evaluation.md) and a warmed-up EMA of a network."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion_utilities import sprites_to_tensor  # noqa: E402
from diffusion_utilities.data import procedural_dataset  # noqa: E402
from diffusion_utilities.evaluation import (PROTOCOL, REFERENCE_SEED, class_accuracy, classifier_features,  # noqa: E402
                                            load_classifier, sprite_fid)

CLASSES = 5


class JudgeA:
    """The protocol's sampling inputs (n sprites a seed, classes in turn, each seed's noise) and judge A's score."""

    def __init__(self, n: int = PROTOCOL["n"]):
        self.judge = load_classifier(Path("weights/sprite_classifier.safetensors"))
        reference = procedural_dataset(PROTOCOL["reference"], REFERENCE_SEED).sprites
        self.reference = classifier_features(self.judge, sprites_to_tensor(reference))
        self.labels = torch.arange(n) % CLASSES
        self.context = F.one_hot(self.labels, CLASSES).float()
        self.noise = [torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in PROTOCOL["seeds"]]

    def score(self, draw) -> str:
        """draw(noise) -> sprites in [-1, 1], once a seed; "sprite-FID mean (low-high), class accuracy a"."""
        xs = [draw(z) for z in self.noise]
        fids = [sprite_fid(self.judge, x, self.reference) for x in xs]
        acc = sum(class_accuracy(self.judge, x, self.labels) for x in xs) / len(xs)
        return f"sprite-FID {sum(fids) / len(fids):.1f} ({min(fids):.1f}-{max(fids):.1f}), class accuracy {acc:.3f}"


@torch.no_grad()
def ema_update(ema, model, step: int, decay: float = 0.999) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ with d warmed up as (1 + step)/(10 + step), as ``train`` does; buffers copied."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
