"""Camelyon16 cohort: the slide manifest, the organisers' test reference, exclusions.

``data_manifests/camelyon16.csv`` lists all 400 slides of the challenge as
``slide_id,split,label``: tumor_001-110 and normal_001-160 (split ``train``,
label from the name, tumour 1 and normal 0) and test_001-130 (split ``test``,
label empty). Test labels come only from the organisers' reference file, which
users download with the data (``reference.csv``); they are never invented.

Sources for the default exclusions:

- The organisers' data readme (``camelyon16_readme.md`` shipped with the
  GigaScience / grand-challenge release, as quoted in hrzhang1123/DTFD-MIL
  issue 7 and in the DIDSR/dldp README): "normal_86: Originally misclassified,
  renamed to tumor_111", "test_049: Duplicate slide", "test_114: Does not have
  exhaustive annotations"; test_049 was removed by the organisers from the
  slide and lesion tasks, test_114 from the lesion task. NCRF (Li and Ping,
  2018) likewise leaves Test_049 and Test_114 out of FROC "as noted by the
  Camelyon16 organizers".
- Liu et al. 2017, "Detecting Cancer Metastases on Gigapixel Pathology Images"
  (arXiv:1703.02442): "two slides in the Camelyon16 training set were
  erroneously labeled normal". The two are commonly named normal_086 and
  normal_144 (and left out of training in public Camelyon16 pipelines); the
  organisers' readme confirms normal_086 by name, normal_144 is taken from
  that common usage.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from wsi_dram.errors import DataError

SPLITS = ("train", "test")
_ID = re.compile(r"^(tumor|normal|test)_(\d{3})$")
_TUMOUR_WORDS = {"tumor", "tumour", "1", "positive", "metastasis", "metastases"}
_NORMAL_WORDS = {"normal", "0", "negative"}


@dataclass(frozen=True)
class CohortRow:
    """One slide of the cohort manifest.

    Attributes:
        slide_id: Lower-case id, e.g. ``tumor_001`` (the slide file's stem).
        split: ``train`` or ``test``.
        label: 1 tumour, 0 normal, None when unknown (test slides until the
            reference file is applied).
    """

    slide_id: str
    split: str
    label: int | None


def _lesion_default() -> dict[str, str]:
    return {
        "test_049": "duplicate slide, removed by the organisers from the slide "
        "and lesion tasks (Camelyon16 data readme)",
        "test_114": "lesion annotations are not exhaustive, removed by the "
        "organisers from the lesion task (Camelyon16 data readme)",
    }


def _slide_default() -> dict[str, str]:
    return {
        "test_049": "duplicate slide, removed by the organisers from the slide "
        "task (Camelyon16 data readme)",
    }


def _training_default() -> dict[str, str]:
    return {
        "normal_086": "labelled normal but contains tumour (Liu et al. 2017, "
        "arXiv:1703.02442; the organisers later renamed it tumor_111)",
        "normal_144": "labelled normal but reported to contain tumour (Liu et "
        "al. 2017, arXiv:1703.02442: two training slides erroneously labelled "
        "normal)",
    }


@dataclass
class Exclusions:
    """Slides left out of a stage, each with the reason (a TOML table each).

    Attributes:
        lesion_scoring: Left out of the FROC (test_049, test_114).
        slide_scoring: Left out of the slide AUC (test_049).
        training: Left out of training and validation (normal_086, normal_144).
    """

    lesion_scoring: dict[str, str] = field(default_factory=_lesion_default)
    slide_scoring: dict[str, str] = field(default_factory=_slide_default)
    training: dict[str, str] = field(default_factory=_training_default)


def slide_id_from_name(name: str) -> str:
    """Normalise ``Test_001``, ``tumor_001.tif`` or ``Normal_86`` to ``test_001``."""
    stem = Path(name.strip()).name
    stem = stem.split(".")[0].lower()
    match = re.match(r"^(tumor|normal|test)_(\d+)$", stem)
    if match:
        return f"{match.group(1)}_{int(match.group(2)):03d}"
    return stem


def camelyon16_rows() -> list[CohortRow]:
    """The 400 Camelyon16 slides with split and, for training slides, the label."""
    rows = [CohortRow(f"tumor_{i:03d}", "train", 1) for i in range(1, 111)]
    rows += [CohortRow(f"normal_{i:03d}", "train", 0) for i in range(1, 161)]
    rows += [CohortRow(f"test_{i:03d}", "test", None) for i in range(1, 131)]
    return rows


def write_cohort_manifest(path: Path, rows: list[CohortRow]) -> Path:
    """Write ``slide_id,split,label`` (empty label when unknown)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["slide_id", "split", "label"])
        for row in rows:
            writer.writerow(
                [row.slide_id, row.split, "" if row.label is None else row.label]
            )
    return path


