"""The Hugging Face Hub, through the optional ``huggingface_hub`` (``pip install 'betavae[hub]'``):
a repo id resolved to its folder in the local Hub cache (offline) or downloaded, and uploads."""
from __future__ import annotations

import os
import re
from pathlib import Path

HUB_EXTRA = "pip install 'betavae[hub]'"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` with the Hub's characters (a local path that exists always wins)."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not text.endswith((".", "-"))


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve(name: str | Path, revision: str | None = None, local_files_only: bool | None = None) -> Path:
    """The local folder of ``name``: a folder as given, or a Hub repo id's snapshot (from the local
    Hub cache first; downloaded only when that misses, the Hub may be reached and
    ``local_files_only`` is not True)."""
    path = Path(name).expanduser()
    if path.exists() or not looks_like_repo_id(str(name)):
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such folder (and not a Hub repo id of the form owner/name)")
        return path
    hub = _hub()
    if hub is None:
        raise FileNotFoundError(f"{name} is not a local folder; to load it as a Hugging Face Hub repo id, install "
                                f"the hub extra ({HUB_EXTRA})")
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hub.snapshot_download(str(name), revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        if local_files_only or (local_files_only is None and _offline()):
            raise FileNotFoundError(
                f"{name} is not in the local Hugging Face Hub cache ({hub.constants.HF_HUB_CACHE}) and downloads are "
                "off (HF_HUB_OFFLINE or local_files_only); download it once while online") from None
    try:
        return Path(hub.snapshot_download(str(name), revision=revision, library_name="betavae"))
    except Exception as exc:  # network, authentication, missing repo: one readable message
        raise FileNotFoundError(f"could not fetch {name} from the Hugging Face Hub: {exc}") from None


def require_hub():
    """``huggingface_hub``, or a ValueError naming the extra."""
    hub = _hub()
    if hub is None:
        raise ValueError(f"--push-to needs the hub extra ({HUB_EXTRA})")
    return hub


def push(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Uploads an export folder to ``repo_id`` (created if missing); returns the commit's URL."""
    hub = require_hub()
    try:
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message="Upload betavae export")
    except Exception as exc:  # network, authentication, a bad repo id: one readable message; the export stays
        raise OSError(f"could not push {folder} to the Hugging Face Hub repo {repo_id}: "
                      f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return str(getattr(commit, "commit_url", commit))
