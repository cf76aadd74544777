"""Score a folder of new images with a trained checkpoint, as on a production line.

    python examples/predict_folder.py outputs/demo/weave/patchcore-r18 path/to/images

`predict_paths` reads and resizes the files exactly as training did. The same from the shell, with overlay
pictures: `adcore predict CHECKPOINT FOLDER --output maps_out --json`.
"""

import sys

from ad_core import load_model

detector = load_model(sys.argv[1])
print(f"model input: {detector.image_size[0]}x{detector.image_size[1]} px, ImageNet-normalised: {detector.normalize}")
for result in detector.predict_paths([sys.argv[2]]):
    verdict = "ANOMALOUS" if result.label else "ok"
    print(f"{verdict:>9}  {result.normalized_score:.3f}  {result.path}")
