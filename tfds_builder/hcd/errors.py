"""The errors a build raises for its user, and what the user is told to put in the manual dir.

Every refusal of bad raw files, options or destinations is a BadInputError (a ValueError) with
one message naming the file, row or flag and what to do: ``hcdtf build-dataset`` shows it as a
usage error (exit code 2) and ``tfds build`` prints it. No TensorFlow here, so the command line
can name these types without importing it.
"""

from __future__ import annotations

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
kaggle config: download the competition data from
https://www.kaggle.com/c/histopathologic-cancer-detection/data (e.g. `kaggle competitions download
-c histopathologic-cancer-detection`), unzip it and pass that directory as --manual_dir. It must
contain `train_labels.csv` (columns id,label) and `train/<id>.tif` (96x96 RGB); `test/<id>.tif` is
optional. To split by slide, also put the public patch-to-slide mapping there as
`patch_id_wsi.csv` (columns id,wsi). `hcdtf sample-data DIR` writes a synthetic sample in the same
layout.

pcam config: download the six files camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz from
https://zenodo.org/record/2546921 (or https://github.com/basveeling/pcam) into --manual_dir;
`.h5.gz` or decompressed `.h5` both work.
"""


class BadInputError(ValueError):
    """The raw files in the manual dir, or the build's options or destination, are not usable."""


class InputsChangedError(BadInputError):
    """The data dir holds a build of this config from other inputs."""


class BuildLockedError(BadInputError):
    """Another process is building this config into the same data dir."""


def no_manual_dir(manual_dir: str) -> BadInputError:
    """The error for a manual dir that does not exist (with the download instructions)."""
    return BadInputError(f"manual dir {manual_dir!r} does not exist. {MANUAL_DOWNLOAD_INSTRUCTIONS}")
