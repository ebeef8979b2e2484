#!/usr/bin/env bash
# On the lent GPU machine (run by the device tool in the repository root): gather the data parts carried so far,
# rebuild CIFAR-10 once all have come, and train the campaign's runs for LIMIT seconds; their folders come back
# as $OUT/<run>.tar. See checkpoints/training/gpu/README.md for the calls that lead here.
#
#   LIMIT=500 RUNS="resnet56_scratch resnet56_noshort_scratch" TRAIN_FLAGS="" BENCH=0 bash checkpoints/training/gpu/device_train.sh
#
# Everything outside the tree lives in /tmp (the tree is sent afresh with every call): /tmp/xfer (the data parts),
# /tmp/data (the rebuilt data), /tmp/runs (the runs, copied from the tree on the first call that trains and kept
# from then on, so later calls continue them even though the tree's copy is older).
set -uo pipefail
LIMIT=${LIMIT:-500}
RUNS=${RUNS:-"resnet56_scratch resnet56_noshort_scratch"}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
KIT=checkpoints/training/gpu/kit.py
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 LANDSCAPE_DATA_ROOT=/tmp/data
mkdir -p /tmp/xfer /tmp/runs
for part in .xfer/part*; do [ -d "$part" ] && cp -r "$part" /tmp/xfer/; done
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ ! -f /tmp/data/cifar-10-batches-py/test_batch ]; then
    have=$(ls -d /tmp/xfer/part* 2>/dev/null | wc -l)
    if [ "$have" -eq 0 ]; then echo "data: no part here yet; carry .xfer/part1 first"; exit 2; fi
    want=$(python3 -c "import json; print(json.load(open('$(ls -d /tmp/xfer/part* | head -1)/manifest.json'))['parts'])")
    if [ "$have" -lt "$want" ]; then echo "data: $have of $want parts here; carry the next"; exit 0; fi
    python3 $KIT unpack /tmp/xfer/part* --out /tmp/data || exit 3
fi
if [ "${BENCH:-0}" = 1 ]; then  # landscape train's whole step, eager and compiled (~2-3 minutes), into $OUT/bench.txt
    for flags in "" "--compile"; do
        timeout 240 python3 benchmarks/train_speed.py --arch resnet56 --device cuda --precision bf16 --loop $flags \
            2>&1 | tail -n 3 | tee -a "$OUT/bench.txt"
    done
fi
[ "$LIMIT" -gt 0 ] || exit 0
pids=()
for run in $RUNS; do
    if [ ! -d /tmp/runs/$run ]; then cp -r checkpoints/training/$run /tmp/runs/; fi
    # the recipe is read back from the run's state: the options below must be the ones it started with
    arch=${run%_scratch}
    timeout -s TERM -k 60 "$LIMIT" python3 -m landscape train --arch "$arch" --epochs 200 --lr 0.1 --schedule onecycle \
        --eval-images 2000 --out /tmp/runs/$run --resume $TRAIN_FLAGS >/tmp/runs/$run.log 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; echo "exit $?"; done
for run in $RUNS; do echo "== $run"; tr '\r' '\n' </tmp/runs/$run.log | grep -v "batch/s" | tail -n 8; done
for run in $RUNS; do tar -C /tmp/runs -cf "$OUT/$run.tar" "$run" "$run.log"; done  # one per run: 16 MiB a file
ls -l "$OUT"
