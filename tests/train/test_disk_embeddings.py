"""Embeddings written to disk batch by batch (`gsp-hub eval --embeddings-dir`): the same embeddings and metrics as in
memory, memory maps of the directory's files, resume after a SIGKILL (one and two processes), reuse, refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from gsp_hub import load_model
from gsp_hub.cli import main
from gsp_hub.data import create_image_transforms, load_image_dataset, make_splits, with_image_transform
from gsp_hub.hub import save_pretrained
from gsp_hub.train.data import eval_loader
from gsp_hub.train.disk_embeddings import (
    EMBEDDINGS_FILE,
    LABELS_FILE,
    PROGRESS_FILE,
    embed_split_to_disk,
    split_fingerprint,
)
from gsp_hub.train.evaluation import embed_split
from gsp_hub.train.run_lock import RUN_LOCK_NAME, RunFolderInUse

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = 64  # test_resnet: a 2x2 feature map
BATCH = 6  # 80 test rows: 14 batches, the last of 2 rows; two processes: 7 steps of 12 rows, the last one padded
KILL_AT = 5  # the child dies before its 5th progress record: 18 rows recorded, 24 written


def prepared_split(accelerator: Accelerator, export: Path, dataset: Path,
                   batch_size: int) -> tuple[nn.Module, DataLoader, str]:
    """The exported model and a loader of the zero-shot test split of ``dataset`` at IMAGE_SIZE, prepared by
    ``accelerator``, and the split's fingerprint."""
    model = load_model(str(export))
    transforms = create_image_transforms(model, input_size=IMAGE_SIZE)
    rows = make_splits(load_image_dataset(str(dataset), progress=False)).test
    fingerprint = split_fingerprint(model, transforms.data_config, rows, split="test")
    network, loader = accelerator.prepare(model, eval_loader(with_image_transform(rows, transforms.eval),
                                                             batch_size, 0))
    return network, loader, fingerprint


