"""Weights on disk: safetensors plus a JSON card, written atomically, loaded safely.

A weights file ``NAME.safetensors`` carries its card (model, diffusion and training
config, class names, ...) in the safetensors header, so it always rebuilds its own
model. ``NAME.json`` beside it is the same card for people, plus the file's SHA-256,
which :func:`load_model` checks. Nothing here unpickles: the course's legacy ``.pth``
state dicts are read with ``torch.load(..., weights_only=True)`` only.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .checks import is_whole, whole_number
from .data import check_class_names
from .errors import BadInput
from .files import atomic_write, check_regular_file, read_json_object, sha256_file
from .model import ContextUnet, ModelConfig
from .schedule import (DiffusionConfig, FlowSchedule, NoiseSchedule, check_diffusion_config, diffusion_from_card,
                       schedule_from_card)

__all__ = [
    "load_model_and_schedule",
    "save_tensors",
    "read_tensors",
    "save_model",
    "load_model",
    "read_card",
    "read_card_file",
    "card_path",
    "load_legacy_pth",
    "check_state_dict",
    "export_course_weights",
]


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], card: dict) -> None:
    """Write tensors and a JSON-able card into one safetensors file, atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    def write(tmp):
        try:
            save_file(flat, str(tmp), metadata={"card": json.dumps(card)})
        except SafetensorError as e:  # not an OSError: a full disk would be a traceback
            code = errno.ENOSPC if "StorageFull" in str(e) or "code: 28" in str(e) else errno.EIO
            raise OSError(code, f"{os.strerror(code)} while writing ({str(e)[:160]})", str(path)) from None

    atomic_write(path, write)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file written by :func:`save_tensors`: (tensors, card)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"weights file not found: {path}")
    if path.is_dir():
        raise BadInput(f"{path} is a folder; pass the .safetensors file inside it")
    check_regular_file(path, "pass a .safetensors file")
    if path.stat().st_size == 0:
        raise BadInput(f"weights file is empty: {path}; re-train or re-copy it")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, ValueError, OSError) as e:
        raise BadInput(f"{path} is not a readable safetensors file (truncated or another format): {e}") from None
    try:
        card = json.loads(meta["card"]) if "card" in meta else {}
    except (ValueError, RecursionError) as e:  # bad JSON, an integer of too many digits, nesting too deep
        raise BadInput(f"{path}'s header holds a card that is not valid JSON ({str(e)[:120]}); "
                       f"re-train or re-copy the file") from None
    if not isinstance(card, dict):
        raise BadInput(f"{path}'s header card is not a JSON object; re-train or re-copy the file")
    check_card_sections(card, path)
    return tensors, card


_SECTIONS = ("model", "diffusion", "training", "data", "init_from", "sampler", "distillation", "evaluation", "protocol")


def check_card_sections(card: dict, path: Path) -> None:
    """The shape of a card's sections, before anything reads them: each an object where there is one, and what
    the commands take from the sampler, distillation and evaluation entries of the right kind. One BadInput line."""
    def bad(field, what, value):
        raise BadInput(f"{path}'s card: {field} must be {what}, got {json.dumps(value)[:60]}; re-train, or correct the card")

    for name in _SECTIONS:
        if card.get(name) is not None and not isinstance(card[name], dict):
            bad(name, "an object", card[name])
    sampler = card.get("sampler") or {}
    if "sampler" in sampler and not isinstance(sampler["sampler"], str):
        bad("sampler.sampler", "a sampler's name", sampler["sampler"])
    if "steps" in sampler and not (is_whole(sampler["steps"]) and sampler["steps"] >= 1):
        bad("sampler.steps", "a whole number ≥ 1", sampler["steps"])
    rounds = (card.get("distillation") or {}).get("rounds", [])
    if not (isinstance(rounds, list) and all(isinstance(r, dict) for r in rounds)):
        bad("distillation.rounds", "a list of objects, one per round", rounds)
    for key, table in (card.get("evaluation") or {}).items():
        if not (isinstance(table, dict) and isinstance(table.get("rows", []), list)
                and all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in table.get("rows", []))):
            bad(f"evaluation.{key}", "an object whose rows are objects with a name", table)


def card_path(path: Path) -> Path:
    """The JSON card beside a weights file: NAME.json for NAME.safetensors."""
    return Path(path).with_suffix(".json")


