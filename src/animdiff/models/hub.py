"""Hugging Face hub ids for checkpoints: the local cache first, the network only when reachable.

Local files never come here. A hub id is only tried when the user named one, and when the hub
cannot be reached we say so at once instead of letting the hub client retry for ~23 seconds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from animdiff.errors import ModelNotFoundError, OfflineError

# Only what an SD1.5 diffusers repo needs: configs, tokenizer files and safetensors weights.
PATTERNS = [
    "model_index.json",
    "*/config.json",
    "tokenizer/*",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
]


def _offline_by_setting() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_checkpoint(repo_id: str) -> Path:
    """A local folder holding the diffusers-format repo `repo_id` (cached, or downloaded now)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        pass
    if _offline_by_setting() or not hub_reachable():
        raise OfflineError(
            f"{repo_id!r} is not a local file or folder and is not in the Hugging Face cache, "
            "and the hub cannot be reached (offline). Give the path of a local checkpoint instead."
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=PATTERNS))
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"hub repository {repo_id!r} could not be downloaded: {exc}") from None
