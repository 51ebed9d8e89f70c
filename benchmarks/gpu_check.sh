#!/usr/bin/env bash
# Issue 22's GPU figures in one short call of the device tool (a session lent a GPU has 15 minutes in all).
#
# It runs, on the GPU, the two benchmarks the CPU results come from: the SOP-size retrieval evaluation
# (bench_metrics.py --device cuda: gsp_hub's automatic and float32 searches vs AccuracyCalculator) and the recipe
# step against timm's own train.py (bench_train_vs_timm.py --device cuda, all four settings, one run per side).
# About 6-9 minutes on an H100; give the call timeout_s=600 and give the machine back after it.
#
# Prepare here first (the device machine reaches nothing outside; its python3 has torch, timm, accelerate,
# safetensors, pyarrow, but not datasets, pytorch-metric-learning or faiss):
#   echo /runs/gpu_inputs/ >> .git/info/exclude; mkdir -p runs/gpu_inputs/tiny-imagenet-200/data
#   cp /work/timm_src/train.py runs/gpu_inputs/                     # timm's own train.py (bench_train_vs_timm.py)
#   python3 - <<'PY'   # 100 Tiny-ImageNet images of each of the first 20 classes: a 3 MB parquet
#   import pyarrow.parquet as pq
#   t = pq.read_table("../shared/data/tiny-imagenet-200/data/train-00000-of-00002.parquet")
#   seen, keep = {}, []
#   for i, label in enumerate(t["label"].to_pylist()):
#       if label < 20 and seen.get(label, 0) < 100:
#           seen[label] = seen.get(label, 0) + 1
#           keep.append(i)
#   pq.write_table(t.take(keep), "runs/gpu_inputs/tiny-imagenet-200/data/train-00000-of-00001.parquet")
#   PY
#   wheels of datasets (and what it needs that the image lacks: dill, multiprocess), pytorch-metric-learning and
#   faiss-cpu for Python 3.12 into .whl/ (the device tool's README shows the pip download line)
# then call the device tool with carry=["runs/gpu_inputs", ".whl"] and the command
#   bash benchmarks/gpu_check.sh runs/gpu_inputs
set -euo pipefail
INPUTS=${1:?usage: bash benchmarks/gpu_check.sh INPUTS_DIR (holding train.py and tiny-imagenet-200/)}
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 benchmarks/bench_metrics.py --device cuda --methods auto float32 pml
python3 benchmarks/bench_train_vs_timm.py --device cuda --timm-train "$INPUTS/train.py" \
  --tiny-imagenet "$INPUTS/tiny-imagenet-200" --workers 4 --warmup-steps 10 --steps 30 --repeats 1