def read_card(path: Path) -> dict:
    """The card stored in a weights file's header."""
    return read_tensors(path)[1]


def read_card_file(path: Path) -> dict:
    """A ``NAME.json`` card beside a weights file, as a dict, or one BadInput line."""
    return read_json_object(path, "restore the card, or delete it (the .safetensors file carries the same card, "
                                  "less the SHA-256)")


def save_model(model: ContextUnet, path: Path, card: dict, half: bool = False) -> dict:
    """Save a model's weights and card; returns the card as written, with its SHA-256.

    half=True stores float16 (half the size); loading converts back to float32.
    """
    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    card = {**card, "model": vars(model.config), "dtype": "float16" if half else "float32"}
    save_tensors(path, state, card)
    card_with_hash = {**card, "file": Path(path).name, "sha256": sha256_file(path)}
    atomic_write(card_path(path), lambda tmp: tmp.write_text(json.dumps(card_with_hash, indent=2) + "\n"))
    return card_with_hash


def check_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str = "weights") -> None:
    """Raise one BadInput line saying how ``state`` differs from ``model``'s parameters.

    Besides names and shapes: a floating-point tensor of the model must be floating point in
    ``state`` and finite (NaN or infinite weights sample black sprites, with no error).
    ``source``: what the messages call ``state``, e.g. its file.
    """
    expected = model.state_dict()
    if hasattr(model, "config"):
        _check_config_fits(state, vars(model.config), "model has")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        hint = " — saved by the course's old ResidualConvBlock?" if any("shortcut" in k for k in missing) else ""
        raise BadInput(f"weights do not fit this model: {' and '.join(parts)} tensors{hint}")
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise BadInput(f"weights do not fit this model: {k} is {tuple(state[k].shape)}, model has {tuple(v.shape)}")
    fix = "re-train or re-copy the weights"
    for k, v in expected.items():
        if v.is_floating_point() and not state[k].is_floating_point():
            raise BadInput(f"{source}: {k} is {str(state[k].dtype).removeprefix('torch.')}, not floating point; {fix}")
        if v.is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise BadInput(f"{source}: {k} holds NaN or infinite values; {fix}")


def _check_config_fits(state: dict[str, torch.Tensor], config: dict, has: str) -> None:
    """One BadInput line where the tensors' shapes show another ContextUnet config than ``config``'s
    (read from the shapes, so that it can be checked before a model of that config is built)."""
    if "init_conv.conv1.0.weight" not in state or "contextembed1.model.0.weight" not in state:
        return  # check_state_dict names the missing tensors
    found = {
        "in_channels": state["init_conv.conv1.0.weight"].shape[1],
        "n_feat": state["init_conv.conv1.0.weight"].shape[0],
        "n_cfeat": state["contextembed1.model.0.weight"].shape[1],
    }
    if "up0.0.weight" in state:
        found["height"] = 4 * state["up0.0.weight"].shape[2]
    for name, value in found.items():
        if name in config and config[name] != value:
            raise BadInput(f"weights were trained with {name}={value}, {has} {config[name]}")


def _check_data_entry(data) -> None:
    """The card's record of the training data: its sprite count and, for procedural sprites, the seed
    (evaluate regenerates them for its novelty score)."""
    if not isinstance(data, dict):
        return  # none recorded (evaluate says it needs procedural sprites)
    if "count" in data or data.get("source") == "procedural":
        whole_number(data.get("count"), "data.count", 1)
    if data.get("source") == "procedural":
        whole_number(data.get("seed"), "data.seed", 0, 2**63 - 1)


def _model_from_card(path: Path, tensors: dict, card: dict) -> ContextUnet:
    """A fresh ContextUnet as ``card`` describes it, after every entry it relies on is checked against the
    tensors' shapes (before a model of the card's size is built): one BadInput line naming the file."""
    try:  # a card from another version may name fields this one does not know
        config = ModelConfig(**card["model"])
        diffusion = diffusion_from_card(card)
    except TypeError as e:
        raise BadInput(f"{path} has a card this version cannot use ({e}); "
                       f"update diffusion_utilities or re-train") from None
    try:
        check_diffusion_config(diffusion)
        _check_data_entry(card.get("data"))
        _check_config_fits(tensors, vars(config), "its card says")
        return ContextUnet(**asdict(config))
    except BadInput as e:
        raise BadInput(f"{path}'s card: {e}; re-train, or correct the card") from None


