"""`tfds new`-style tests of the hcd builder on dummy_data/ (regenerate: dummy_data/make_dummy_data.py)."""

import tensorflow_datasets as tfds

from . import hcd_dataset_builder


class HcdKaggleTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = hcd_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["kaggle"]
    EXAMPLE_DIR = hcd_dataset_builder.Builder.code_path.parent / "dummy_data" / "kaggle"  # = manual dir
    SPLITS = {"train": 16, "validation": 2, "test": 2, "kaggle_test": 3}
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # local files only: Pillow and h5py need real paths


class HcdPcamTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = hcd_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["pcam"]
    EXAMPLE_DIR = hcd_dataset_builder.Builder.code_path.parent / "dummy_data" / "pcam"  # train is .h5.gz
    SPLITS = {"train": 8, "validation": 4, "test": 4}
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


if __name__ == "__main__":
    tfds.testing.test_main()
