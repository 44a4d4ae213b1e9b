"""The enums of sae.h as Python IntEnums (values pinned by the header).

C_ENUMS maps each C enum to its Python class and the prefix its constants
drop: SAE_ARCH_TOPK is Arch.TOPK, SAE_E_FORMAT is Status.E_FORMAT.
tests/python/test_coverage.py checks every constant of the header is here
with its value.
"""

from __future__ import annotations

import enum
from typing import Dict, Tuple, Type


class Status(enum.IntEnum):
    """enum sae_status: what every fallible function returns."""
    OK = 0
    E_INVALID_ARG = -1
    E_NOMEM = -2
    E_NONFINITE = -3
    E_IO = -4
    E_FORMAT = -5
    E_STATE = -6
    E_COMM = -7


class Tensor(enum.IntEnum):
    """enum sae_tensor: the model's tensors, SAELens layout, row-major."""
    W_ENC = 0      # d_in x d_sae
    B_ENC = 1      # d_sae
    W_DEC = 2      # d_sae x d_in
    B_DEC = 3      # d_in
    THRESHOLD = 4  # JumpReLU: d_sae; BatchTopK, Matryoshka: 1; others: none
    W_SKIP = 5     # skip transcoders: d_out x d_in
    B_MAG = 6      # Gated: d_sae
    R_MAG = 7      # Gated: d_sae


class Arch(enum.IntEnum):
    """enum sae_arch: the activation, fixed when a model is created."""
    RELU = 0
    TOPK = 1
    BATCHTOPK = 2
    JUMPRELU = 3
    GATED = 4
    MATRYOSHKA = 5


class ModelKind(enum.IntEnum):
    """enum sae_model_kind: an autoencoder, or a transcoder (x -> y)."""
    AUTOENCODER = 0
    TRANSCODER = 1
    SKIP_TRANSCODER = 2


class Option(enum.IntEnum):
    """enum sae_option: the optimizer's options. Keyword names are the
    lower-case member names (lr, l1_coeff, total_steps, ...)."""
    LR = 1
    BETA1 = 2
    BETA2 = 3
    EPS = 4
    L1_COEFF = 5
    GRAD_CLIP = 6
    THREADS = 7
    KERNEL = 8
    TOTAL_STEPS = 9
    L1_WARMUP_FRACTION = 10
    LR_WARMUP_STEPS = 11
    LR_DECAY_FRACTION = 12
    LR_SCHEDULE = 13
    AUXK_COEFF = 20
    AUXK_K = 21
    DEAD_WINDOW = 22
    JUMPRELU_BANDWIDTH = 23
    THRESHOLD_BETA = 24
    GEMM = 30
    PRECISION = 31


class Kernel(enum.IntEnum):
    """enum sae_kernel: values of Option.KERNEL."""
    AUTO = 0
    DENSE = 1
    SPARSE = 2


class Gemm(enum.IntEnum):
    """enum sae_gemm: values of Option.GEMM, the step's GEMM backend."""
    AUTO = 0
    CBLAS = 1
    ONEDNN = 2


class Precision(enum.IntEnum):
    """enum sae_precision: values of Option.PRECISION, the encoder GEMM's inputs."""
    FP32 = 0
    BF16 = 1


class LrSchedule(enum.IntEnum):
    """enum sae_lr_schedule: values of Option.LR_SCHEDULE."""
    CONSTANT = 0
    LINEAR = 1
    COSINE = 2


class BDecInit(enum.IntEnum):
    """enum sae_b_dec_init: methods of Model.init_b_dec."""
    MEAN = 0
    GEOMETRIC_MEDIAN = 1


class Parallel(enum.IntEnum):
    """enum sae_parallel: the modes of Optimizer.set_comm."""
    DATA = 1      # every rank the whole model, its share of the global batch
    FEATURES = 2  # every rank a shard of the features, the whole batch


class OptionFlag(enum.IntFlag):
    """enum sae_option_flags: how to read sae_option_bounds."""
    LOWER_OPEN = 1
    UPPER_OPEN = 2
    WHOLE = 4


# C enum name: (Python class, prefix of its constants)
C_ENUMS: Dict[str, Tuple[Type[enum.Enum], str]] = {
    "sae_status": (Status, "SAE_"),
    "sae_tensor": (Tensor, "SAE_"),
    "sae_arch": (Arch, "SAE_ARCH_"),
    "sae_model_kind": (ModelKind, "SAE_KIND_"),
    "sae_option": (Option, "SAE_OPT_"),
    "sae_kernel": (Kernel, "SAE_KERNEL_"),
    "sae_gemm": (Gemm, "SAE_GEMM_"),
    "sae_precision": (Precision, "SAE_PRECISION_"),
    "sae_lr_schedule": (LrSchedule, "SAE_LR_"),
    "sae_b_dec_init": (BDecInit, "SAE_B_DEC_"),
    "sae_option_flags": (OptionFlag, "SAE_OPTION_"),
    "sae_parallel": (Parallel, "SAE_PARALLEL_"),
}

# Options whose values are members of an enum (set by name or member too).
OPTION_VALUES: Dict[Option, Type[enum.IntEnum]] = {
    Option.KERNEL: Kernel,
    Option.LR_SCHEDULE: LrSchedule,
    Option.GEMM: Gemm,
    Option.PRECISION: Precision,
}

# Architecture names as SAELens and sae-train spell them.
ARCH_NAMES: Dict[str, Arch] = {
    "relu": Arch.RELU, "standard": Arch.RELU, "topk": Arch.TOPK,
    "batchtopk": Arch.BATCHTOPK, "jumprelu": Arch.JUMPRELU, "gated": Arch.GATED,
    "matryoshka": Arch.MATRYOSHKA, "matryoshka_batchtopk": Arch.MATRYOSHKA,
}


def enum_value(cls: Type[enum.IntEnum], value: object, what: str) -> enum.IntEnum:
    """value as a member of cls: a member, its number, or its name in any case
    ("topk", "TOPK"). TypeError/ValueError naming `what` otherwise."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        if cls is Arch and value.lower() in ARCH_NAMES:
            return ARCH_NAMES[value.lower()]
        if key in cls.__members__:
            return cls.__members__[key]
        names = ", ".join(m.lower() for m in cls.__members__)
        raise ValueError(f"{what}: unknown {cls.__name__} {value!r} (one of {names})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected a {cls.__name__}, its name or number, "
                        f"got {type(value).__name__}")
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{what}: {value} is not a {cls.__name__} "
                         f"({', '.join(f'{m.name}={m.value}' for m in cls)})") from None