def load_model(path: Path, device="cpu", verify_hash: bool = True) -> tuple[ContextUnet, dict]:
    """Rebuild a ContextUnet from a weights file; returns (model in eval mode, card).

    If ``NAME.json`` sits beside the file and records a SHA-256, the file must match it.
    """
    path = Path(path)
    tensors, card = read_tensors(path)
    _refuse_other_kinds(path, tensors, card)
    sidecar = card_path(path)
    if verify_hash and os.path.lexists(sidecar):
        expected = read_card_file(sidecar).get("sha256")
        if expected is not None and not (isinstance(expected, str) and re.fullmatch(r"[0-9a-fA-F]{64}", expected)):
            raise BadInput(f"{sidecar}: sha256 must be 64 hex digits (what sha256sum prints), got {str(expected)[:80]!r}; "
                           f"correct it, or remove the entry")
        if expected and sha256_file(path) != expected.lower():  # hex digits in either case
            raise BadInput(f"{path} does not match the SHA-256 in {sidecar.name}; the file is damaged or was replaced")
    check_class_names(card.get("class_names"), f"{path}'s card", "re-train, or correct the card")
    if "model" not in card:
        raise BadInput(f"{path} has no model card; it was not written by diffusion_utilities")
    model = _model_from_card(path, tensors, card)
    check_state_dict(tensors, model, str(path))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    return model.to(device).eval(), card


def load_model_and_schedule(path: Path, device="cpu") -> tuple[ContextUnet, NoiseSchedule | FlowSchedule, dict]:
    """``load_model``, and the schedule its card says it was trained with; returns (model, schedule, card).

    What sampling from a weights file needs: ``model, schedule, card = load_model_and_schedule(path)``.
    """
    model, card = load_model(path, device)
    return model, schedule_from_card(card), card


def _refuse_other_kinds(path: Path, tensors: dict, card: dict) -> None:
    """One BadInput line when ``path`` is one of our other safetensors files, not a ContextUnet's weights."""
    if card.get("kind") == "sprite-classifier":
        raise BadInput(f"{path} is the evaluation classifier, not a ContextUnet; pass a model's weights "
                       f"(e.g. weights/sprites_ddpm.safetensors): the classifier is only for evaluate's --classifier")
    if "state" in card or any(k.startswith(("ema.", "optim.")) for k in tensors):  # training.py's checkpoint layout
        raise BadInput(f"{path} is a training checkpoint, not model weights; use {path.parent / 'model.safetensors'} "
                       f"from the same folder, or continue training with `train --out {path.parent} --resume`")


def load_legacy_pth(path: Path) -> dict[str, torch.Tensor]:
    """Read one of the course's ``.pth`` state dicts without running any code from it."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"weights file not found: {path}")
    check_regular_file(path, "pass a .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"refused to load {path}: not a plain tensor state dict ({first[:160]})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BadInput(f"{path} is not a state dict of tensors")
    return state


def export_course_weights(model_path: Path, out_dir: Path, snapshots: dict[int, Path] | None = None,
                          overwrite: bool = False) -> list[Path]:
    """Write our weights under the labs' file names, as tensor-only ``.pth`` state dicts.

    The labs load ``model_trained.pth`` / ``context_model_trained.pth`` (and ``*_31.pth``, the last of
    their 32 epochs) with ``torch.load``; our one model samples with and without context, so every
    name gets the same tensors. A snapshot taken after epoch e (training counts from 1) becomes
    ``model_{e-1}.pth``, the labs' 0-based epoch numbering: epochs 1, 2, 4 give model_0, model_1,
    model_3. Every input is loaded and checked before anything is written. Load the results with
    ``torch.load(path, weights_only=True)``.

    A file already there that holds other tensors (the course's own download, say, which the labs
    read from the same names) is refused unless ``overwrite``; one that holds the same tensors, from
    an earlier export, is simply written again.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} is a file; pass a folder to write the .pth files into")
    jobs = _export_jobs(model_path, snapshots or {})
    states, cards = _course_states(dict.fromkeys(path for _, path in jobs))  # each file once, in the jobs' order
    model_card = cards[model_path]  # its snapshots come from the same run, with the same config
    targets = [(out_dir / f"{prefix}{name}.pth", states[path]) for name, path in jobs for prefix in ("", "context_")]
    folders = [target for target, _ in targets if target.is_dir()]
    if folders:
        raise BadInput(f"{folders[0]} is a folder, but the labs' weights are written there; move it or choose another --out")
    if not overwrite:
        differ = [target for target, state in targets if target.exists() and not _holds(target, state)]
        if differ:
            count = f" ({len(differ)} of the {len(targets)} files to write do)" if len(differ) > 1 else ""
            raise BadInput(f"{differ[0]} already exists and holds other weights{count}; pass --overwrite to "
                           f"replace them, or choose another --out")
    _warn_if_labs_differ(model_path, model_card)  # once nothing can be refused: a refusal is the only line
    for target, state in targets:
        atomic_write(target, lambda tmp, state=state: _save_pth(state, tmp))
    return [target for target, _ in targets]


