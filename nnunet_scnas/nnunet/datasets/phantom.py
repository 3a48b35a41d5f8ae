"""Building blocks shared by the synthetic phantoms: voxel grids in mm, random smooth fields, blobs, tubes.

Shapes are defined in physical millimetres and only sampled on the voxel grid at the end, so a case keeps
its anatomy whatever spacing it draws. Arrays are numpy (z, y, x), like SimpleITK's GetArrayFromImage.
"""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class SyntheticCase:
    """One generated case: channel images and a label map on the same grid.

    Args:
        images: one array per channel, shape (z, y, x).
        label: integer label map, shape (z, y, x).
        spacing: voxel size in mm, numpy order (z, y, x).
    """
    images: list
    label: np.ndarray
    spacing: tuple


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """A generator for one case that depends only on (seed, split, index), not on how many cases are made."""
    split_code = {"train": 0, "test": 1}[split]
    return np.random.default_rng([seed, split_code, index])


class Grid:
    """Voxel centres of a volume centred on the origin, in mm, as broadcastable (z, y, x) axes.

    Args:
        extent_mm: field of view per axis (z, y, x); the voxel count is extent / spacing, at least 1.
        spacing: voxel size per axis (z, y, x) in mm.
    """

    def __init__(self, extent_mm, spacing):
        self.spacing = tuple(float(s) for s in spacing)
        self.shape = tuple(max(1, int(round(e / s))) for e, s in zip(extent_mm, self.spacing))
        axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(self.shape, self.spacing)]
        self.z = axes[0][:, None, None]
        self.y = axes[1][None, :, None]
        self.x = axes[2][None, None, :]

    @property
    def points(self):
        """The (z, y, x) coordinate arrays, broadcastable against each other."""
        return self.z, self.y, self.x

    def index_box(self, low_mm, high_mm):
        """Slices of the voxels whose centres may fall in the axis-aligned box [low_mm, high_mm]."""
        boxes = []
        for lo, hi, n, s in zip(low_mm, high_mm, self.shape, self.spacing):
            first = int(np.floor(lo / s + (n - 1) / 2.0))
            last = int(np.ceil(hi / s + (n - 1) / 2.0))
            boxes.append(slice(max(first, 0), max(min(last + 1, n), 0)))
        return tuple(boxes)

    def sub_points(self, box):
        """The coordinate arrays restricted to a box from `index_box`."""
        return self.z[box[0]], self.y[:, box[1]], self.x[:, :, box[2]]


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A 3x3 rotation by a random angle up to max_degrees about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def rotate(points, rotation: np.ndarray, center=(0.0, 0.0, 0.0)):
    """Coordinates relative to `center`, expressed in the rotated frame (full arrays, one per axis)."""
    shifted = [p - c for p, c in zip(points, center)]
    return [sum(rotation[row, col] * shifted[col] for col in range(3)) for row in range(3)]


class SmoothField:
    """A zero-mean, unit-variance random field made of plane waves, defined in mm.

    Being a sum of a few cosines it can be evaluated on any sub-grid (or any spacing) with the same
    result, and it draws a fixed amount of randomness whatever the grid size.

    Args:
        rng: the case's generator.
        wavelength_mm: typical size of the field's bumps.
        waves: how many plane waves; more looks less regular.
    """

    def __init__(self, rng: np.random.Generator, wavelength_mm: float, waves: int = 10):
        directions = rng.normal(size=(waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavenumbers = 2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.4, size=waves))
        self.k = directions * wavenumbers[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=waves)
        self.amplitude = np.sqrt(2.0 / waves)

    def __call__(self, points):
        z, y, x = points
        total = 0.0
        for (kz, ky, kx), phase in zip(self.k, self.phase):
            total = total + np.cos(kz * z + ky * y + kx * x + phase)
        return self.amplitude * total


def lobulated_level(rng, points, center, radii, lobulation=0.3, rotation_degrees=180.0):
    """A level function that is positive inside a lobulated, rotated ellipsoid.

    1 - (ellipsoidal distance) + lobulation * smooth field: the field bends the surface into lobes whose
    size is about the mean radius, so shapes are irregular but still one connected body for lobulation < ~0.4.
    """
    rotation = random_rotation(rng, rotation_degrees)
    field = SmoothField(rng, wavelength_mm=1.6 * float(np.mean(radii)))
    local = rotate(points, rotation, center)
    distance = np.sqrt(sum((c / r) ** 2 for c, r in zip(local, radii)))
    return 1.0 - distance + lobulation * field(points)


def paint_tube(occupancy, grid: Grid, start, end, radius: float):
    """Raise `occupancy` (in place) to the partial-volume fraction of a cylinder from start to end (mm).

    Only the segment's bounding box is touched; the fraction ramps over one in-plane voxel so that vessels
    thinner than a voxel fade out instead of flickering on and off.
    """
    start, end = np.asarray(start, float), np.asarray(end, float)
    soft = grid.spacing[2]
    margin = radius + soft
    box = grid.index_box(np.minimum(start, end) - margin, np.maximum(start, end) + margin)
    if any(b.stop <= b.start for b in box):
        return
    z, y, x = grid.sub_points(box)
    direction = end - start
    length_sq = float(direction @ direction) or 1e-12
    t = ((z - start[0]) * direction[0] + (y - start[1]) * direction[1] + (x - start[2]) * direction[2]) / length_sq
    t = np.clip(t, 0.0, 1.0)
    distance = np.sqrt((z - start[0] - t * direction[0]) ** 2 + (y - start[1] - t * direction[1]) ** 2
                       + (x - start[2] - t * direction[2]) ** 2)
    fraction = np.clip(0.5 + (radius - distance) / soft, 0.0, 1.0)
    np.maximum(occupancy[box], fraction, out=occupancy[box])


def paint(image: np.ndarray, occupancy, values) -> None:
    """Lay a tissue over `image` (channels, z, y, x) in place: a mask or a fraction in [0, 1] per voxel."""
    values = np.asarray(values, dtype=image.dtype)
    occupancy = np.broadcast_to(occupancy, image.shape[1:])  # shapes constant along an axis may come flat
    if occupancy.dtype == bool:
        image[:, occupancy] = values[:, None]
    else:
        image *= 1.0 - occupancy
        image += values[:, None, None, None] * occupancy


def blur_mm(image: np.ndarray, spacing, sigma_mm) -> np.ndarray:
    """Gaussian blur of a (z, y, x) array with a width given in mm per axis (a scanner's point spread)."""
    sigma_vox = [s_mm / s for s_mm, s in zip(np.broadcast_to(sigma_mm, 3), spacing)]
    return ndimage.gaussian_filter(image, sigma_vox, mode="nearest")


def erode(mask: np.ndarray, voxels: int = 1) -> np.ndarray:
    """Binary erosion with a 6-connected element, `voxels` times."""
    return ndimage.binary_erosion(mask, iterations=voxels) if voxels > 0 else mask
