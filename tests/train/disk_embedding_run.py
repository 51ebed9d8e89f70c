"""Child process of test_disk_embeddings: embeds the test split of DATASET with the exported model EXPORT into
DIRECTORY with :func:`embed_split_to_disk`, BATCH images per batch and per process, recording its progress after
every batch; with KILL_AT, it SIGKILLs itself just before its KILL_AT-th write of progress.json (the first records 0
rows, the k-th the rows of k - 1 batches), with the rows of one more batch already written. Runs alone or under
``accelerate launch --multi_gpu --num_processes 2`` (two gloo processes).
Usage: disk_embedding_run.py EXPORT DATASET DIRECTORY BATCH [KILL_AT]"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
from test_disk_embeddings import prepared_split  # noqa: E402

import gsp_hub.train.disk_embeddings  # noqa: E402
from gsp_hub.io import write_json  # noqa: E402


def killed_at(write: int) -> Callable[..., None]:
    """``write_json`` that kills this process at its ``write``-th call instead of writing."""
    calls = []

    def writer(path: Path, data: Mapping[str, Any], **kwargs: Any) -> None:
        calls.append(path)
        if len(calls) == write:
            os.kill(os.getpid(), signal.SIGKILL)
        write_json(path, data, **kwargs)

    return writer


if __name__ == "__main__":
    export, dataset, directory, batch_size = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    if len(sys.argv) > 5:
        pytest.MonkeyPatch().setattr(gsp_hub.train.disk_embeddings, "write_json", killed_at(int(sys.argv[5])))
    logging.basicConfig(level=logging.INFO)
    accelerator = Accelerator(cpu=True)
    network, loader, fingerprint = prepared_split(accelerator, export, dataset, batch_size)
    gsp_hub.train.disk_embeddings.embed_split_to_disk(network, loader, accelerator, directory, fingerprint=fingerprint,
                                                      progress_every_s=0)
