"""Side-by-side picture of the engine and the references on two bench
cases: hair over a busy background (composite, blocky mask, ours,
pymatting, truth; alpha shown as grey) and a large brush-stroke hole in an
unseen photo (input with the hole in magenta, ours, OpenCV TELEA, OpenCV NS,
original).

Run after `cargo bench -p retouch-engine --bench engines -- --keep DIR`:
    target/bench-venv/bin/python server/engine/benches/reference/sheet.py DIR OUT.jpg

With `--all DIR OUTDIR` it writes every case instead, one sheet per kind of
hole (`removal-strokes.jpg`, ...) and one of the hair composites
(`matting-hair.jpg`), a row per case in the same columns: the means in the
bench's tables hide what a few bad fills look like.
"""

import json
import os
import sys
from collections import defaultdict

from PIL import Image

HAIR = "astronaut-hair-over-flower"
# The bench names a case `{scene}-{kind}`; the hair composites' kind.
HAIR_KIND = "hair-blocky8"
HOLE = "unseen-leuvenA-strokes"
# The part of the 640x480 hair composites where the strands are.
HAIR_BOX = (150, 30, 490, 200)
TILE_WIDTH = 360


def alpha_of(path):
    """The alpha of an RGBA cut-out, or a grey image as it is."""
    image = Image.open(path)
    if image.mode == "RGBA":
        return image.getchannel("A")
    return image.convert("L")


def row(images, box=None):
    tiles = []
    for image in images:
        image = image.convert("RGB")
        if box:
            image = image.crop(box)
        height = round(TILE_WIDTH * image.height / image.width)
        tiles.append(image.resize((TILE_WIDTH, height), Image.LANCZOS))
    strip = Image.new("RGB", (TILE_WIDTH * len(tiles), tiles[0].height), "white")
    for k, tile in enumerate(tiles):
        strip.paste(tile, (k * TILE_WIDTH, 0))
    return strip


def hair_row(case_dir, scene, box=HAIR_BOX):
    """Composite, blocky mask, ours, pymatting, truth of a hair composite."""
    hair = f"{case_dir}/{scene}"
    return row(
        [
            Image.open(f"{hair}.png"),
            Image.open(f"{hair}-{HAIR_KIND}-mask.png"),
            alpha_of(f"{hair}-{HAIR_KIND}.ours.png"),
            alpha_of(f"{hair}-{HAIR_KIND}.pymatting-alpha.png"),
            Image.open(f"{hair}-truth.png"),
        ],
        box,
    )


def hole_row(case_dir, name):
    """Input with the hole in magenta, ours, TELEA, NS, original."""
    hole = f"{case_dir}/{name}"
    original = Image.open(f"{hole}.png").convert("RGB")
    holed = original.copy()
    holed.paste((255, 0, 255), mask=Image.open(f"{hole}-mask.png").convert("L"))
    return row(
        [
            holed,
            Image.open(f"{hole}.ours.png"),
            Image.open(f"{hole}.telea.png"),
            Image.open(f"{hole}.ns.png"),
            original,
        ]
    )


def stack(rows, out):
    sheet = Image.new("RGB", (rows[0].width, sum(r.height + 8 for r in rows) - 8), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 8
    sheet.save(out, quality=85)


def hole_kind(name):
    """The bench's kind of hole, from a removal case's name."""
    if name.startswith("unseen-"):
        return "unseen-" + name.rsplit("-", 1)[1]
    if name.endswith("-800x600"):
        return "strokes-800x600"
    return name.rsplit("-", 1)[1]


def all_sheets(case_dir, out_dir):
    with open(os.path.join(case_dir, "cases.json")) as f:
        cases = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    kinds = defaultdict(list)
    for case in cases.get("removal", []):
        kinds[hole_kind(case["name"])].append(case["name"])
    for kind, names in kinds.items():
        stack([hole_row(case_dir, n) for n in names], os.path.join(out_dir, f"removal-{kind}.jpg"))
    hair = [
        c["name"][: -len(HAIR_KIND) - 1]
        for c in cases.get("matting", [])
        # Not the hair cut-outs of the other composites, whose names end
        # the same way.
        if c["name"].endswith(f"-{HAIR_KIND}") and "-hair-over-" in c["name"]
    ]
    if hair:
        stack([hair_row(case_dir, s, None) for s in hair], os.path.join(out_dir, "matting-hair.jpg"))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--all":
        all_sheets(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) != 3:
        sys.exit("usage: sheet.py CASE_DIR OUT.jpg | sheet.py --all CASE_DIR OUT_DIR")
    case_dir, out = sys.argv[1], sys.argv[2]
    stack([hair_row(case_dir, HAIR), hole_row(case_dir, HOLE)], out)


if __name__ == "__main__":
    main()
