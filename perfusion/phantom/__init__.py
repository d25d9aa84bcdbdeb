"""Digital CT-perfusion phantoms with known truth: a varied brain cohort and the Kudo design."""

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
