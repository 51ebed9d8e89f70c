"""MPerClassBatchSampler: m-per-class structure, disjoint ranks, determinism, epochs, errors, DataLoader use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gsp_hub.data import MPerClassBatchSampler

# 12 classes of 40..95 images, rows in random order (as a shuffled data set would be)
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(12), np.arange(40, 100, 5)))


def all_rank_batches(num_replicas: int, epoch: int = 0, **kwargs) -> list[list[list[int]]]:
    batches = []
    for rank in range(num_replicas):
        sampler = MPerClassBatchSampler(LABELS, num_replicas=num_replicas, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        batches.append(list(sampler))
    return batches


@pytest.mark.parametrize("m, batch_size", [(2, 8), (4, 32), (5, 60)])
def test_every_batch_has_m_distinct_images_of_each_of_p_classes(m, batch_size):
    sampler = MPerClassBatchSampler(LABELS, m=m, batch_size=batch_size, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(LABELS) // batch_size
    for batch in batches:
        assert len(batch) == batch_size and len(set(batch)) == batch_size  # every class has >= m images
        counts = Counter(LABELS[batch].tolist())
        assert len(counts) == batch_size // m and set(counts.values()) == {m}


def test_ranks_get_disjoint_batches_of_equal_number():
    per_rank = all_rank_batches(3, m=4, batch_size=16, seed=0, length=300)
    assert [len(batches) for batches in per_rank] == [300 // (16 * 3)] * 3
    # At this length no class is drawn more than 10 times, so no class deck (>= 40 images, 4 per draw) runs out
    # and no image is dealt twice: disjoint batches show up as disjoint index sets.
    seen = [index for batches in per_rank for batch in batches for index in batch]
    assert max(Counter(LABELS[seen].tolist()).values()) <= 40
    assert len(seen) == len(set(seen)) == 3 * 6 * 16
    for batches in per_rank:
        for batch in batches:
            assert set(Counter(LABELS[batch].tolist()).values()) == {4}


def test_ranks_partition_the_single_process_epoch():
    """The W rank streams interleave to exactly the epoch list a single process builds for the same world size."""
    world = MPerClassBatchSampler(LABELS, m=2, batch_size=8, num_replicas=2, seed=5).epoch_batches().tolist()
    rank0, rank1 = all_rank_batches(2, m=2, batch_size=8, seed=5)
    assert rank0 == world[0::2] and rank1 == world[1::2]


def test_deterministic_and_independent_of_global_rngs():
    first = list(MPerClassBatchSampler(LABELS, m=2, batch_size=8, seed=3))
    np.random.seed(123)
    torch.manual_seed(123)
    np.random.rand(5)
    torch.rand(5)
    assert list(MPerClassBatchSampler(LABELS, m=2, batch_size=8, seed=3)) == first
    assert list(MPerClassBatchSampler(LABELS, m=2, batch_size=8, seed=4)) != first


def test_set_epoch_changes_the_order_and_is_repeatable():
    sampler = MPerClassBatchSampler(LABELS, m=2, batch_size=8, seed=0)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # iterating again without set_epoch repeats the epoch
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and len(epoch1) == len(epoch0)
    sampler.set_epoch(0)
    assert list(sampler) == epoch0


def test_epoch_deals_each_class_without_repeats_until_its_images_run_out():
    sampler = MPerClassBatchSampler(LABELS, m=5, batch_size=20, seed=2, length=4 * len(LABELS))
    dealt = Counter(index for batch in sampler for index in batch)
    for label in range(12):
        members = np.flatnonzero(LABELS == label)
        counts = np.array([dealt[i] for i in members])
        # class sizes are multiples of m, so each shuffled deck is dealt out completely before the next one:
        # within a class every image has been dealt k or k + 1 times
        assert counts.max() - counts.min() <= 1, label


def test_class_with_fewer_than_m_images_is_sampled_with_replacement():
    labels = np.array([0] * 10 + [1] * 10 + [2])  # class 2 has one image, m = 4
    sampler = MPerClassBatchSampler(labels, m=4, batch_size=12, seed=0, length=120)
    batches_with_class_2 = [batch for batch in sampler if 20 in batch]
    assert batches_with_class_2
    for batch in batches_with_class_2:
        assert batch.count(20) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(m=3, batch_size=8), r"batch_size=8 must be a multiple of m=3"),
        (dict(m=2, batch_size=32), r"needs 16 classes per batch, but the labels have only 12"),
        (dict(m=2, batch_size=8, num_replicas=2, rank=2), r"rank must be in \[0, num_replicas=2\)"),
        (dict(m=2, batch_size=8, length=7), r"length=7 images per epoch is fewer than one batch"),
        (dict(m=0, batch_size=8), r"m must be a positive int"),
        (dict(m=2, batch_size=8, seed=-1), r"seed must be a non-negative int"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MPerClassBatchSampler(LABELS, **kwargs)


def test_labels_must_be_integers():
    with pytest.raises(ValueError, match="labels must be a 1-D integer sequence"):
        MPerClassBatchSampler(LABELS.astype(float), m=2, batch_size=8)


def test_works_as_dataloader_batch_sampler():
    dataset = TensorDataset(torch.arange(len(LABELS)), torch.as_tensor(LABELS))
    sampler = MPerClassBatchSampler(LABELS, m=2, batch_size=8, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == len(sampler)
    for (indices, labels), expected in zip(batches, sampler):
        assert indices.tolist() == expected and torch.equal(labels, torch.as_tensor(LABELS[expected]))


TWO_PROCESS_SCRIPT = """
import json, numpy as np, torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset
from gsp_hub.data import MPerClassBatchSampler
acc = Accelerator(cpu=True)
labels = np.repeat(np.arange(6), 20)
data = TensorDataset(torch.arange(len(labels)))
own = MPerClassBatchSampler(labels, m=2, batch_size=6, num_replicas=acc.num_processes, rank=acc.process_index,
                            length=126)
unsharded = MPerClassBatchSampler(labels, m=2, batch_size=6, length=126)  # 21 batches: an uneven last round
prepared = acc.prepare(DataLoader(data, batch_sampler=unsharded))
result = {"own": [b[0].tolist() for b in DataLoader(data, batch_sampler=own)],
          "prepared": [b[0].tolist() for b in prepared]}
unsharded.set_epoch(1)
result["prepared_epoch_1"] = [b[0].tolist() for b in prepared]
results = [None] * acc.num_processes
torch.distributed.all_gather_object(results, result)
if acc.is_main_process:
    print(json.dumps(results))
acc.wait_for_everyone()
acc.end_training()
"""


@pytest.mark.slow
def test_two_gloo_processes_under_accelerate(tmp_path):
    """Both documented set-ups under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU): the sampler
    sharded by itself (loader not prepared), and an unsharded sampler in a prepared loader."""
    script = tmp_path / "two_process.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    rank0, rank1 = json.loads(output.strip().splitlines()[-1])
    labels = np.repeat(np.arange(6), 20)
    world = MPerClassBatchSampler(labels, m=2, batch_size=6, num_replicas=2, length=126).epoch_batches().tolist()
    assert len(world) == 20 and rank0["own"] == world[0::2] and rank1["own"] == world[1::2]
    single = MPerClassBatchSampler(labels, m=2, batch_size=6, length=126)
    for epoch, key in ((0, "prepared"), (1, "prepared_epoch_1")):
        single.set_epoch(epoch)
        batches = single.epoch_batches().tolist()
        assert len(batches) == 21  # accelerate drops the 21st: equal counts, no padding with repeated batches
        assert rank0[key] == batches[0:20:2] and rank1[key] == batches[1:20:2]
