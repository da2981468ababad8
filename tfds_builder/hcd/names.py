"""Builder config names: the one grammar between a build's options and its config's name.

A build other than the two named configs (``kaggle``, ``pcam``) is named by what differs from
their defaults, so its name alone says how to rebuild it, and ``hcdtf train --dataset-config NAME``
finds it::

    kaggle[_val<F>_test<F>][_folds<K>][_dedup][_skip_bad]     pcam

e.g. ``kaggle_skip_bad``, ``kaggle_val0.15_test0.15``, ``kaggle_folds5``, ``kaggle_test0.2_folds5``,
``kaggle_folds5_dedup``. A fold build has no validation split (each fold in turn is the
validation split), so its name carries only the test fraction. TF-free: the command line and the
config checks read it without importing TensorFlow.
"""

from __future__ import annotations

import dataclasses
import re

SOURCES = ("kaggle", "pcam")
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
GRAMMAR = "kaggle[_val<F>_test<F>][_folds<K>][_dedup][_skip_bad] or pcam"
EXAMPLES = ("kaggle_skip_bad", "kaggle_val0.15_test0.15", "kaggle_folds5", "kaggle_folds5_dedup")

_NUMBER = r"[0-9][0-9.e+-]*"
_NAME_RE = re.compile(
    rf"^(?P<source>kaggle|pcam)(?:_val(?P<val>{_NUMBER}))?(?:_test(?P<test>{_NUMBER}))?"
    r"(?:_folds(?P<folds>[0-9]+))?(?P<dedup>_dedup)?(?P<skip>_skip_bad)?$"
)


class BuildOptionsError(ValueError):
    """Build options that cannot give a usable data set (e.g. a split that would be empty)."""


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What a build's config name encodes (see the module docstring)."""

    source: str = "kaggle"
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    folds: int = 0
    drop_duplicates: bool = False
    skip_bad_examples: bool = False

    @property
    def name(self) -> str:
        """The canonical config name of these options."""
        name = self.source
        if self.folds:
            if self.test_fraction != DEFAULT_TEST_FRACTION:
                name += f"_test{self.test_fraction:g}"
            name += f"_folds{self.folds}"
        elif (self.validation_fraction, self.test_fraction) != (DEFAULT_VALIDATION_FRACTION, DEFAULT_TEST_FRACTION):
            name += f"_val{self.validation_fraction:g}_test{self.test_fraction:g}"
        if self.drop_duplicates:
            name += "_dedup"
        if self.skip_bad_examples:
            name += "_skip_bad"
        return name

    def check(self) -> "BuildOptions":
        """Raises BuildOptionsError (naming the option, as flag and as config field) for options
        that cannot give a usable data set, before anything is read or written."""
        if self.source not in SOURCES:
            raise BuildOptionsError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "pcam":
            if self.folds or self.skip_bad_examples or self.drop_duplicates or self.non_default_fractions:
                raise BuildOptionsError(
                    "pcam keeps PatchCamelyon's official splits as they are: --validation-fraction, "
                    "--test-fraction, --folds, --drop-duplicates and --skip-bad apply to kaggle only"
                )
            return self
        _check_fraction("test", self.test_fraction)
        if self.folds:
            if self.folds < 2:
                raise BuildOptionsError(f"--folds (folds) must be at least 2, got {self.folds}")
            if self.validation_fraction != DEFAULT_VALIDATION_FRACTION:
                raise BuildOptionsError(
                    "--validation-fraction does not apply with --folds: each fold in turn is the "
                    "validation split (drop --validation-fraction)"
                )
            return self
        _check_fraction("validation", self.validation_fraction)
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise BuildOptionsError(
                f"--validation-fraction {self.validation_fraction:g} + --test-fraction "
                f"{self.test_fraction:g} (validation_fraction + test_fraction) must be < 1: "
                "nothing would be left for the train split"
            )
        return self

    @property
    def non_default_fractions(self) -> bool:
        return (self.validation_fraction, self.test_fraction) != (
            DEFAULT_VALIDATION_FRACTION,
            DEFAULT_TEST_FRACTION,
        )

    def split_names(self) -> tuple[str, ...]:
        """The labelled splits a build with these options writes (kaggle_test comes on top when the
        manual dir has unlabelled test patches)."""
        if self.folds:
            return (*fold_names(self.folds), "test")
        return ("train", "validation", "test")


def fold_names(folds: int) -> tuple[str, ...]:
    return tuple(f"fold{k}" for k in range(folds))


def _check_fraction(which: str, value: float) -> None:
    flag = f"--{which}-fraction {value:g} ({which}_fraction)"
    if not 0.0 <= value < 1.0:
        raise BuildOptionsError(f"{flag} must be in (0, 1)")
    if value == 0.0:
        raise BuildOptionsError(
            f"{flag} would leave the {which} split empty: give a fraction in (0, 1), e.g. 0.1"
        )


def follows_grammar(name: str) -> bool:
    return bool(_NAME_RE.match(name or ""))


def parse(name: str) -> BuildOptions:
    """The options a config name encodes; BuildOptionsError if it does not follow the grammar
    or is not written the canonical way (one name per build)."""
    m = _NAME_RE.match(name or "")
    if not m:
        raise BuildOptionsError(
            f"dataset config {name!r} is not a config name: expected {GRAMMAR} "
            f"(e.g. {', '.join(EXAMPLES)})"
        )
    try:
        val = float(m["val"]) if m["val"] else DEFAULT_VALIDATION_FRACTION
        test = float(m["test"]) if m["test"] else DEFAULT_TEST_FRACTION
    except ValueError:
        raise BuildOptionsError(f"dataset config {name!r}: {m['val'] or m['test']!r} is not a number") from None
    options = BuildOptions(
        source=m["source"],
        validation_fraction=val,
        test_fraction=test,
        folds=int(m["folds"] or 0),
        drop_duplicates=bool(m["dedup"]),
        skip_bad_examples=bool(m["skip"]),
    )
    if options.name != name:
        raise BuildOptionsError(f"dataset config {name!r} is written {options.name!r} (one name per build)")
    return options


def resolve(
    name: str | None = None,
    *,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
    folds: int | None = None,
    drop_duplicates: bool = False,
    skip_bad_examples: bool = False,
) -> BuildOptions:
    """The checked options of a config name (default ``kaggle``) with build flags applied on top:
    ``resolve("kaggle", skip_bad_examples=True).name == "kaggle_skip_bad"``."""
    options = parse(name or "kaggle")
    changes: dict = {}
    if validation_fraction is not None:
        changes["validation_fraction"] = float(validation_fraction)
    if test_fraction is not None:
        changes["test_fraction"] = float(test_fraction)
    if folds is not None:
        if folds < 2:
            raise BuildOptionsError(f"--folds (folds) must be at least 2, got {folds}")
        changes["folds"] = int(folds)
    if drop_duplicates:
        changes["drop_duplicates"] = True
    if skip_bad_examples:
        changes["skip_bad_examples"] = True
    return dataclasses.replace(options, **changes).check()
