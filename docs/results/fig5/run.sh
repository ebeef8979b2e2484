#!/usr/bin/env bash
# Li et al. (2018), Fig. 5 on the campaign's checkpoints (issue 8; checkpoints/README.md):
#   - 51x51 surfaces over [-1, 1]^2 of the four networks, filter-normalized random directions (seeds 0 and 1),
#     train loss on 2,000 training images (the first draw of --data-seed 0);
#   - three rows (beta = -0.8, 0, 0.8) of each again in fp32 on the same images: what the surface's precision costs;
#   - the same rows in fp32 on a disjoint draw of 2,000 images (--data-part 1): the image-subsampling noise;
#   - `landscape compare` of the four, and the pairs' figures (contours and 3D, PDF for papers, PNG for the README).
#
# Run from the repository root; every `landscape compute` resumes where a kill left it, so run it again to go on:
#     LANDSCAPE_DATA_ROOT=../shared/data docs/results/fig5/run.sh
# Settings (environment): PRECISION (default: bf16 without BN folding where the CPU has native bf16, else fp32),
# GRID (51), IMAGES (2000), WORKERS (1; 2 puts both cores of a 2-core machine on each surface), OUT
# (docs/results/fig5), PAIRS ("resnet56 resnet20": each pair is <pair>.pt and <pair>_noshort.pt; PAIRS=resnet56
# does one pair's part while the other trains, and a later run with both resumes it). GRID=11 IMAGES=64
# OUT=/tmp/fig5 is a smoke test of a few minutes. COMPUTE_ONLY=1 stops after the surfaces and rows (for a GPU machine
# without the plotting stack); a later run without it finds them finished and writes the numbers and figures.
set -euo pipefail

out=${OUT:-docs/results/fig5}
grid=${GRID:-51}
images=${IMAGES:-2000}
workers=${WORKERS:-1}
precision=${PRECISION:-$(python -c "import torch; from landscape.hardware import resolve_precision as r; print(r('auto', torch.device('cpu')))")}
read -r -a pairs <<< "${PAIRS:-resnet56 resnet20}"
archs=()
for pair in "${pairs[@]}"; do archs+=("$pair" "${pair}_noshort"); done
if [ "${#archs[@]}" -eq 0 ]; then echo "error: PAIRS names no pair (e.g. PAIRS=resnet56)" >&2; exit 2; fi
fold=()
if [ "$precision" = bf16 ]; then fold=(--no-fold-bn); fi  # folded BN in bf16 rounds far more (docs/results/README.md)
mkdir -p "$out/rows"

for arch in "${archs[@]}"; do
    common=(--ckpt "checkpoints/$arch.pt" --seed 0 --subset "$images" --data-seed 0 --workers "$workers")
    echo "== $arch: ${grid}x${grid} surface, $precision, $images images" >&2
    landscape compute "${common[@]}" --x "-1:1:$grid" --y "-1:1:$grid" --precision "$precision" "${fold[@]}" \
        --out "$out/$arch.h5"
    # rows beta = -0.8, 0, 0.8 lie on the grid when (grid - 1) is a multiple of 10 (51: every 0.04)
    landscape compute "${common[@]}" --x "-1:1:$grid" --y -0.8:0.8:3 --precision fp32 --out "$out/rows/$arch.fp32.h5"
    landscape compute "${common[@]}" --x "-1:1:$grid" --y -0.8:0.8:3 --precision fp32 --data-part 1 \
        --out "$out/rows/$arch.fp32.part1.h5"
done
if [ -n "${COMPUTE_ONLY:-}" ]; then echo "computed ${archs[*]/%/.h5} and rows/ in $out (COMPUTE_ONLY)" >&2; exit 0; fi

{
    echo "# landscape compare, train loss ($(date -u +%Y-%m-%d), $precision surfaces, $images images)"
    surfaces=()
    for arch in "${archs[@]}"; do surfaces+=("$out/$arch.h5"); done
    landscape compare "${surfaces[@]}" --metric train_loss --json "$out/compare.json" --overwrite
    echo
    echo "# the same numbers on the three fp32 rows, first the images of the surfaces, then the disjoint ones"
    strips=()
    for arch in "${archs[@]}"; do strips+=("$out/rows/$arch.fp32.h5" "$out/rows/$arch.fp32.part1.h5"); done
    landscape compare "${strips[@]}" --metric train_loss --json "$out/compare_rows.json" --overwrite
    for arch in "${archs[@]}"; do
        echo
        echo "# $arch: the surface's rows against fp32 on the same images"
        python benchmarks/precision_rows.py "$out/$arch.h5" "$out/rows/$arch.fp32.h5"
        echo
        echo "# $arch: fp32 rows on the first $images images against a disjoint $images"
        python benchmarks/precision_rows.py "$out/rows/$arch.fp32.h5" "$out/rows/$arch.fp32.part1.h5" --other-images
    done
} > "$out/numbers.txt"

for pair in "${pairs[@]}"; do
    files=("$out/$pair.h5" "$out/${pair}_noshort.h5")
    landscape plot "${files[@]}" --kind contour --log --width page --overwrite --out "$out/${pair}_pair_contours.pdf"
    landscape plot "${files[@]}" --kind contour --log --width page --overwrite --out "$out/${pair}_pair_contours.png"
    landscape plot "${files[@]}" --kind surface --log --width page --overwrite --out "$out/${pair}_pair_surfaces.pdf"
    landscape plot "${files[@]}" --kind surface --log --width page --overwrite --out "$out/${pair}_pair_surfaces.png"
done
echo "wrote $out: ${archs[*]/%/.h5}, rows/, numbers.txt, compare*.json and the pairs' figures" >&2
