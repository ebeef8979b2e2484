"""How much a reduced-precision surface's shape numbers owe to its rounding: compare some of its rows with fp32.

Compute a few rows of the same surface in fp32 (same checkpoint, directions, images; only the y axis and the
precision differ), e.g. for a 51x51 bf16 surface over [-1, 1]²:

    landscape compute --ckpt checkpoints/resnet20.pt --x -1:1:51 --y -0.8:0.8:3 --subset 500 --precision fp32 \\
        --out rows_fp32.h5
    python benchmarks/precision_rows.py resnet20_bf16.h5 rows_fp32.h5

It prints, per fp32 row, the largest and the mean relative error of the surface's row (relative to the second
file's values), and the turning points (at several tolerances) and the local minima along the row
(`landscape.analysis.local_minima`, ends included) in both.

`--other-images`: the rows are the same rows on other images (`landscape compute --data-part 1`, or another
`--data-seed`), in the same precision: what it prints is then how much the choice of images moves the surface
(image-subsampling noise), to set beside the rounding:

    landscape compute --ckpt checkpoints/resnet20.pt --x -1:1:51 --y -0.8:0.8:3 --subset 500 --precision fp32 \
        --data-part 1 --out rows_fp32_part1.h5
    python benchmarks/precision_rows.py rows_fp32.h5 rows_fp32_part1.h5 --other-images
"""

from __future__ import annotations

import argparse

import numpy as np

from landscape.analysis import local_minima, turns_per_line
from landscape.storage import read_surface

TOLERANCES = (0.0, 0.005, 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("surface", help="the full surface (e.g. bf16)")
    parser.add_argument("rows", help="some of its rows in fp32, on the same x axis")
    parser.add_argument("--metric", default="train_loss")
    parser.add_argument(
        "--other-images",
        action="store_true",
        help="the rows are on other images (--data-part or --data-seed) in the same precision: measure the noise "
        "of subsampling the images instead of the rounding",
    )
    args = parser.parse_args()
    full, rows = read_surface(args.surface), read_surface(args.rows)
    if not np.allclose(full.xcoordinates, rows.xcoordinates):
        raise SystemExit("error: the two files have different x axes")
    draws = [_draw(f.spec) for f in (full, rows)]
    for key in ("checkpoint", "data", "x", "y") + (("evaluation",) if args.other_images else ()):
        a, b = full.spec.get(key), rows.spec.get(key)
        if key == "data" and args.other_images:
            a, b = ({k: v for k, v in (d or {}).items() if k not in ("part", "seed")} for d in (a, b))
        if a != b:
            raise SystemExit(f"error: the two files differ in '{key}'")
    if args.other_images and draws[0] == draws[1]:
        raise SystemExit("error: --other-images, but both files are on the same images")
    if args.other_images:
        precision = draws[0], draws[1]
    else:
        precision = full.spec["evaluation"]["precision"], rows.spec["evaluation"]["precision"]
    print(f"{args.metric}: {args.surface} ({precision[0]}) against {args.rows} ({precision[1]})")
    print(
        "| y | max rel. error | mean rel. error | "
        + " | ".join(f"turns at {t:.1%}: {precision[1]} / {precision[0]}" for t in TOLERANCES)
        + f" | local minima: {precision[1]} / {precision[0]} |"
    )
    print("|---" * (4 + len(TOLERANCES)) + "|")
    for j, y in enumerate(rows.ycoordinates):
        reference = rows.values[args.metric][j].astype(np.float64)
        j_full = int(np.argmin(np.abs(full.ycoordinates - y)))
        if not np.isclose(full.ycoordinates[j_full], y):
            raise SystemExit(f"error: y = {y:g} is not a row of {args.surface}")
        row = full.values[args.metric][j_full].astype(np.float64)
        relative = np.abs(row - reference) / np.abs(reference)
        turns = [f"{turns_per_line(reference[None], t):.0f} / {turns_per_line(row[None], t):.0f}" for t in TOLERANCES]
        print(
            f"| {y:g} | {relative.max():.2%} | {relative.mean():.2%} | "
            + " | ".join(turns)
            + f" | {local_minima(reference[None])} / {local_minima(row[None])} |"
        )


def _draw(spec: dict) -> str:
    """Which images a file is on, in a few words: 'seed 0 part 1'."""
    data = spec.get("data") or {}
    return f"seed {data.get('seed', 0)} part {data.get('part', 0)}"


if __name__ == "__main__":
    main()