def _export_jobs(model_path: Path, snapshots: dict[int, Path]) -> list[tuple[str, Path]]:
    """(the labs' name, the weights it gets) for the final weights and each snapshot, its epoch checked."""
    snaps = {}
    for epoch, path in snapshots.items():
        if not is_whole(epoch) or epoch < 1:
            raise BadInput(f"snapshot {path} has epoch {epoch!r}; the labs' model_N.pth is the weights after "
                           f"epoch N+1, so snapshot epochs count from 1 (epoch_01.safetensors) — rename or remove it")
        snaps[epoch] = Path(path)
    jobs = [("model_trained", model_path), ("model_31", model_path)]
    return jobs + [(f"model_{e - 1}", p) for e, p in sorted(snaps.items()) if e != 32]  # model_31 is the final weights


def _course_states(paths) -> tuple[dict[Path, dict], dict[Path, dict]]:
    """Each file's state dict (contiguous tensors, as the labs' torch.load expects) and card, each checked to be a
    noise-predicting model."""
    states, cards = {}, {}
    for path in paths:
        model, card = load_model(path)
        prediction = (card.get("diffusion") or {}).get("prediction", "eps")
        if (card.get("diffusion") or {}).get("objective", "diffusion") != "diffusion":
            raise BadInput(f"{path} is a flow-matching model, but the labs' samplers run a diffusion model's steps "
                           f"on its noise prediction; export a course model (e.g. weights/sprites_ddpm.safetensors)")
        if prediction != "eps":
            raise BadInput(f"{path} predicts {prediction}, but the labs' samplers read the network's output as "
                           f"the noise; export a course model (e.g. weights/sprites_ddpm.safetensors)")
        states[path], cards[path] = {k: v.contiguous() for k, v in model.state_dict().items()}, card
    return states, cards


def snapshot_of(model_card: dict, snapshot_card: dict) -> bool:
    """Whether a snapshot comes from the run that made the model, or from the run it was fine-tuned from
    (the shipped course model's snapshots are its first run's): the cards' commands say so."""
    runs = {model_card.get("command"), (model_card.get("init_from") or {}).get("command")} - {None}
    return snapshot_card.get("command") in runs


def _save_pth(state: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save, with a failed write (a full disk: "unexpected pos 704 vs 598") as the OSError it is."""
    try:
        torch.save(state, path)
    except RuntimeError as e:
        raise OSError(errno.EIO, f"write failed; is the disk full? (torch.save: {str(e).splitlines()[0][:160]})",
                      str(path)) from None


def _holds(path: Path, state: dict[str, torch.Tensor]) -> bool:
    """Whether the .pth at ``path`` is a plain state dict with exactly these tensors."""
    try:
        saved = load_legacy_pth(path)
    except BadInput:
        return False
    return saved.keys() == state.keys() and all(saved[k].dtype == v.dtype and torch.equal(saved[k], v)
                                                for k, v in state.items())


def _warn_if_labs_differ(path: Path, card: dict) -> None:
    """Print one line to stderr when the labs' code, which hard-codes the course's settings, cannot use ``card``."""
    course = {"model": asdict(ModelConfig()), "diffusion": asdict(DiffusionConfig())}  # the defaults are the course's
    diffs = [f"{k}={card.get(key, {}).get(k, v)} (the labs use {v})"
             for key, values in course.items() for k, v in values.items() if card.get(key, {}).get(k, v) != v]
    if diffs:
        print(f"warning: {path} has {', '.join(diffs)}; the labs' code will not load or sample it unchanged",
              file=sys.stderr)
