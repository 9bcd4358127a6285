"""Write a manifest ``path,label,camera`` for an ISIC Archive folder, so that
``medlens cv manifest.csv --allow-outside-paths --group-by camera`` holds out whole cameras.

The ISIC JSON next to each photo gives its pixel size (``meta.acquisition.pixelsX/Y``),
which varies with the contributing clinic and camera; photos of one size form one group.
The input folder is only read.

    python examples/isic_camera_manifest.py ../shared/data/isic_skin_lesions manifest.csv
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main(root: Path, out: Path) -> int:
    labels = {}
    with (root / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            labels[row["image"]] = row["benign_malignant"]
    rows = []
    for img in sorted((root / "images").glob("*.jpg")):
        meta = json.loads(img.with_suffix(".json").read_text(encoding="utf-8"))["meta"]["acquisition"]
        if img.stem in labels:
            rows.append([str(img.resolve()), labels[img.stem], f"{meta['pixelsX']}x{meta['pixelsY']}"])
    with out.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["path", "label", "camera"], *rows])
    print(f"{out}: {len(rows)} photos, {len({r[2] for r in rows})} camera groups")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
