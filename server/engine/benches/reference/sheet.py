"""Side-by-side picture of the engine and the references on two bench
cases: hair over a busy background (composite, blocky mask, ours,
pymatting, truth; alpha shown as grey) and a large brush-stroke hole in an
unseen photo (input with the hole in magenta, ours, OpenCV TELEA, OpenCV NS,
original).

Run after `cargo bench -p retouch-engine --bench engines -- --keep DIR`:
    target/bench-venv/bin/python server/engine/benches/reference/sheet.py DIR OUT.jpg
"""

import sys

from PIL import Image

HAIR = "astronaut-hair-over-flower"
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


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: sheet.py CASE_DIR OUT.jpg")
    case_dir, out = sys.argv[1], sys.argv[2]
    hair = f"{case_dir}/{HAIR}"
    hair_row = row(
        [
            Image.open(f"{hair}.png"),
            Image.open(f"{hair}-blocky8-mask.png"),
            alpha_of(f"{hair}-blocky8.ours.png"),
            alpha_of(f"{hair}-blocky8.pymatting-alpha.png"),
            Image.open(f"{hair}-truth.png"),
        ],
        HAIR_BOX,
    )
    hole = f"{case_dir}/{HOLE}"
    original = Image.open(f"{hole}.png").convert("RGB")
    holed = original.copy()
    holed.paste((255, 0, 255), mask=Image.open(f"{hole}-mask.png").convert("L"))
    hole_row = row(
        [
            holed,
            Image.open(f"{hole}.ours.png"),
            Image.open(f"{hole}.telea.png"),
            Image.open(f"{hole}.ns.png"),
            original,
        ]
    )
    sheet = Image.new("RGB", (hair_row.width, hair_row.height + hole_row.height + 8), "white")
    sheet.paste(hair_row, (0, 0))
    sheet.paste(hole_row, (0, hair_row.height + 8))
    sheet.save(out, quality=85)


if __name__ == "__main__":
    main()
