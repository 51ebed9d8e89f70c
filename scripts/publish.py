"""Push every model folder of a zoo directory to the Hugging Face Hub.

    python scripts/publish.py --token hf_...        (or HF_TOKEN=hf_... in the environment; default --zoo-dir zoo/)
    python scripts/publish.py --dry-run             (list what would be pushed; no token needed)

Every sub-folder holding a ``config.json`` written by :func:`gsp_hub.hub.save_pretrained` is pushed to the Hub
repository its card was written for (the export's ``repo_id``, e.g. ``gsp-hub/gsp_tf_efficientnet_lite0.tin200``)
with :func:`gsp_hub.hub.push_to_hub`. Without a token the script refuses before any network call.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gsp_hub.hub import push_to_hub, read_export_metadata

ZOO_DIR = Path(__file__).resolve().parents[1] / "zoo"


def zoo_folders(zoo_dir: Path) -> list[tuple[Path, str]]:
    """(folder, repo_id) of every export under ``zoo_dir``; raises if a folder's card names no Hub repository."""
    if not zoo_dir.is_dir():
        raise FileNotFoundError(f"--zoo-dir {str(zoo_dir)!r} is not a directory; write it with scripts/train_zoo.py.")
    exports = []
    for folder in sorted(path for path in zoo_dir.iterdir() if (path / "config.json").is_file()):
        repo_id = read_export_metadata(folder).get("repo_id")
        if not repo_id:
            raise ValueError(f"{folder} was exported without a repo_id; run `gsp-hub card {folder} --repo-id ORG/NAME`.")
        exports.append((folder, repo_id))
    if not exports:
        raise FileNotFoundError(f"no export folders (with config.json) under {zoo_dir}.")
    return exports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-dir", type=Path, default=ZOO_DIR,
                        help="folder of export folders (train_zoo --out-dir; default: the repository's zoo/)")
    parser.add_argument("--token", default=os.environ.get("HF_TOKEN"), help="Hub write token (default: $HF_TOKEN)")
    parser.add_argument("--private", action="store_true", help="create the repositories as private")
    parser.add_argument("--dry-run", action="store_true", help="only list folder -> repository")
    args = parser.parse_args(argv)
    exports = zoo_folders(args.zoo_dir)
    if args.dry_run:
        for folder, repo_id in exports:
            print(f"{folder} -> {repo_id}")
        return 0
    if not args.token:
        parser.error("no Hub token: pass --token hf_... or set HF_TOKEN (nothing was pushed).")
    for folder, repo_id in exports:
        info = push_to_hub(folder, repo_id, token=args.token, private=args.private,
                           commit_message=f"Upload {repo_id.split('/')[-1]} (scripts/publish.py)")
        print(f"pushed {folder} -> {info.commit_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
