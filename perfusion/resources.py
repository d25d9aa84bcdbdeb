"""What a run needs before it starts: a writable output folder and enough memory.

Both checks are cheap (no data read, no torch), so a command makes them before any work and
refuses with one line naming the path, instead of failing after minutes or being killed by the
kernel. Memory is estimated from the scan's dimensions in its NIfTI header (nibabel reads the
header only) times a per-command cost measured on phantoms (see :data:`COSTS`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from math import prod
from pathlib import Path

import nibabel as nib

from perfusion.errors import PerfusionError

GIB = 1024**3


@dataclass(frozen=True)
class MemoryCost:
    """Peak resident memory of a command: ``base_bytes + bytes_per_value * X*Y*Z*T``.

    The slopes are the peak RSS (``/usr/bin/time -f %M``) of two brain phantoms,
    48 x 48 x 8 and 96 x 96 x 24 voxels x 60 frames, divided by the difference in values,
    rounded up by about 15 %; the bases are the smaller run's peak less its slope share.
    """

    bytes_per_value: float
    base_bytes: float


COSTS = {
    "convert": MemoryCost(14, 0.1 * GIB),  # measured 12 B/value, 63 MB
    "preprocess": MemoryCost(20, 0.3 * GIB),  # 17 B/value (float32 copies, registration)
    "fit": MemoryCost(28, 0.7 * GIB),  # 25 B/value with preprocessing; torch itself ~0.5 GB
}


def check_out_dir(out: str | Path) -> Path:
    """The absolute output folder, refused when it is a file or cannot be created or written.

    The nearest existing ancestor must be a folder that takes a file: a probe file is created
    and removed there (``os.access`` alone says yes to root on read-only or virtual file systems).
    """
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise PerfusionError("out= names an existing file, not a folder", path)
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PerfusionError("out= lies under a file, not a folder", existing)
    try:
        handle, probe = tempfile.mkstemp(prefix=".perfusion-probe-", dir=existing)
    except OSError as exc:
        raise PerfusionError(f"out= is not writable ({exc.strerror})", existing) from None
    os.close(handle)
    os.unlink(probe)
    return path


def scan_shape(path: str | Path) -> tuple[int, ...] | None:
    """The image shape from a NIfTI header (no data read); None when unreadable.

    An unreadable file is left to the command's validating reader, which names the fault.
    """
    try:
        return tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception:  # nibabel raises many types; the reader reports them properly
        return None


def available_memory() -> tuple[int, int]:
    """(available, total) bytes of RAM: MemAvailable from /proc/meminfo, else free pages."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = page * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, total
    except OSError:
        pass
    return page * os.sysconf("SC_AVPHYS_PAGES"), total


def estimate_bytes(command: str, shape: tuple[int, ...]) -> float:
    """Estimated peak memory (bytes) of ``command`` on an image of ``shape`` (X, Y, Z, T)."""
    cost = COSTS[command]
    return cost.base_bytes + cost.bytes_per_value * prod(shape)


def check_memory(command: str, scan: str | Path, available: int | None = None) -> None:
    """Refuse, naming the estimate and the machine's memory, when ``scan`` needs more.

    Args:
        command: a key of :data:`COSTS`.
        scan: the NIfTI whose header gives the dimensions (a missing or unreadable file passes:
            the reader then fails with its own message).
        available: bytes available (tests); default :func:`available_memory`.
    """
    shape = scan_shape(scan) if Path(scan).is_file() else None
    if shape is None:
        return
    need = estimate_bytes(command, shape)
    have, total = available_memory()
    have = have if available is None else available
    if need > have:
        dims = " x ".join(map(str, shape))
        raise PerfusionError(
            f"{command} needs about {need / GIB:.1f} GiB of memory for a {dims} image; this "
            f"machine has {have / GIB:.1f} GiB available ({total / GIB:.1f} GiB total)",
            scan,
        )
