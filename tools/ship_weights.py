"""Copy a finished training run into weights/: the EMA model (float32) and its snapshots (float16).

    python tools/ship_weights.py runs/sprites_ddpm weights/sprites_ddpm.safetensors ["note for the card"]

The model stays in float32: in half precision, DDIM's deterministic trajectories drifted by up to
111 of 255 grey levels in single pixels (measured on the shipped model), and 3 MB saved is not worth
re-measuring quality for. The training-progress snapshots are only looked at, so they stay float16.
"""

import json
import shutil
import sys
from pathlib import Path

import torch

from diffusion_utilities import load_model, save_model
from diffusion_utilities.devices import hardware_name


def main(run: Path, target: Path, note: str = "") -> None:
    model, card = load_model(run / "model.safetensors")
    measured = json.loads((run / "model.json").read_text()).get("evaluation")
    card["hardware"] = hardware_name(torch.device("cpu")) if "CPU" in card.get("hardware", "") else card["hardware"]
    if note:
        card["note"] = note
    shipped = save_model(model, target, card)
    if measured:  # `evaluate --update-card` on the run: keep its table with the shipped copy (same tensors)
        sidecar = target.with_suffix(".json")
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "evaluation": measured}, indent=2) + "\n")
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, sha256 {shipped['sha256'][:12]}…")
    snap_dir = target.parent / "snapshots"
    snap_dir.mkdir(exist_ok=True)
    for snap in sorted((run / "snapshots").glob("epoch_*.safetensors")):
        shutil.copy(snap, snap_dir / snap.name)  # already half precision, with their own cards
        shutil.copy(snap.with_suffix(".json"), snap_dir / snap.with_suffix(".json").name)
        print(f"copied {snap.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
