"""Model names to model folders: what `model.path` may say, and where each lives.

``smollm2`` -> the converted SmolLM2-135M-Instruct folder (`smollm2.py`); ``smollm2-toy`` -> it
after the short SFT on the toy answer format (`smollm2_toy.py`); ``toy`` -> the prepared tiny
model (`prepare.py`); an existing folder with a config.json as it is; an ``owner/name`` hub id
from the local HF cache (downloaded only when the hub is reachable). The builders are imported
when their name is asked for, so resolving a folder never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path

from gdro_ray.errors import UserError


def resolve_model_path(name: str | Path) -> Path:
    """A model folder for `name`: ``smollm2``, ``toy``, an existing folder, or a hub id."""
    name = str(name)
    if name == "smollm2":
        from gdro_ray.models.smollm2 import convert_smollm2

        return convert_smollm2()
    if name == "smollm2-toy":  # SmolLM2 after a short SFT on the toy task's answer format
        from gdro_ray.models.smollm2_toy import prepare_smollm2_toy

        return prepare_smollm2_toy()
    if name == "toy":
        from gdro_ray.models.prepare import prepare_toy_model

        return Path(prepare_toy_model())
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"model folder {local} has no config.json")
        return local
    if local.suffix or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise UserError(f"model {name!r}: not a folder, and not 'smollm2', 'smollm2-toy', 'toy' or an owner/name hub id")
    return _hub_snapshot(name)


def _hub_snapshot(repo_id: str) -> Path:
    """A hub model from the local HF cache, or downloaded when the hub is reachable."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline))
    except Exception as e:
        hint = " (HF_HUB_OFFLINE=1 and it is not in the local HF cache)" if offline else ""
        raise UserError(f"model {repo_id!r} not found{hint}: use 'toy', 'smollm2' or a local model folder "
                        f"({type(e).__name__})") from None
