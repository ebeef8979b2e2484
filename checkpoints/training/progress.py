"""The model card's progress paragraph, from the campaign's logs (checkpoints/training/<arch>/log.jsonl).

    python checkpoints/training/progress.py --after "session 6"            # print it
    python checkpoints/training/progress.py --after "session 6" --write    # replace it in checkpoints/README.md
    python checkpoints/training/progress.py --table                        # the card's table, from the checkpoints
    python checkpoints/training/progress.py --provenance                   # test accuracy, byte-exact vs JPEG images

The paragraph lists every epoch's test accuracy (2,000 test images), the last five epochs' training accuracy, the
learning rate now, which precision and hardware ran which epochs (from each log line), and the work left (epochs
to go at the median pace of each unfinished run's last hardware). `--table` prints the card's table of the shipped
checkpoints from their own metadata (the numbers `landscape train` measured at the end, on all 50,000 / 10,000
images) beside issue 8's targets, so that the card cannot drift from the files.
`--provenance` re-measures the shipped checkpoints' test accuracy (fp32, all 10,000 images of $LANDSCAPE_DATA_ROOT)
split by where each image comes from: the data copy's `provenance_mask.npz` marks the byte-exact images; the others
were decoded from a quality-75 JPEG copy. Its byte-exact test images are not a random draw (all of airplane,
automobile, ship and truck, ~10% of each other class), so the table compares like with like: within the six classes
that have both kinds, and class-balanced (the mean of the ten per-class accuracies) on the byte-exact images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
CARD = HERE.parent / "README.md"
FIRST = ("resnet56", "resnet56_noshort")  # the order of issue 8: the ResNet-56 pair first, then the others
TARGETS = {"resnet20": 90.5, "resnet20_noshort": 89.0, "resnet56": 92.0, "resnet56_noshort": 87.0}  # test acc, issue 8
START = "Progress (test accuracy on 2,000 images"
END = "Resume stage"  # the resume block that follows the paragraph


def read_log(arch: str) -> list[dict]:
    lines = (HERE / arch / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def runs() -> list[str]:
    """The campaign's runs: the folders here with a log, the ResNet-56 pair first."""
    found = sorted(folder.name for folder in HERE.iterdir() if (folder / "log.jsonl").is_file())
    return [arch for arch in FIRST if arch in found] + [arch for arch in found if arch not in FIRST]


def read_state(arch: str) -> dict:
    """The run's state; for a finished run, whose state.pt is not kept, the recipe its checkpoint records."""
    import torch

    if not (HERE / arch / "state.pt").is_file():
        from landscape import load_checkpoint

        return {"spec": json.dumps(load_checkpoint(HERE / arch / "checkpoint.pt").metadata["recipe"])}
    return torch.load(HERE / arch / "state.pt", map_location="cpu", weights_only=True)


def within(state: dict) -> str:
    """' (+S steps of the next)' when the run's state was saved within an epoch, else ''."""
    position = state.get("within_epoch")
    return f" (+{position['step']} steps of the next)" if position else ""


def planned_epochs(state: dict) -> int:
    """The epochs of the run's cycle, from the recipe its state stores."""
    return int(json.loads(state["spec"])["epochs"])


def spans(log: list[dict]) -> list[tuple[int, int, str, str, list[float]]]:
    """Runs of consecutive epochs on the same precision and hardware: (first, last, precision, hardware, minutes per
    epoch), the minutes from the log's cumulative training seconds."""
    result: list[tuple[int, int, str, str, list[float]]] = []
    previous = 0.0
    for record in log:
        key = (record.get("precision", "fp32"), record.get("hardware", "unrecorded hardware"))
        minutes = (record["seconds"] - previous) / 60
        previous = record["seconds"]
        if result and result[-1][2:4] == key and result[-1][1] == record["epoch"] - 1:
            first, _, precision, hardware, times = result[-1]
            result[-1] = (first, record["epoch"], precision, hardware, [*times, minutes])
        else:
            result.append((record["epoch"], record["epoch"], *key, [minutes]))
    return result


