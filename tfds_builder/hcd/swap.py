"""Overwriting a build without a window where a reader sees half of one: the new build is made
in a staging directory beside the old, then swapped in by two renames.

A kill at any point leaves the old build, or no build (the next one rebuilds), never a mix: the
staging and replaced directories are named ``incomplete.*``, which the next build removes
(datadir.py). Called under the build lock.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil

import tensorflow_datasets.public_api as tfds

from . import faults
from .datadir import INCOMPLETE_PREFIX


def rebuild_and_swap(builder, download_dir, download_config, **kwargs) -> None:
    """Builds ``builder``'s config again from the manual dir into a staging directory beside the
    existing build, swaps the two and reloads ``builder.info`` from the new one."""
    config_dir = os.path.dirname(os.fspath(builder.data_path))
    token = secrets.token_hex(3)
    staging = os.path.join(config_dir, f"{INCOMPLETE_PREFIX}overwrite_{token}")
    fresh = type(builder)(config=builder.builder_config, data_dir=staging)
    fresh.shown_data_dir = builder.shown_data_dir  # errors name the data dir the user gave
    reuse = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    config = dataclasses.replace(download_config, download_mode=reuse)
    fresh.download_and_prepare(download_dir=download_dir, download_config=config, **kwargs)
    old = os.path.join(config_dir, f"{INCOMPLETE_PREFIX}replaced_{token}")
    os.replace(builder.data_path, old)
    faults.fault("swap")
    os.replace(fresh.data_path, builder.data_path)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    builder.info.read_from_directory(builder.data_path)
