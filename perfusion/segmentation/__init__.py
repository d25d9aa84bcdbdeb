"""Infarct-core segmentation: relative CBF, a MONAI U-Net, leave-one-out CV and its metrics.

Light modules are exported here; the Lightning/MONAI parts are imported from their modules
(``perfusion.segmentation.module.SegmentationModule``,
``perfusion.segmentation.data.LeaveOneOutDataModule``) so that reading metrics or rCBF does not
load them.
"""

from perfusion.clinical import standard_x_mm
from perfusion.segmentation.config import (
    CohortConfig,
    LoocvConfig,
    SegmentConfig,
    TrainConfig,
    UNetConfig,
)
from perfusion.segmentation.metrics import detected, dice, patient_metrics, summarise, volume_ml
from perfusion.segmentation.rcbf import (
    hemisphere,
    relative_cbf,
    restrict_to_hemisphere,
    threshold_core,
)

__all__ = [
    "CohortConfig",
    "LoocvConfig",
    "SegmentConfig",
    "TrainConfig",
    "UNetConfig",
    "detected",
    "dice",
    "hemisphere",
    "patient_metrics",
    "relative_cbf",
    "restrict_to_hemisphere",
    "standard_x_mm",
    "summarise",
    "threshold_core",
    "volume_ml",
]