def child_environment() -> dict[str, str]:
    """This checkout's gsp_hub, and this process's number of threads (or the float reductions differ in their last
    bits)."""
    root = str(HERE.parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


class BatchCounter:
    """Counts the batches a network embeds (a forward hook)."""

    def __init__(self, network: nn.Module) -> None:
        self.batches = 0
        network.register_forward_hook(self.count)

    def count(self, *_: object) -> None:
        self.batches += 1


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """An untrained GSP metric_net on timm's test_resnet (seeded), exported."""
    torch.manual_seed(0)
    model = timm.create_model("metric_net", backbone="test_resnet", embed_dim=16, num_prototypes=4)
    return save_pretrained(model.eval(), tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="module")
def reference(export, tiny_dataset) -> tuple[np.ndarray, np.ndarray]:
    """The test split's embeddings (80, 16) and labels (80,), embedded in memory in batches of BATCH."""
    accelerator = Accelerator(cpu=True)
    network, loader, _ = prepared_split(accelerator, export, tiny_dataset, BATCH)
    embeddings, labels = embed_split(network, loader, accelerator)
    return embeddings.numpy(), labels.numpy()


@pytest.fixture(scope="module")
def killed(tmp_path_factory, export, tiny_dataset) -> Path:
    """The directory a child process left when it was SIGKILLed in the middle of the embedding. Tests copy it."""
    directory = tmp_path_factory.mktemp("killed") / "embeddings"
    child = subprocess.run([sys.executable, str(HERE / "disk_embedding_run.py"), str(export), str(tiny_dataset),
                            str(directory), str(BATCH), str(KILL_AT)],
                           capture_output=True, text=True, timeout=600, env=child_environment())
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    return directory


def written_files(directory: Path) -> dict[str, int]:
    """The directory's files (not its lock, whose holder rewrites it) and their modification times (ns)."""
    return {path.name: path.stat().st_mtime_ns for path in directory.iterdir() if path.name != RUN_LOCK_NAME}


def embed_into(directory: Path, export: Path, dataset: Path, **options) -> tuple[np.memmap, np.ndarray, int]:
    """:func:`embed_split_to_disk` of the test split in batches of BATCH; also the number of batches embedded."""
    accelerator = Accelerator(cpu=True)
    network, loader, fingerprint = prepared_split(accelerator, export, dataset, BATCH)
    counter = BatchCounter(network)
    embeddings, labels = embed_split_to_disk(network, loader, accelerator, directory,
                                             **{"fingerprint": fingerprint, **options})
    return embeddings, labels, counter.batches


def test_the_files_hold_the_in_memory_embeddings_and_a_rerun_reuses_them(tmp_path, export, tiny_dataset, reference,
                                                                        caplog):
    directory = tmp_path / "embeddings"
    embeddings, labels, batches = embed_into(directory, export, tiny_dataset)
    assert batches == 14
    assert isinstance(embeddings, np.memmap) and Path(embeddings.filename) == directory / EMBEDDINGS_FILE
    assert embeddings.dtype == np.float32 and embeddings.shape == (80, 16) and not embeddings.flags.writeable
    np.testing.assert_allclose(embeddings, reference[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.load(directory / EMBEDDINGS_FILE), reference[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels, reference[1])
    np.testing.assert_array_equal(np.load(directory / LABELS_FILE), reference[1])
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    assert progress == {"fingerprint": progress["fingerprint"], "total_rows": 80, "dim": 16, "rows": 80,
                        "complete": True}
    assert sorted(written_files(directory)) == [EMBEDDINGS_FILE, LABELS_FILE, PROGRESS_FILE]

    written = written_files(directory)
    caplog.set_level("INFO", logger="gsp_hub.train.disk_embeddings")
    again, labels_again, batches = embed_into(directory, export, tiny_dataset)
    assert batches == 0 and "holds the complete embeddings of this split: nothing to embed" in caplog.text
    assert written_files(directory) == written
    np.testing.assert_array_equal(again, embeddings)
    np.testing.assert_array_equal(labels_again, labels)


def test_another_fingerprint_is_refused_before_any_work_unless_overwritten(tmp_path, export, tiny_dataset):
    directory = tmp_path / "embeddings"
    embed_into(directory, export, tiny_dataset)
    written = written_files(directory)
    accelerator = Accelerator(cpu=True)
    network, loader, fingerprint = prepared_split(accelerator, export, tiny_dataset, BATCH)
    counter = BatchCounter(network)
    with pytest.raises(ValueError) as refused:
        embed_split_to_disk(network, loader, accelerator, directory, fingerprint="another model")
    message = str(refused.value)
    assert str(directory) in message and fingerprint in message and "another model" in message
    assert "pass another directory, or overwrite it (gsp-hub eval --overwrite-embeddings)" in message
    assert counter.batches == 0
    assert written_files(directory) == written

    _, _, batches = embed_into(directory, export, tiny_dataset, fingerprint="another model", overwrite=True)
    assert batches == 14
    assert json.loads((directory / PROGRESS_FILE).read_text())["fingerprint"] == "another model"

    (directory / PROGRESS_FILE).write_text('{"rows": 80}\n')
    with pytest.raises(ValueError, match=rf"{PROGRESS_FILE} is not a progress file of gsp_hub's embeddings"):
        embed_split_to_disk(network, loader, accelerator, directory, fingerprint=fingerprint)
    assert counter.batches == 0


def test_a_run_stopped_between_its_renames_is_completed_and_lost_arrays_are_embedded_again(tmp_path, export,
                                                                                          tiny_dataset, reference):
    """The states a kill can leave after the last record (labels renamed, embeddings not), and a partial array
    deleted by hand (the recorded rows are gone: embed from the start)."""
    directory = tmp_path / "embeddings"
    embed_into(directory, export, tiny_dataset)
    (directory / EMBEDDINGS_FILE).rename(directory / "embeddings.partial.npy")
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    (directory / PROGRESS_FILE).write_text(json.dumps({**progress, "complete": False}))
    embeddings, _, batches = embed_into(directory, export, tiny_dataset)
    assert batches == 0 and json.loads((directory / PROGRESS_FILE).read_text())["complete"]
    assert sorted(written_files(directory)) == [EMBEDDINGS_FILE, LABELS_FILE, PROGRESS_FILE]
    np.testing.assert_allclose(embeddings, reference[0], rtol=0, atol=1e-6)

    (directory / EMBEDDINGS_FILE).unlink()
    embeddings, _, batches = embed_into(directory, export, tiny_dataset)
    assert batches == 14
    np.testing.assert_allclose(embeddings, reference[0], rtol=0, atol=1e-6)


def test_a_killed_embedding_resumes_to_exactly_the_same_embeddings(tmp_path, export, tiny_dataset, reference,
                                                                   killed):
    directory = shutil.copytree(killed, tmp_path / "embeddings")
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    assert (progress["rows"], progress["complete"]) == (3 * BATCH, False)
    assert not (directory / EMBEDDINGS_FILE).exists() and not (directory / LABELS_FILE).exists()
    partial = np.load(directory / "embeddings.partial.npy")
    np.testing.assert_array_equal(partial[:4 * BATCH], reference[0][:4 * BATCH])  # one batch more than recorded
    assert not partial[4 * BATCH:].any()

    embeddings, labels, batches = embed_into(directory, export, tiny_dataset)
    assert batches == 14 - 3  # resumed after the 3 recorded batches
    np.testing.assert_array_equal(embeddings, reference[0])
    np.testing.assert_array_equal(labels, reference[1])
    assert json.loads((directory / PROGRESS_FILE).read_text())["complete"]
    assert not (directory / "embeddings.partial.npy").exists() and not (directory / "labels.partial.npy").exists()


def test_two_processes_resume_a_killed_embedding_in_dataset_order(tmp_path, export, tiny_dataset, reference, killed):
    """Two gloo processes resume the one-process directory at the last whole step of 2 x BATCH rows before its 18
    recorded rows (row 12), and write every row in dataset order, the padding of their last step dropped."""
    from test_ddp import accelerate_launch

    directory = shutil.copytree(killed, tmp_path / "embeddings")
    command = accelerate_launch(2, str(HERE / "disk_embedding_run.py"), str(export), str(tiny_dataset),
                                str(directory), str(BATCH))
    child = subprocess.run(command, capture_output=True, text=True, timeout=600, env=child_environment())
    assert child.returncode == 0, child.stderr[-5000:]
    assert f"{directory}: resuming at row 12 of 80" in child.stderr
    np.testing.assert_allclose(np.load(directory / EMBEDDINGS_FILE), reference[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.load(directory / LABELS_FILE), reference[1])
    assert json.loads((directory / PROGRESS_FILE).read_text())["complete"]


@pytest.mark.parametrize("protocol", ["leave-one-out", "query/gallery"])
def test_eval_from_disk_reports_the_in_memory_metrics(tmp_path, export, tiny_dataset, protocol):
    if protocol == "leave-one-out":
        dataset_flags = ["--dataset", str(tiny_dataset)]
    else:
        from dml_fixtures import write_inshop

        dataset_flags = ["--dataset", f"inshop:{write_inshop(tmp_path, images_per_item=5)}", "--query-split",
                         "query", "--gallery-split", "gallery"]
    flags = ["eval", "--model", str(export), *dataset_flags, "--img-size", str(IMAGE_SIZE), "--batch-size", "8"]
    assert main([*flags, "--output", str(tmp_path / "memory.json")]) == 0
    directory = tmp_path / "embeddings"
    assert main([*flags, "--embeddings-dir", str(directory), "--output", str(tmp_path / "disk.json")]) == 0
    in_memory = json.loads((tmp_path / "memory.json").read_text())
    from_disk = json.loads((tmp_path / "disk.json").read_text())
    assert from_disk.keys() == in_memory.keys()
    for key, value in in_memory.items():
        assert from_disk[key] == pytest.approx(value, abs=1e-9), key
    assert json.loads((directory / PROGRESS_FILE).read_text())["total_rows"] == (80 if protocol == "leave-one-out"
                                                                                 else 15)


def test_eval_refuses_another_models_directory_and_bad_flags(tmp_path, export, tiny_dataset, capsys):
    directory = tmp_path / "embeddings"
    flags = ["eval", "--model", str(export), "--dataset", str(tiny_dataset), "--batch-size", "8",
             "--embeddings-dir", str(directory)]
    assert main([*flags, "--img-size", str(IMAGE_SIZE)]) == 0
    capsys.readouterr()
    assert main([*flags, "--img-size", "32"]) == 2  # another preprocessing: another fingerprint
    error = capsys.readouterr().err
    assert f"gsp-hub eval: error: {directory} holds the embeddings of another model or data set" in error
    assert "--overwrite-embeddings" in error
    assert main([*flags, "--img-size", "32", "--overwrite-embeddings"]) == 0

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["eval", "--model", str(export), "--embeddings-dir", str(a_file)]) == 2
    assert (f"gsp-hub eval: error: --embeddings-dir {a_file} is a file; the embeddings need a folder: pass a folder "
            "path") in capsys.readouterr().err
    assert main(["eval", "--model", str(export), "--overwrite-embeddings"]) == 2
    assert "--overwrite-embeddings starts an --embeddings-dir afresh; pass --embeddings-dir DIR too" in \
        capsys.readouterr().err


def test_a_second_writer_of_the_directory_is_refused_before_any_work(tmp_path, export, tiny_dataset):
    directory = tmp_path / "embeddings"
    directory.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from gsp_hub.train.run_lock import hold_run_lock\n"
        f"with hold_run_lock(Path({str(directory)!r})):\n    print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True, env=child_environment())
    try:
        assert holder.stdout.readline().strip() == "held"
        accelerator = Accelerator(cpu=True)
        network, loader, fingerprint = prepared_split(accelerator, export, tiny_dataset, BATCH)
        counter = BatchCounter(network)
        with pytest.raises(RunFolderInUse, match=rf"directory {directory} is in use by .*process {holder.pid}"):
            embed_split_to_disk(network, loader, accelerator, directory, fingerprint=fingerprint)
        assert counter.batches == 0 and written_files(directory) == {}
    finally:
        holder.kill()
        holder.wait()
