"""Digital CT-perfusion phantoms with known truth: a varied brain cohort and the Kudo design.

The names below load on first use (:mod:`perfusion.lazy`), so ``perfusion.phantom.config`` is
importable without torch.
"""

from typing import TYPE_CHECKING

from perfusion.lazy import lazy_exports

if TYPE_CHECKING:
    from perfusion.phantom.brain import PhantomPatient, make_patient
    from perfusion.phantom.cohort import make_cohort, patient_dir
    from perfusion.phantom.config import PhantomConfig
    from perfusion.phantom.kudo import make_kudo
    from perfusion.phantom.truth import write_patient

__all__ = [
    "PhantomConfig",
    "PhantomPatient",
    "make_cohort",
    "make_kudo",
    "make_patient",
    "patient_dir",
    "write_patient",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "brain": ("PhantomPatient", "make_patient"),
        "cohort": ("make_cohort", "patient_dir"),
        "config": ("PhantomConfig",),
        "kudo": ("make_kudo",),
        "truth": ("write_patient",),
    },
)