def describe_span(first: int, last: int, precision: str, hardware: str, minutes: list[float]) -> str:
    """'epochs 13-50: bf16, CPU AMD EPYC (avx512_bf16, ...; native bf16), 2.3-6.4 min each'."""
    epochs = f"epoch {first}" if first == last else f"epochs {first}-{last}"
    machine = hardware.rsplit("),", 1)[0] + ")" if ")," in hardware else hardware
    low, high = min(minutes), max(minutes)
    each = f"{low:.1f} min" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f} min"
    return f"{epochs}: {precision}, {machine}, {each}{'' if first == last else ' each'}"


def work_left(arch: str, log: list[dict], state: dict) -> str | None:
    """'191 epochs of resnet56_scratch, ~34 hours at the median 10.7 min per epoch of its last hardware' (an epoch in
    flight counts as left), or None for a finished run."""
    left = planned_epochs(state) - (log[-1]["epoch"] if log else 0)
    if left <= 0:
        return None
    if not log:
        return f"{left} epochs of {arch}"
    median = statistics.median(spans(log)[-1][4])
    time = f"~{left * median / 60:.0f} hours" if left * median >= 120 else f"~{left * median:.0f} minutes"
    return f"{left} epochs of {arch}, {time} at the median {median:.1f} min per epoch of its last hardware"


def paragraph(after: str) -> str:
    names = runs()
    logs = {arch: read_log(arch) for arch in names}
    states = {arch: read_state(arch) for arch in names}
    epochs = ", ".join(
        f"{logs[arch][-1]['epoch']}{within(states[arch])} of {planned_epochs(states[arch])} for {arch}"
        for arch in names
    )
    parts = [
        f"{START} at the end of each epoch, then training accuracy with augmentation; the one-cycle warm-up raises "
        "the learning rate to 0.1 over the first 15% of the epochs, the gain comes in the cosine phase): "
        f"after {after}, **epoch {epochs}**."
    ]
    for arch in names:
        log = logs[arch]
        tests = ", ".join(f"{r['test_acc']:.1f}" for r in log)
        trains = ", ".join(f"{r['train_acc']:.1f}" for r in log[-5:])
        parts.append(
            f"{arch}: test {tests}; training {trains} over the last five epochs "
            f"(learning rate now {log[-1]['lr']:.3f})."
        )
    for arch in names:
        history = "; ".join(describe_span(*span) for span in spans(logs[arch]))
        parts.append(f"Precision, hardware and minutes per epoch of {arch}: {history}.")
    left = [text for arch in names if (text := work_left(arch, logs[arch], states[arch]))]
    if left:
        parts.append(f"Left: {'; '.join(left)}.")
    parts.append(
        "The two runs train side by side, one thread each, and share the CPU with whatever else the session runs "
        "(tests, benchmarks), hence the spread of minutes; each epoch's precision and hardware are in its log line."
    )
    return textwrap.fill(" ".join(parts), width=120, break_on_hyphens=False) + "\n\n"


def cycle_lengths(metadata: dict) -> list[int]:
    """Epochs of each training cycle, first to last, from a checkpoint's cumulative `epochs` and its chain of `init`s
    (a warm restart records the checkpoint it started from, and that one its own)."""
    totals = []
    link = metadata
    while link:
        totals.append(int(link.get("epochs") or 0))
        link = link.get("init") or {}
    totals.reverse()
    return [total - before for before, total in zip([0, *totals], totals)]


