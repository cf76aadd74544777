"""Compare three models per category, then fuse the top three into one ensemble per category and compare.

The members are ranked by their validation source's image AUROC (held-out normal images with synthetic defects),
so the test split does not choose them."""

from ad_core import build_ensembles, train_models
from ad_core.ensemble import ensemble_table

train_models(
    dataset_type="demo",
    categories=["weave", "disc"],
    models=["padim", "patchcore-r18", "dfkde"],
    image_size=128,
    on_missing_weights="warn",
    output_dir="outputs/compare",
    verbose=False,
)
for result in build_ensembles("outputs/compare", top=3, by="validation_image_auroc"):
    print(ensemble_table(result), f"\nsaved to {result.output_dir}\n")
