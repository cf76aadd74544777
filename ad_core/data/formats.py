"""The built-in dataset formats by name: descriptions and known categories, without importing torch.

`adcore list-datasets` reads only this module; the dataset classes take their category lists from here.
"""

from __future__ import annotations

MVTEC_CATEGORIES = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                    "screw", "tile", "toothbrush", "transistor", "wood", "zipper"]
VISA_CATEGORIES = ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2",
                   "pcb3", "pcb4", "pipe_fryum"]
BTAD_CATEGORIES = ["01", "02", "03"]
TEXTURES = ["weave", "grain", "brushed_metal"]
OBJECTS = ["disc", "plate"]
DEMO_CATEGORIES = TEXTURES + OBJECTS

DESCRIPTIONS: dict[str, tuple[str, list[str] | None]] = {
    "mvtec": ("MVTec AD layout (train/good, test/<defect>, ground_truth)", MVTEC_CATEGORIES),
    "visa": ("VisA with split_csv/1cls.csv", VISA_CATEGORIES),
    "btad": ("BTAD (01, 02, 03; ok/ko)", BTAD_CATEGORIES),
    "folder": ("your own images: <category>/{normal,abnormal,mask}, metadata.csv written for you", None),
    "demo": ("synthetic textures and objects with exact masks, generated on the fly", DEMO_CATEGORIES),
}


def list_datasets() -> list[dict[str, object]]:
    """Built-in formats, then the formats plugins register (their names and factories, nothing imported)."""
    from ad_core.plugins import get_registry

    built_in = [{"name": n, "description": d, "categories": c} for n, (d, c) in DESCRIPTIONS.items()]
    return built_in + [{"name": n, "description": f"from a plugin ({ref})", "categories": None}
                       for n, ref in sorted(get_registry().datasets.items())]