def table() -> str:
    """The model card's table: one row per shipped checkpoint, from its metadata, and whether it meets its target."""
    from landscape import build_model, load_checkpoint

    lines = [
        "| checkpoint | params | epochs | train loss / acc | test loss / acc | target (test acc) | training time "
        "(last cycle) | hardware (final epoch and evaluation) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, target in TARGETS.items():
        checkpoint = load_checkpoint(HERE.parent / f"{arch}.pt")
        meta = checkpoint.metadata
        params = sum(p.numel() for p in build_model(checkpoint).parameters())
        epochs, cycles = int(meta["epochs"]), cycle_lengths(meta)
        history = f" ({' + '.join(str(e) for e in cycles)})" if len(cycles) > 1 else ""
        met = "met" if meta["test_acc"] >= target else "**not met**"
        lines.append(
            f"| `{arch}.pt` | {params:,} | {epochs}{history} "
            f"| {meta['train_loss']:.3f} / {meta['train_acc']:.2f}% "
            f"| {meta['test_loss']:.3f} / **{meta['test_acc']:.2f}%** ({meta.get('eval_precision', 'bf16')}) "
            f"| >= {target}%: {met} | {meta['wall_time_s'] / 60:.0f} min | {meta.get('hardware', '?')} |"
        )
    return "\n".join(lines) + "\n"


def provenance() -> str:
    """The shipped checkpoints' test accuracy on the byte-exact and the JPEG-decoded test images (see the docstring)."""
    import os

    import numpy as np

    from landscape import DataSpec, build_model, load_checkpoint
    from landscape.data import ImageSet, find_cifar_folder, load_split, normalizer
    from landscape.evaluate import loss_and_accuracy

    root = Path(os.environ.get("LANDSCAPE_DATA_ROOT") or HERE.parents[2] / "shared" / "data")
    folder = find_cifar_folder(root, "cifar10")
    if folder is None or not (folder / "provenance_mask.npz").is_file():
        raise SystemExit(f"error: no CIFAR-10 with provenance_mask.npz under {root} (set LANDSCAPE_DATA_ROOT)")
    with np.load(folder / "provenance_mask.npz") as masks:
        exact = np.asarray(masks["test_exact"], dtype=bool)
    test = load_split(DataSpec(root=str(root)), "test")
    labels = test.labels.numpy()
    # each image evaluated once, in its group (class, byte-exact or not), by the loop training and surfaces use
    groups = {(c, e): np.flatnonzero((labels == c) & (exact == e)) for c in range(10) for e in (True, False)}
    groups = {key: rows for key, rows in groups.items() if len(rows)}
    both = [c for c in range(10) if (c, True) in groups and (c, False) in groups]
    lines = [
        "| checkpoint | all 10,000 | byte-exact, class-balanced | six classes: byte-exact "
        "| six classes: JPEG-decoded |",
        "|---|---|---|---|---|",
    ]
    for arch, target in TARGETS.items():
        checkpoint = load_checkpoint(HERE.parent / f"{arch}.pt")
        model = build_model(checkpoint).eval()
        scale, shift = normalizer(checkpoint.metadata["mean"], checkpoint.metadata["std"], "cpu")
        correct = {
            key: loss_and_accuracy(
                model, ImageSet(test.images[rows], test.labels[rows], rows), scale, shift, batch_size=500
            ).acc[0]
            * len(rows)
            / 100
            for key, rows in groups.items()
        }

        def share(keys: list[tuple[int, bool]], correct: dict = correct) -> tuple[float, int]:
            n = sum(len(groups[k]) for k in keys)
            return 100 * sum(correct[k] for k in keys) / n, n

        balanced = np.mean([share([(c, True)])[0] for c in range(10)])
        (exact_acc, n_exact), (jpeg_acc, n_jpeg) = share([(c, True) for c in both]), share([(c, False) for c in both])
        lines.append(
            f"| `{arch}.pt` (target {target}%) | {share(list(groups))[0]:.2f}% | {balanced:.1f}% "
            f"| {exact_acc:.1f}% ({n_exact} images) | {jpeg_acc:.1f}% ({n_jpeg} images) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", help='when the numbers were taken, e.g. "session 6"')
    parser.add_argument("--write", action="store_true", help="replace the paragraph in checkpoints/README.md")
    parser.add_argument("--table", action="store_true", help="print the card's table of the shipped checkpoints")
    parser.add_argument("--provenance", action="store_true", help="test accuracy on byte-exact vs JPEG-decoded images")
    args = parser.parse_args()
    if args.table:
        print(table(), end="")
        return
    if args.provenance:
        print(provenance(), end="")
        return
    if not args.after:
        parser.error("--after is needed for the progress paragraph")
    text = paragraph(args.after)
    if not args.write:
        print(text, end="")
        return
    card = CARD.read_text()
    start, end = card.index(START), card.index(END)
    CARD.write_text(card[:start] + text + card[end:])
    print(f"wrote the progress paragraph into {CARD}")


if __name__ == "__main__":
    main()
