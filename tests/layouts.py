"""Tiny files in every layout the readers accept, built by hand so the tests know every value."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from perfusion.io import Case, InputCurves, write_case

SHAPE = (6, 5, 3)
TIMES_S = np.array([0.0, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0])  # non-uniform on purpose
AFFINE = np.diag([2.0, 2.0, 5.0, 1.0])


def ctp_values(shape: tuple[int, ...] = SHAPE, n_frames: int = len(TIMES_S)) -> np.ndarray:
    """A float32 (X, Y, Z, T) HU scan: air -1000 on the x = 0 plane, brain 30 HU + 5 HU per frame."""
    ctp = np.full((*shape, n_frames), 30.0, dtype=np.float32)
    ctp += 5.0 * np.arange(n_frames, dtype=np.float32)
    ctp[0] = -1000.0
    return ctp


def save_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, dt_s: float | None = None
) -> Path:
    """Write ``data`` as NIfTI; ``dt_s`` sets the time step (s; 0 = unset), None keeps nibabel's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data), affine)
    if dt_s is not None:
        image.header.set_xyzt_units("mm", "sec")
        zooms = list(image.header.get_zooms())
        zooms[-1] = dt_s
        image.header.set_zooms(zooms)
    nib.save(image, str(path))
    return path


def make_case(folder: Path, with_curves: bool = True) -> Case:
    """Write a valid case folder (CTP, FrameTimes, aif.tsv, brain mask, 2-voxel core)."""
    ctp = ctp_values()
    brain = np.zeros(SHAPE, bool)
    brain[1:] = True
    core = np.zeros(SHAPE, bool)
    core[2, 2, 1] = core[3, 2, 1] = True
    aif = 10.0 + 300.0 * np.exp(-0.5 * ((TIMES_S - 5.0) / 1.5) ** 2)
    curves = InputCurves(TIMES_S, aif, 0.5 * aif) if with_curves else None
    case = Case(folder, ctp, AFFINE, TIMES_S, curves=curves, brainmask=brain, core=core)
    write_case(folder, case)
    return case


def make_isles2018(root: Path, n_frames: int = 6) -> Path:
    """``case_1/SMIR.Brain.XX.O.<kind>.<id>/...nii``: 5-D (X, Y, Z, 1, T) CTP, pixdim[4] unset."""
    case = root / "case_1"
    ctp = ctp_values(n_frames=n_frames)[:, :, :, None, :]
    kinds = {"CT_4DPWI.345": ctp, "CT.344": ctp[..., 0, 0]}
    for i, kind in enumerate(("CBF", "CBV", "MTT", "Tmax")):
        kinds[f"CT_{kind}.{346 + i}"] = np.full(SHAPE, float(i + 1), np.float32)
    core = np.zeros(SHAPE, np.uint8)
    core[4, 1:3, 2] = 1
    kinds["OT.350"] = core
    for kind, data in kinds.items():
        name = f"SMIR.Brain.XX.O.{kind}"
        save_nifti(case / name / f"{name}.nii", data, dt_s=0.0 if data.ndim == 5 else None)
    return case


# ISLES 2024: CTP on a 2 x 2 x 5 mm grid at the origin; lesion mask on an LAS 1 x 1 x 2.5 mm
# "NCCT" grid with x = 11 - i. The lesion covers world x 4..7, y 2..5, z 5..7.5 mm, so on the
# CTP grid (centres x = 2i, y = 2j, z = 5k) exactly voxels i in {2, 3}, j in {1, 2}, k = 1.
NCCT_AFFINE = np.array([[-1.0, 0, 0, 11.0], [0, 1.0, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]])
ISLES2024_CORE = [(2, 1, 1), (2, 2, 1), (3, 1, 1), (3, 2, 1)]


