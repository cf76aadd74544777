"""Train one model on one category and look at its results.

    python examples/train_one.py                        # synthetic demo data, no download
    python examples/train_one.py mvtec bottle patchcore # with set_globals(dataset_dir=...) pointing at MVTec AD
"""

import sys

from ad_core import set_globals, train

dataset, category, model = (sys.argv[1:4] + ["demo", "weave", "patchcore-r18"][len(sys.argv[1:4]):])
set_globals(output_dir="outputs", backbone_dir="backbones", seed=42)

# Without weights in backbones/ this warns and uses random backbone weights instead of failing.
(run,) = train(dataset, category, model, image_size=128, on_missing_weights="warn")
print(f"image AUROC {run.image_auroc:.3f}, pixel AUROC {run.pixel_auroc:.3f}")
print(f"threshold ({run.results['threshold']['method']}): {run.results['threshold']['value']:.4g}")
print(f"checkpoint, results.txt, histogram.png, roc.png and maps/ are in {run.output_dir}")
