"""Take the training campaign to a lent GPU machine: the data there, the tree small enough to travel, states back.

    python checkpoints/training/gpu/kit.py pack --data-root ../shared/data --parts 3   # CIFAR-10 into .xfer/part1..3
    python checkpoints/training/gpu/kit.py unpack --out /tmp/data /tmp/xfer/part*       # on the device: the exact files
    python checkpoints/training/gpu/kit.py slim                                        # set big tracked files aside
    python checkpoints/training/gpu/kit.py restore                                     # and bring them back
    python checkpoints/training/gpu/kit.py size [--carry .xfer/part1]                  # what a device call would send

The device tool sends the working tree and the carried paths, 64 MiB in all, and CIFAR-10 is 178 MiB, so it travels
in parts over back-to-back calls (a machine is kept warm for 30 s after a call). `pack` codes each image plane
losslessly (the LOCO-I/JPEG-LS median predictor, residuals modulo 256, then xz: 0.62 of the raw pixels) and copies the
rest of every file verbatim; `unpack` rebuilds the files byte for byte and checks each one's SHA-256 against the
manifest, so the device trains on exactly the data this machine has. Only the standard library and numpy; the
pickles are never unpickled (the pixel block is the largest byte string in a pickle whose length is a multiple of
3,072; whatever block is taken, the coding is lossless and the checksum decides).

`slim` deletes from the working tree the tracked files of 256 KiB and more that training does not need (figures,
surface files, checkpoints; it keeps the package and the runs to continue, `--keep FOLDER` for others), listing them
in `.xfer/slimmed.txt`; `restore` checks exactly those out again.
Run `restore` before any commit. `.xfer/` is ignored by git.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
XFER = REPO / ".xfer"
KEEP = ("landscape/", "pyproject.toml")  # needed on the device whatever their size, and the runs to continue:
RUNS = ("checkpoints/training/resnet56_scratch/", "checkpoints/training/resnet56_noshort_scratch/")
SLIM_FROM = 256 * 1024
PLANE = 32 * 32
ROW = 3 * PLANE


def _med_prediction(x: np.ndarray) -> np.ndarray:
    """The LOCO-I median predictor of every pixel from its left, upper and upper-left neighbours (planes, 32, 32)."""
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    c = np.zeros_like(x)
    a[:, :, 1:], b[:, 1:, :], c[:, 1:, 1:] = x[:, :, :-1], x[:, :-1, :], x[:, :-1, :-1]
    high, low = np.maximum(a, b), np.minimum(a, b)
    p = np.where(c >= high, low, np.where(c <= low, high, a + b - c))
    p[:, 0, 1:], p[:, 1:, 0], p[:, 0, 0] = x[:, 0, :-1], x[:, :-1, 0], 0  # first row: left; first column: up
    return p


def encode_pixels(pixels: bytes) -> bytes:
    """Median-predictor residuals (mod 256) of 32x32 planes, xz-compressed."""
    x = np.frombuffer(pixels, np.uint8).reshape(-1, 32, 32).astype(np.int16)
    return lzma.compress(((x - _med_prediction(x)) % 256).astype(np.uint8).tobytes(), preset=6)


def decode_pixels(blob: bytes) -> bytes:
    """The inverse of `encode_pixels`, one pixel position at a time over all planes at once."""
    r = np.frombuffer(lzma.decompress(blob), np.uint8).reshape(-1, 32, 32).astype(np.int16)
    y = np.zeros_like(r)
    for i in range(32):
        for j in range(32):
            if i == 0:
                p = y[:, 0, j - 1] if j else np.zeros(len(r), np.int16)
            elif j == 0:
                p = y[:, i - 1, 0]
            else:
                a, b, c = y[:, i, j - 1], y[:, i - 1, j], y[:, i - 1, j - 1]
                high, low = np.maximum(a, b), np.minimum(a, b)
                p = np.where(c >= high, low, np.where(c <= low, high, a + b - c))
            y[:, i, j] = (p + r[:, i, j]) % 256
    return y.astype(np.uint8).tobytes()


def pixel_block(data: bytes) -> tuple[int, int] | None:
    """(offset, length) of a CIFAR batch's pixel rows inside its pickle, or None for another file.

    A batch pickles its `data` array's buffer as one byte string (opcode BINSTRING 'T' or BINBYTES 'B' with a
    4-byte little-endian length, a multiple of 3,072); the largest such string is the pixel block."""
    best: tuple[int, int] | None = None
    for opcode in (b"T", b"B"):
        start = 0
        while (at := data.find(opcode, start)) >= 0:
            start = at + 1
            if at + 5 > len(data):
                break
            length = int.from_bytes(data[at + 1 : at + 5], "little")
            if length >= ROW and length % ROW == 0 and at + 5 + length <= len(data):
                if best is None or length > best[1]:
                    best = (at + 5, length)
    return best


def pack(folder: Path, out: Path, parts: int) -> dict:
    """Code every file of `folder` into one stream, split into `parts` folders under `out` with the manifest."""
    stream, files = bytearray(), []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        data = path.read_bytes()
        entry: dict = {"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        block = pixel_block(data)
        if block:
            offset, length = block
            rest = lzma.compress(data[:offset] + data[offset + length :], preset=6)
            pixels = encode_pixels(data[offset : offset + length])
            entry.update(offset=offset, pixel_bytes=length, rest=len(rest), pixels=len(pixels))
            stream += rest + pixels
        else:
            rest = lzma.compress(data, preset=6)
            entry.update(rest=len(rest))
            stream += rest
        files.append(entry)
        print(f"{path.name}: {len(data):,} bytes -> {entry['rest'] + entry.get('pixels', 0):,}", flush=True)
    manifest = {"folder": folder.name, "files": files, "stream_bytes": len(stream), "parts": parts}
    size = -(-len(stream) // parts)
    for k in range(parts):
        part = out / f"part{k + 1}"
        part.mkdir(parents=True, exist_ok=True)
        (part / "blob").write_bytes(stream[k * size : (k + 1) * size])
        (part / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(parts: list[Path], out: Path) -> list[str]:
    """Rebuild the packed files under `out/<folder>`; raises SystemExit on a missing part or a wrong checksum."""
    manifest = json.loads(parts[0].joinpath("manifest.json").read_text())
    ordered = sorted(parts, key=lambda p: int(p.name.removeprefix("part")))
    if len(ordered) != manifest["parts"]:
        raise SystemExit(f"error: {len(ordered)} parts given, the manifest says {manifest['parts']}")
    stream = b"".join(p.joinpath("blob").read_bytes() for p in ordered)
    if len(stream) != manifest["stream_bytes"]:
        raise SystemExit(f"error: the parts hold {len(stream)} bytes, the manifest says {manifest['stream_bytes']}")
    target = out / manifest["folder"]
    target.mkdir(parents=True, exist_ok=True)
    at, written = 0, []
    for entry in manifest["files"]:
        try:
            rest = lzma.decompress(stream[at : at + entry["rest"]])
            at += entry["rest"]
            if "pixels" in entry:
                pixels = decode_pixels(stream[at : at + entry["pixels"]])
                at += entry["pixels"]
                data = rest[: entry["offset"]] + pixels + rest[entry["offset"] :]
            else:
                data = rest
        except (lzma.LZMAError, ValueError) as error:
            raise SystemExit(f"error: {entry['name']} is damaged in the parts ({error})") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"error: {entry['name']} rebuilt with another SHA-256 than the original's")
        (target / entry["name"]).write_bytes(data)
        written.append(entry["name"])
    return written


def _git_files(*args: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", *args], capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


def travelling_bytes(carry: list[str]) -> int:
    """What a device call sends: tracked files present in the tree, untracked ones git does not ignore, carried."""
    names = set(_git_files()) | set(_git_files("--others", "--exclude-standard"))
    total = sum((REPO / n).stat().st_size for n in names if (REPO / n).is_file())
    for path in carry:
        p = REPO / path
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total


def slim(keep: tuple[str, ...] = KEEP + RUNS) -> list[str]:
    """Delete the big tracked files that training does not need; list them in .xfer/slimmed.txt."""
    big = [
        n
        for n in _git_files()
        if (REPO / n).is_file() and (REPO / n).stat().st_size >= SLIM_FROM and not n.startswith(keep)
    ]
    XFER.mkdir(exist_ok=True)
    listed = XFER / "slimmed.txt"
    earlier = listed.read_text().split() if listed.is_file() else []
    listed.write_text("\n".join(sorted(set(earlier) | set(big))) + "\n")
    for name in big:
        (REPO / name).unlink()
    return big


def restore() -> list[str]:
    listed = XFER / "slimmed.txt"
    names = listed.read_text().split() if listed.is_file() else []
    if names:
        subprocess.run(["git", "-C", str(REPO), "checkout", "--", *names], check=True)
    listed.unlink(missing_ok=True)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-root", type=Path, required=True, help="the folder that holds cifar-10-batches-py/")
    p.add_argument("--parts", type=int, default=3)
    p.add_argument("--out", type=Path, default=XFER)
    u = sub.add_parser("unpack")
    u.add_argument("parts", type=Path, nargs="+")
    u.add_argument("--out", type=Path, required=True)
    sl = sub.add_parser("slim")
    sl.add_argument("--keep", action="append", default=[], help="a folder to keep (default: the stage-2 runs)")
    sub.add_parser("restore")
    s = sub.add_parser("size")
    s.add_argument("--carry", action="append", default=[])
    args = parser.parse_args()
    if args.command == "pack":
        folder = args.data_root / "cifar-10-batches-py"
        if not folder.is_dir():
            sys.exit(f"error: no folder {folder}")
        manifest = pack(folder, args.out, args.parts)
        part = -(-manifest["stream_bytes"] // args.parts)
        print(f"{manifest['stream_bytes'] / 2**20:.1f} MiB in {args.parts} parts of {part / 2**20:.1f} MiB: {args.out}")
    elif args.command == "unpack":
        print("rebuilt, SHA-256 checked:", ", ".join(unpack(args.parts, args.out)))
    elif args.command == "slim":
        keep = KEEP + (tuple(k.rstrip("/") + "/" for k in args.keep) or RUNS)
        print(f"set aside {len(slim(keep))} files; the tree sends {travelling_bytes([]) / 2**20:.1f} MiB")
    elif args.command == "restore":
        print(f"restored {len(restore())} files")
    else:
        missing = [c for c in args.carry if not (REPO / c).exists()]
        if missing:
            sys.exit(f"error: --carry {missing[0]}: no such file or folder under {REPO}")
        print(f"{travelling_bytes(args.carry) / 2**20:.1f} MiB would travel (limit 64 MiB)")


if __name__ == "__main__":
    main()