def make_isles2024(root: Path, subjects: tuple[str, ...] = ("sub-stroke0001",)) -> Path:
    """``raw_data/sub-*/ses-01/`` CTP + perfusion maps; ``derivatives/sub-*/ses-02/`` lesion mask."""
    for sub in subjects:
        ses = root / "raw_data" / sub / "ses-01"
        save_nifti(ses / f"{sub}_ses-01_ctp.nii.gz", ctp_values(), dt_s=1.0)
        tmax = np.full(SHAPE, 4.0, np.float32)
        tmax[0] = -30.0  # the non-brain code
        cbf = np.full(SHAPE, 50.0, np.float32)
        cbf[0] = 0.0
        save_nifti(ses / "perfusion-maps" / f"{sub}_ses-01_tmax.nii.gz", tmax)
        save_nifti(ses / "perfusion-maps" / f"{sub}_ses-01_cbf.nii.gz", cbf)
        lesion = np.zeros((12, 10, 6), np.uint16)
        lesion[4:8, 2:6, 2:4] = 1  # x = 11 - i in 4..7, y in 2..5, z = 2.5k in 5..7.5
        # a registered copy on the NCCT grid, which the reader must not prefer over the raw CTP
        deriv = root / "derivatives" / sub / "ses-01"
        save_nifti(
            deriv / f"{sub}_ses-01_space-ncct_ctp.nii.gz",
            np.zeros((12, 10, 6, 2), np.float32),
            NCCT_AFFINE,
        )
        deriv = root / "derivatives" / sub / "ses-02"
        save_nifti(deriv / f"{sub}_ses-02_space-ncct_lesion-msk.nii.gz", lesion, NCCT_AFFINE)
    return root


# DICOM: 3 slices x 5 frames, 6 rows x 8 columns, 0.5 mm rows, 0.7 mm columns, 5 mm slices.
DICOM_TIMES_S = np.array([0.0, 1.0, 2.0, 4.0, 7.0])
DICOM_ROWS, DICOM_COLS, DICOM_SLICES = 6, 8, 3
DICOM_ORIGIN_LPS = (-10.0, -20.0, 0.0)


def dicom_hu(frame: int, z: int, row: int, col: int) -> int:
    """The HU value written at (frame, slice, row, column): every pixel distinct within a frame."""
    return 30 + 10 * frame + 100 * z + row * DICOM_COLS + col


def make_dicom_series(folder: Path, rescale: bool = True, prefix: str = "IM") -> list[Path]:
    """A CT perfusion series (stored = HU + 1024 with RescaleIntercept -1024), non-uniform times.

    Slices within a frame are 0.1 s apart, so the frame time is its first slice's time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame_uid = generate_uid(), generate_uid(), generate_uid()
    paths, number = [], 0
    rows, cols = np.meshgrid(np.arange(DICOM_ROWS), np.arange(DICOM_COLS), indexing="ij")
    for t, time_s in enumerate(DICOM_TIMES_S):
        for z in range(DICOM_SLICES):
            number += 1
            ds = _ct_dataset(series, study, frame_uid, number)
            ds.AcquisitionNumber = t + 1
            ds.AcquisitionTime = _tm(10 * 3600 + 5 * 60 + 3.0 + time_s + 0.1 * z)
            ds.ImagePositionPatient = [DICOM_ORIGIN_LPS[0], DICOM_ORIGIN_LPS[1], 5.0 * z]
            if rescale:
                ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
            hu = dicom_hu(t, z, rows, cols)
            ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
            # files named in shuffled order: readers must not rely on names
            path = folder / f"{prefix}{(number * 7) % 97:04d}"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _tm(seconds: float) -> str:
    h, m, s = int(seconds // 3600), int(seconds % 3600 // 60), seconds % 60
    return f"{h:02d}{m:02d}{s:09.6f}"


def _ct_dataset(series: str, study: str, frame_uid: str, number: int) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("synthetic", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.PatientName, ds.PatientID = "CT", "Synthetic", "Phantom", "0"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_uid
    ds.SeriesNumber, ds.InstanceNumber = 3, number
    ds.StudyDate = ds.AcquisitionDate = "20240101"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.7], 5.0
    ds.Rows, ds.Columns, ds.SamplesPerPixel = DICOM_ROWS, DICOM_COLS, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds
