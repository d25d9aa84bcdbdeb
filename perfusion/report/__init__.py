"""Figures of perfusion maps: the clinical page, the slice mosaic, the fit diagnostics.

Drawing only (matplotlib, Agg): numbers and regions come from the caller
(:mod:`perfusion.fitting.report` assembles them after a fit; ``experiments.phantom_figure``
draws a phantom's truth for the README). Every page is radiological: the patient's right on the
image's left.
"""

from perfusion.report.clinical import Header, Reference, clinical_figure
from perfusion.report.diagnostics import diagnostics_figure
from perfusion.report.inputs import ArterialInput
from perfusion.report.mosaic import mosaic_figure
from perfusion.report.orientation import AxialView, mark_sides
from perfusion.report.panels import SCALES, MapSet
from perfusion.report.slices import brain_slices, lesion_slices

__all__ = [
    "SCALES",
    "ArterialInput",
    "AxialView",
    "Header",
    "MapSet",
    "Reference",
    "brain_slices",
    "clinical_figure",
    "diagnostics_figure",
    "lesion_slices",
    "mark_sides",
    "mosaic_figure",
]
