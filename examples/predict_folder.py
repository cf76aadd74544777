"""Score a folder of new images with a trained checkpoint, as on a production line.

    python examples/predict_folder.py outputs/demo/weave/patchcore-r18 path/to/images [maps_out]

The same from the shell: `adcore predict CHECKPOINT FOLDER --output maps_out --json`.
"""

import sys
from pathlib import Path

from ad_core.inference import predict_paths

checkpoint, folder = Path(sys.argv[1]), Path(sys.argv[2])
maps = Path(sys.argv[3]) if len(sys.argv) > 3 else None
for row in predict_paths(checkpoint, [folder], output_dir=maps):
    verdict = "ANOMALOUS" if row["label"] else "ok"
    print(f"{verdict:>9}  {row['normalized_score']:.3f}  {row['path']}")
