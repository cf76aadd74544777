"""Datasets: the real on-disk layouts (MVTec AD, VisA, BTAD, your own folders) and a synthetic demo set."""

from ad_core.data.base import DatasetLayoutError, ImageDataset, Record, resolve_categories
from ad_core.data.btad import BTAD, BTAD_CATEGORIES
from ad_core.data.catalog import DATASETS, get_dataset, list_categories, list_datasets
from ad_core.data.folder import FolderDataset, read_metadata_csv, write_metadata_csv
from ad_core.data.images import ImageReadError, read_image, read_mask
from ad_core.data.mvtec import MVTEC_CATEGORIES, MVTecAD
from ad_core.data.synthetic import DEFECTS, DEMO_CATEGORIES, DemoDataset, render, write_demo_dataset
from ad_core.data.transforms import ImageTransform, MaskTransform, to_size
from ad_core.data.visa import VISA_CATEGORIES, VisA

__all__ = [
    "BTAD",
    "BTAD_CATEGORIES",
    "DATASETS",
    "DEFECTS",
    "DEMO_CATEGORIES",
    "MVTEC_CATEGORIES",
    "VISA_CATEGORIES",
    "DatasetLayoutError",
    "DemoDataset",
    "FolderDataset",
    "ImageDataset",
    "ImageReadError",
    "ImageTransform",
    "MVTecAD",
    "MaskTransform",
    "Record",
    "VisA",
    "get_dataset",
    "list_categories",
    "list_datasets",
    "read_image",
    "read_mask",
    "read_metadata_csv",
    "render",
    "resolve_categories",
    "to_size",
    "write_demo_dataset",
    "write_metadata_csv",
]
