"""PatchCore's streamed coreset against the one-shot greedy on the covering radius alone, without re-running the backbone.

    python benchmarks/coreset_radius.py --data PATH/magnetic_tile --images 400 --sizes 100,200,400 \
        --variants default,carry_patches=0 --exact-up-to 400

The training images' patch embeddings are computed once (resnet18 with random weights, seeded, 256 px, batches of
32 made as a loader would: `patchcore_scaling.training_batches`) and projected to the 128-d space the greedy works
in. For each size, each variant (PatchCore options; `default` = none) runs the model's own `update` / `finalize` on
those projections (a PatchCore whose `embed` returns them as they are: the projection is then the identity), and the
one-shot greedy runs `greedy_coreset` over all of the size's patches. Radius = the largest distance of a training
patch to the bank, over every patch. The one-shot greedy is quadratic (about 35 minutes for 400 images of 256 px on
one thread here); `--exact-up-to` bounds it, and `--reuse-one-shot` takes the radii the earlier records of
the same backbone and size hold (the one-shot greedy depends neither on the streaming options nor on the order).
`--order shuffled` (the default) streams each size's images in a seeded random order, as the runner feeds them;
`--order name` in file-name order (the runner's order for feature-bank models before it shuffled them).
A JSON record goes under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ad_core.components.coreset import greedy_coreset, squared_distance_to
from ad_memory.patchcore import PatchCore
from patchcore_scaling import RESULTS, training_batches


class ProjectedPatchCore(PatchCore):
    """PatchCore fed its patches' projections directly: `images` are [B, patches, D] rows."""

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return images.reshape(-1, images.shape[-1]), (images.shape[1], 1)


def projections(data: str, images: int, size: int, backbone: str) -> torch.Tensor:
    """[images, patches, 128] projected patch embeddings of the first `images` training images."""
    torch.manual_seed(0)
    model = PatchCore(backbone=backbone, pretrained=False).eval()
    out = []
    with torch.inference_mode():
        for batch in training_batches(data, images, size):
            emb, (h, w) = model.embed(batch)
            out.append((emb @ model.projection).view(len(batch), h * w, -1))
    return torch.cat(out)


def streamed_radius(patches: torch.Tensor, options: dict) -> tuple[float, int]:
    dim = patches.shape[-1]
    model = ProjectedPatchCore(backbone="resnet18", pretrained=False, target_embed_dim=dim, pretrain_embed_dim=dim,
                               projection_dim=0, **options)
    with torch.no_grad():
        for batch in patches.split(32):
            model.update(batch)
        model.finalize()
    bank = model.memory_bank
    return float(squared_distance_to(patches.reshape(-1, dim), bank).max().sqrt()), len(bank)


def parse_variant(text: str) -> dict:
    if text == "default":
        return {}
    key, value = text.split("=")
    return {key: json.loads(value)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MVTec-layout category folder")
    parser.add_argument("--images", type=int, default=400, help="training images embedded (the largest size)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 200, 400])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["default", "carry_patches=0"])
    parser.add_argument("--exact-up-to", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--order", choices=["shuffled", "name"], default="shuffled",
                        help="order in which the streamed variants see each size's images")
    parser.add_argument("--reuse-one-shot", action="store_true",
                        help="take the one-shot radii of the sizes the existing records (either order) hold instead of recomputing them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    patches = projections(args.data, args.images, args.size, args.backbone)
    record = {"benchmark": "coreset_radius", "backbone": args.backbone, "image_size": args.size, "data": args.data,
              "threads": args.threads, "order": args.order, "rows": []}
    path = RESULTS / f"coreset_radius_{args.backbone}_{args.size}px{'' if args.order == 'shuffled' else '_name_order'}.json"
    earlier = {}
    if args.reuse_one_shot:  # from the records of either order: the one-shot greedy does not see the order
        for earlier_path in sorted(RESULTS.glob(f"coreset_radius_{args.backbone}_{args.size}px*.json")):
            rows = json.loads(earlier_path.read_text())["rows"]
            earlier.update({row["images"]: row["one-shot"] for row in rows if "one-shot" in row})
    for n in args.sizes:
        subset = patches[:n]  # the first n images: the set the one-shot radius is of
        if args.order == "shuffled":
            subset = subset[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
        row = {"images": n, "patches": subset.shape[0] * subset.shape[1]}
        for variant in args.variants:
            start = time.perf_counter()
            radius, bank = streamed_radius(subset, parse_variant(variant))
            row[variant] = {"radius": round(radius, 4), "bank": bank, "seconds": round(time.perf_counter() - start, 1)}
        if n in earlier:
            row["one-shot"] = {**earlier[n], "reused": True}
        elif n <= args.exact_up_to:
            start = time.perf_counter()
            flat = subset.reshape(-1, subset.shape[-1])
            bank = flat[greedy_coreset(flat, int(len(flat) * 0.1))]
            row["one-shot"] = {"radius": round(float(squared_distance_to(flat, bank).max().sqrt()), 4),
                               "bank": len(bank), "seconds": round(time.perf_counter() - start, 1)}
        if "one-shot" in row:
            for variant in args.variants:
                row[variant]["over_one_shot"] = round(row[variant]["radius"] / row["one-shot"]["radius"], 3)
        record["rows"].append(row)
        print(json.dumps(row), flush=True)
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
    print("record written:", path)


if __name__ == "__main__":
    main()