def load_cohort_manifest(path: Path) -> list[CohortRow]:
    """Read a ``slide_id,split,label`` manifest.

    Raises:
        DataError: Missing file, wrong header, duplicate id, unknown split or a
            label other than 0, 1 or empty (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("cohort manifest not found", path)
    rows: list[CohortRow] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:3] != ["slide_id", "split", "label"]:
            raise DataError(
                "header must start with slide_id,split,label; got "
                f"{','.join(header)!r}",
                path,
            )
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 3:
                raise DataError(f"line {line_no}: expected slide_id,split,label", path)
            slide_id, split, label = (c.strip() for c in row[:3])
            if not slide_id or slide_id in seen:
                raise DataError(
                    f"line {line_no}: empty or repeated slide_id {slide_id!r}", path
                )
            if split not in SPLITS:
                raise DataError(
                    f"line {line_no}: split {split!r} is not one of "
                    f"{', '.join(SPLITS)}",
                    path,
                )
            if label not in ("", "0", "1"):
                raise DataError(
                    f"line {line_no}: label {label!r} must be 0, 1 or empty", path
                )
            seen.add(slide_id)
            rows.append(CohortRow(slide_id, split, None if label == "" else int(label)))
    return rows


def read_reference(path: Path) -> dict[str, int]:
    """Read the organisers' test reference: slide id -> 1 tumour / 0 normal.

    Accepts the official ``reference.csv`` rows (``test_001,Tumor,Macro,...``,
    ``test_002,Normal``), with or without a header, ids in any case (``Test_001``),
    extra columns ignored, and labels ``Tumor``/``Tumour``/``Normal`` or 1/0.

    Raises:
        DataError: Missing file, a row without id and label, an unknown label
            word, or an id given twice (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "reference file not found (the organisers' reference.csv ships with "
            "the Camelyon16 test data)",
            path,
        )
    reference: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells):
                continue
            if len(cells) < 2 or not cells[0]:
                raise DataError(f"line {line_no}: expected 'slide_id,label,...'", path)
            word = cells[1].lower()
            slide_id = slide_id_from_name(cells[0])
            if word in _TUMOUR_WORDS:
                label = 1
            elif word in _NORMAL_WORDS:
                label = 0
            elif line_no == 1 and not _ID.match(slide_id):
                continue  # a header line
            else:
                raise DataError(
                    f"line {line_no}: label {cells[1]!r} is not Tumor or Normal", path
                )
            if slide_id in reference:
                raise DataError(f"line {line_no}: {slide_id} given twice", path)
            reference[slide_id] = label
    if not reference:
        raise DataError("no slide rows in the reference file", path)
    return reference


def apply_reference(
    rows: list[CohortRow], reference: dict[str, int]
) -> list[CohortRow]:
    """Fill unknown labels from the reference; a known label must agree.

    Raises:
        DataError: The reference contradicts a label the manifest already has.
    """
    out: list[CohortRow] = []
    for row in rows:
        ref = reference.get(row.slide_id)
        if ref is not None and row.label is not None and ref != row.label:
            raise DataError(
                f"reference says {row.slide_id} is {ref}, the manifest says {row.label}"
            )
        label = row.label if row.label is not None else ref
        out.append(CohortRow(row.slide_id, row.split, label))
    return out


def without(rows: list[CohortRow], excluded: dict[str, str]) -> list[CohortRow]:
    """The rows whose slide is not a key of ``excluded``."""
    return [row for row in rows if row.slide_id not in excluded]
