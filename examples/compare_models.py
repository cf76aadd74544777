"""Compare several models on several categories and print one table (the seed's `train_models`)."""

from ad_core import train_models
from ad_core.runner import summary_table

runs = train_models(
    dataset_type="demo",
    categories=["weave", "disc"],
    models=["padim", "patchcore-r18", "dfkde"],
    image_size=128,
    on_missing_weights="warn",
    verbose=False,
)
print(summary_table(sorted(runs, key=lambda r: -r.image_auroc)))
