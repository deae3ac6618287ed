"""The option vocabularies, typed once: the core validates against them, the CLI's choices and the GUI's
combo boxes are generated from them. Members are ``str`` so settings files and JSON keep plain strings."""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    L2 = "l2"
    COSINE = "cosine"
    CANBERRA = "canberra"


class EntropyNorm(StrEnum):
    LOG_K = "log_k"  # the paper's H / log k
    LOG_MIN_KC = "log_min_kc"  # H / log min(k, classes)


class IndexKind(StrEnum):
    AUTO = "auto"
    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"
    COMPRESSED = "compressed"  # the library's saved PCA + IVF-PQ index (cellsearch library compress)


class ColourMode(StrEnum):
    NONE = "none"
    CLAHE = "clahe"
    REINHARD = "reinhard"
    DEVICE_REINHARD = "device_reinhard"
    MACENKO = "macenko"
    GRAYSCALE = "grayscale"


class ScaleMode(StrEnum):
    NONE = "none"
    PHYSICAL = "physical"  # by the pixel sizes of the two devices
    CELL_SIZE = "cell_size"  # by the cell's own diameter


class CellObjects(StrEnum):
    ALL = "all"
    NUCLEATED = "nucleated"  # cells with a stained nucleus, e.g. white blood cells


class Segmenter(StrEnum):
    AUTO = "auto"  # SAM on a CUDA GPU, classical on the CPU (segmentation/choice.py)
    CLASSICAL = "classical"
    MOBILESAM = "mobilesam"
    SAM_VIT_B = "sam_vit_b"
    SAM_VIT_L = "sam_vit_l"
    SAM_VIT_H = "sam_vit_h"


class Preset(StrEnum):
    """Named crop preparations (their settings: ``crops.prepare.PRESETS``)."""

    RAW = "raw"
    CENTRED = "centred"
    CENTRED_SCALED = "centred_scaled"
    CELL = "cell"
    CELL_DEVICE_COLOUR = "cell_device_colour"
    CELL_GRAYSCALE = "cell_grayscale"
    CELL_CLAHE = "cell_clahe"


class Device(StrEnum):
    """Device choices offered in menus; ``cuda:N`` is accepted too."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Pool(StrEnum):
    """Which of a transformer's final tokens make the embedding."""

    CLS = "cls"
    MEAN = "mean"
    CLS_MEAN = "cls+mean"


class Weights(StrEnum):
    """Which parameters a network starts from."""

    PRETRAINED = "pretrained"
    RANDOM = "random"  # random-initialised: a control


class QueryKind(StrEnum):
    """What dropped query images are: whole fields to segment, single-cell crops, or decided per image."""

    AUTO = "auto"
    FIELDS = "fields"
    CROPS = "crops"


class FeatureStorage(StrEnum):
    """Number type of a run's saved feature arrays (float16: half the disk)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


VIEWS = (1, 4, 8)  # test-time views averaged per crop


def values(options: type[StrEnum]) -> list[str]:
    """Plain string values in declaration order (argparse choices, combo box items)."""
    return [member.value for member in options]


class StoppingRule(StrEnum):
    """What the adaptive vote does when no k of the schedule reaches the entropy threshold."""

    PAPER = "paper"  # the paper: the last k of the schedule (up to the whole library)
    LOWEST_ENTROPY = "lowest_entropy"  # the k whose weighted vote is least ambiguous, ties to the smaller k


class DeviceVote(StrEnum):
    """How cells labelled on the query device vote (classify.device_vote)."""

    LIBRARY = "library"  # they join the reference library (the app's Add labelled cells to reference)
    LOO_MIX = "loo_mix"  # also vote alone; the two votes mixed by a weight chosen by leave-one-out
