"""Load PixelRNN checkpoints from folders or the Hugging Face Hub, write model cards, push to the Hub.

    model = load("diagonal_bilstm_mnist")       # checkpoints/<name>, a folder, or a Hub repo id
    python -m pixelrnn.hub card CHECKPOINT_DIR [--repo-id USER/NAME]
    python -m pixelrnn.hub push CHECKPOINT_DIR USER/NAME [--private]

This module finds a checkpoint (checkpoints/<name>, a folder, the Hub cache, the Hub) and publishes one;
pixelrnn.checkpoints reads and validates the folder (config.json and model.safetensors only: pickle weights
are refused), and pixelrnn.card writes its model card.

Hub settings (HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN) are read from the
environment at call time, not only when huggingface_hub is imported.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from pixelrnn.card import write_model_card
from pixelrnn.checkpoints import (
    CARD,
    CONFIG,
    LEARNING_CURVE,
    METRICS,
    ON_CLASS_SHEET,
    SAMPLES,
    WEIGHTS,
    CheckpointError,
    load_folder,
)
from pixelrnn.model import MultiScalePixelRNN, PixelRNN

CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
PROBE_TIMEOUT_S = 2.0
UPLOAD_FILES = (CONFIG, WEIGHTS, METRICS, CARD, SAMPLES, LEARNING_CURVE, ON_CLASS_SHEET)


class HubUnreachableError(CheckpointError, ConnectionError):
    """The Hub cannot be reached (or offline mode is on) and the checkpoint is not cached.

    Subclasses both CheckpointError and ConnectionError (an OSError), so either catches it.
    """


# --- Hub settings, read at call time -----------------------------------------------------------

def _env_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """The Hub URL: $HF_ENDPOINT, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set."""
    if "HF_HUB_OFFLINE" in os.environ or "TRANSFORMERS_OFFLINE" in os.environ:
        return _env_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE


# --- resolving a name to a local folder ---------------------------------------------------------

def _local_folder(name: str) -> Path | None:
    """checkpoints/<name> (staying inside checkpoints/), then `name` as a folder path."""
    root = CHECKPOINTS_DIR.resolve()
    candidate = (root / name).resolve()
    if candidate != root and candidate.is_relative_to(root) and candidate.is_dir():
        return candidate
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def probe_hub(repo_id: str, endpoint: str | None = None, timeout: float | None = None) -> None:
    """HEAD {endpoint}/{repo_id}/resolve/main/config.json; raise HubUnreachableError if no HTTP answer.

    Any HTTP answer (even 404 or 401) counts as reachable, except a proxy or gateway failure (407, 502,
    503, 504). The request runs in a daemon thread, so not even a hanging DNS lookup can outlast
    `timeout` (default PROBE_TIMEOUT_S) by more than 0.5 s.
    """
    endpoint = endpoint or hub_endpoint()
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    url = f"{endpoint}/{repo_id}/resolve/main/{CONFIG}"
    result: queue.Queue[BaseException | None] = queue.Queue()

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # a redirect is an answer: do not follow it
            return None

    def _head() -> None:
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
            result.put(None)
        except urllib.error.HTTPError as err:
            result.put(err if err.code in (407, 502, 503, 504) else None)
        except Exception as err:  # noqa: BLE001 - any failure to get an answer is reported below
            result.put(err)

    threading.Thread(target=_head, name="pixelrnn-hub-probe", daemon=True).start()
    try:
        error = result.get(timeout=timeout + 0.5)
    except queue.Empty:
        error = TimeoutError(f"no answer within {timeout:.1f} s")
    if error is not None:
        reason = f"HTTP {error.code}" if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", error)
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {repo_id!r} ({reason}), and it is not "
            f"in the local cache ({hub_cache_dir()}). Check the network or HF_ENDPOINT, or pass a local folder."
        ) from error


def _download(
    repo_id: str, filename: str, revision: str | None, local_only: bool, optional: bool = False
) -> Path | None:
    """hf_hub_download with errors turned into CheckpointError; None if missing and (local_only or optional)."""
    endpoint = hub_endpoint()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir(), endpoint=endpoint,
                                    local_files_only=local_only, library_name="pixelrnn"))
    except RepositoryNotFoundError as err:
        raise CheckpointError(f"{repo_id!r}: no such model repo on {endpoint} (a private or gated repo needs "
                              f"HF_TOKEN), and no folder of that name in {CHECKPOINTS_DIR}") from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"{repo_id!r}: revision {revision!r} not found on {endpoint}") from err
    except RemoteEntryNotFoundError as err:
        if optional:
            return None
        hint = (" pixelrnn loads weights only from model.safetensors (pickle files can run arbitrary code)"
                if filename == WEIGHTS else " it is not a pixelrnn checkpoint")
        raise CheckpointError(f"{repo_id!r} on {endpoint} has no {filename}:{hint}") from err
    except LocalEntryNotFoundError as err:
        if local_only or optional:
            return None
        raise HubUnreachableError(f"downloading {filename} of {repo_id!r} from {endpoint} failed: {err}") from err
    except EntryNotFoundError:  # e.g. cached as known-missing
        if local_only or optional:
            return None
        raise
    except HfHubHTTPError as err:
        raise CheckpointError(f"downloading {filename} of {repo_id!r} from {endpoint} failed: {err}") from err


def _download_checkpoint(repo_id: str, local_only: bool) -> Path | None:
    """Snapshot folder holding config.json and model.safetensors of one commit, or None if not cached."""
    config = _download(repo_id, CONFIG, None, local_only)
    if config is None:
        return None
    commit = config.parent.name  # snapshots/<commit>/config.json: fetch the other files at that same commit
    revision = commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None
    weights = _download(repo_id, WEIGHTS, revision, local_only)
    if weights is None:
        return None
    _download(repo_id, METRICS, revision, local_only, optional=True)
    return config.parent


def resolve(name_or_path: str | Path) -> Path:
    """The local folder for a checkpoint name, downloading it from the Hub if needed.

    Order: checkpoints/<name> in the repo root, a local folder, the Hub cache, the Hub itself.
    Raises CheckpointError (HubUnreachableError when the Hub cannot be reached or offline mode is on).
    """
    name = str(name_or_path)
    folder = _local_folder(name)
    if folder is not None:
        return folder
    shipped = sorted(p.name for p in CHECKPOINTS_DIR.glob("*") if (p / CONFIG).is_file())
    unknown = (f"no model named {name!r}: the checkpoints here are {', '.join(shipped) or '(none)'}; a local "
               f"folder holding config.json and model.safetensors, or a Hugging Face Hub repo id 'user/name', "
               f"also work")
    if "/" not in name.strip("/"):  # a bare name is a checkpoint's, never a Hub id of ours
        raise CheckpointError(unknown)
    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise CheckpointError(unknown) from err
    cached = _download_checkpoint(name, local_only=True)
    if cached is not None:
        return cached
    if hub_offline():
        raise HubUnreachableError(f"{name!r} is not in the Hugging Face cache ({hub_cache_dir()}) and offline mode "
                                  f"is on (HF_HUB_OFFLINE=1): download it once online or pass a local folder")
    probe_hub(name)
    return _download_checkpoint(name, local_only=False)


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> PixelRNN | MultiScalePixelRNN:
    """Load a checkpoint by name (checkpoints/<name>), folder path or Hub repo id, in eval mode.

    Raises CheckpointError with a clear message for anything missing or invalid, and
    HubUnreachableError (a CheckpointError and ConnectionError) when the Hub is needed but
    cannot be reached within ~PROBE_TIMEOUT_S or offline mode is on.
    """
    return load_folder(resolve(name_or_path), device)


# --- pushing -------------------------------------------------------------------------------------------

def push(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Validate a checkpoint folder, refresh its model card and commit its files to a Hub model repo.

    Uploads config.json, model.safetensors, metrics.json, README.md, samples.png and learning_curve.png (those present)
    in one commit; `private` applies when the repo is created. Returns the commit URL.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    load_folder(folder)
    write_model_card(folder, repo_id)
    api = HfApi(endpoint=hub_endpoint())
    api.create_repo(repo_id, private=private, exist_ok=True)
    files = [name for name in UPLOAD_FILES if (folder / name).is_file()]
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=folder / name) for name in files]
    info = api.create_commit(repo_id, operations=operations,
                             commit_message=message or f"Upload pixelrnn checkpoint ({', '.join(files)})")
    return info.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelrnn.hub", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="(re)write CHECKPOINT_DIR/README.md")
    card.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR")
    card.add_argument("--repo-id", help="repo id for the usage snippet (default: the folder's name)")
    upload = commands.add_parser("push", help="validate, write the card and upload a checkpoint to the Hub")
    upload.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR")
    upload.add_argument("repo_id", metavar="REPO_ID")
    upload.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    upload.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)
    try:
        if args.command == "card":
            print(write_model_card(args.checkpoint, args.repo_id))
        else:
            print(push(args.checkpoint, args.repo_id, private=args.private, message=args.message))
    except (CheckpointError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
