"""A small chest-CT phantom with lung nodules, for transfer learning (one channel, one foreground class).

Each case is a thorax (skin and fat, muscle, ribs, spine, heart, aorta, mediastinal fat, airways, liver
under the diaphragm) with two lungs whose vessels branch out from the hila, and 0 to 3 nodules of 8-14 mm.
Intensities are Hounsfield units stored as int16.

The chest is a miniature (about `size` voxels across at clinical spacing, a few cm instead of 35 cm) so
that the set trains on a CPU; the nodules are large ones (8-14 mm across: at 2.5-5 mm, a few voxels each, stock
nU-Net found none in a CPU budget of 360 iterations), still a small fraction of the volume.

Why a threshold fails here: nodules have the density of soft tissue, like the vessels they sit among (a
vessel's cross-section looks like a nodule in one slice), the heart, the mediastinum and the chest wall;
some nodules are ground glass, fainter than vessels.
"""
import numpy as np
from scipy import ndimage

from nnunet_scnas.nnunet.datasets.phantom import (
    Grid, SmoothField, SyntheticCase, blur_mm, lobulated_level, paint, paint_tube, random_rotation,
)

CHANNEL_NAMES = {"0": "CT"}
LABELS = {"background": 0, "nodule": 1}

IN_PLANE_SPACING_MM = (0.6, 0.9)
SLICE_SPACING_MM = (1.0, 2.5)
# the median case (in-plane 0.75 mm) has about `size` voxels from right to left
REFERENCE_SPACING_MM = 0.75
NODULE_DIAMETER_MM = (8.0, 14.0)  # see the module docstring
NODULES_PER_CASE_PROBABILITY = (0.15, 0.55, 0.2, 0.1)  # 0, 1, 2 or 3 nodules

HU = {
    "air": -1000, "lung": -850, "fat": -100, "mediastinal_fat": -80, "soft_tissue": 40, "blood": 40,
    "liver": 55, "cancellous_bone": 250, "cortical_bone": 700, "ground_glass": -450,
}


def generate_case(rng: np.random.Generator, size: int) -> SyntheticCase:
    """Draw one case; `size` is roughly the number of voxels from right to left at the reference spacing."""
    in_plane = rng.uniform(*IN_PLANE_SPACING_MM)
    spacing = (rng.uniform(*SLICE_SPACING_MM), in_plane, in_plane)
    fov_x = size * REFERENCE_SPACING_MM
    grid = Grid((0.9 * fov_x, 0.78 * fov_x, fov_x), spacing)
    chest = _Chest(rng, grid, fov_x)

    image = np.full((1,) + grid.shape, HU["air"], np.float32)
    chest.paint_anatomy(rng, image)
    label = _paint_nodules(rng, grid, chest, image)
    ct = _scanner(rng, grid, image[0])
    # the chest is drawn with the front at +y; the written images are LPS (+y towards the back)
    return SyntheticCase(images=[np.ascontiguousarray(ct[:, ::-1])], label=np.ascontiguousarray(label[:, ::-1]),
                         spacing=spacing)


class _Chest:
    """Where the thorax's parts are; `a` and `b` are the body's right-left and back-front semi-axes in mm."""

    def __init__(self, rng, grid, fov_x):
        self.grid = grid
        self.a = 0.44 * fov_x * rng.uniform(0.93, 1.03)
        self.b = self.a * rng.uniform(0.62, 0.74)
        z, y, x = grid.points
        self.z, self.y, self.x = z, y, x
        self.height = grid.shape[0] * grid.spacing[0]
        # a slightly irregular, slightly tapering body outline
        taper = 1 + 0.06 * z / self.height
        outline = 1 + 0.025 * SmoothField(rng, 0.8 * self.a)(grid.points)
        self.r = np.sqrt((x / (self.a * taper)) ** 2 + (y / (self.b * taper)) ** 2) / outline
        self.cavity = self.r < 0.80
        # diaphragm: a dome per side, higher on the right (the liver); lungs only above it
        dome_center = -0.55 * self.height + rng.uniform(0.0, 0.1) * self.height
        dome = dome_center + 0.2 * self.height * (1 - ((np.abs(x) - 0.4 * self.a) / (0.5 * self.a)) ** 2
                                                   - (y / self.b) ** 2) + 0.06 * self.height * (x < 0)
        self.above_diaphragm = z > dome
        self.heart = (((z + 0.25 * self.height) / (0.45 * self.height)) ** 2
                      + ((y - 0.3 * self.b) / (0.42 * self.b)) ** 2 + ((x - 0.12 * self.a) / (0.34 * self.a)) ** 2) < 1
        lung_shape = 1 + 0.05 * SmoothField(rng, 0.6 * self.a)(grid.points)
        lung_level = np.sqrt(((np.abs(x) - 0.40 * self.a) / (0.34 * self.a)) ** 2
                             + ((y + 0.05 * self.b) / (0.78 * self.b)) ** 2) / lung_shape
        self.lungs = (lung_level < 1) & self.cavity & self.above_diaphragm & ~self.heart
        self.hila = [np.array([rng.uniform(-0.1, 0.15) * self.height, 0.0, side * 0.2 * self.a]) for side in (-1, 1)]
        self.carina = np.array([0.2 * self.height, 0.05 * self.b, 0.0])

    def paint_anatomy(self, rng, image):
        a, b, grid = self.a, self.b, self.grid
        paint(image, self.r < 1.0, [HU["fat"]])
        paint(image, self.r < 0.9, [HU["soft_tissue"]])
        paint(image, self.cavity, [HU["mediastinal_fat"]])
        paint(image, self.cavity & ~self.above_diaphragm, [HU["liver"]])
        paint(image, self.heart & self.cavity, [HU["blood"]])
        aorta = np.zeros(grid.shape, np.float32)
        top, bottom = 0.5 * self.height, -0.5 * self.height
        paint_tube(aorta, grid, (bottom, -0.45 * b, 0.15 * a), (top, -0.45 * b, 0.15 * a), 0.1 * a)
        paint(image, aorta, [HU["blood"]])
        self._paint_spine(image)
        paint(image, self.lungs, [HU["lung"]])
        image[0] += (25 * SmoothField(rng, 0.3 * a)(grid.points) * self.lungs).astype(np.float32)
        vessels = np.zeros(grid.shape, np.float32)
        for hilum in self.hila:
            for _ in range(4):
                root = hilum + [rng.uniform(-0.1, 0.1) * self.height, 0.0, 0.0]
                self._grow_vessel(rng, vessels, root, self._outward_direction(rng, hilum), 0.065 * a, 0.2 * a, 5)
        paint(image, vessels * self.lungs, [HU["blood"]])
        self._paint_airways(image)
        self._paint_ribs(rng, image)

    def _outward_direction(self, rng, hilum):
        # lungs are tall: trees fan out up, down, forwards, backwards, and sideways away from the midline
        direction = np.array([1.5 * rng.normal(), rng.normal(), np.sign(hilum[2]) * (abs(rng.normal()) + 0.3)])
        return direction / np.linalg.norm(direction)

    def _grow_vessel(self, rng, occupancy, start, direction, radius, length, depth):
        """A vessel tree: each segment splits in two thinner, shorter, diverging branches."""
        end = start + direction * length
        paint_tube(occupancy, self.grid, start, end, radius)
        if depth <= 1:
            return
        for _ in range(2):
            turn = random_rotation(rng, 45.0)
            child = turn @ direction
            self._grow_vessel(rng, occupancy, end, child / np.linalg.norm(child), radius * rng.uniform(0.7, 0.85),
                              length * rng.uniform(0.65, 0.85), depth - 1)

    def _paint_spine(self, image):
        a, b = self.a, self.b
        body = np.sqrt((self.x / (0.15 * a)) ** 2 + ((self.y + 0.68 * b) / (0.2 * b)) ** 2)
        paint(image, body < 1.0, [HU["cortical_bone"]])
        paint(image, body < 0.75, [HU["cancellous_bone"]])
        canal = np.sqrt((self.x / (0.06 * a)) ** 2 + ((self.y + 0.95 * b) / (0.09 * b)) ** 2) < 1
        paint(image, canal & (self.r < 1), [HU["soft_tissue"] - 20])

    def _paint_airways(self, image):
        """Trachea down to the carina, then a main bronchus to each hilum: air inside a soft-tissue wall."""
        top = np.array([0.5 * self.height + 1.0, self.carina[1], 0.0])
        for radius, tissue in ((0.09 * self.a, "soft_tissue"), (0.065 * self.a, "air")):
            occupancy = np.zeros(self.grid.shape, np.float32)
            paint_tube(occupancy, self.grid, top, self.carina, radius)
            for hilum in self.hila:
                paint_tube(occupancy, self.grid, self.carina, hilum + [0.0, 0.05 * self.b, 0.0], 0.8 * radius)
            paint(image, occupancy, [HU[tissue]])

    def _paint_ribs(self, rng, image):
        """Oblique ribs in the chest wall, missing at the front (cartilage) and at the spine."""
        angle = np.arctan2(self.x, self.y)  # 0 at the front midline
        arc = np.abs(angle) * 0.8 * self.a
        period = rng.uniform(0.28, 0.36) * self.height
        phase = (self.z + 0.35 * arc + rng.uniform(0, period)) / period
        dz = (phase - np.round(phase)) * period
        dr = (self.r - 0.84) * self.a
        distance = np.sqrt(dz ** 2 + dr ** 2)
        soft = self.grid.spacing[2]
        fraction = np.clip(0.5 + (0.06 * self.a - distance) / soft, 0, 1)
        fraction *= (np.abs(angle) > np.deg2rad(40)) & (np.abs(angle) < np.deg2rad(165))
        paint(image, fraction.astype(np.float32), [HU["cortical_bone"]])


def _paint_nodules(rng, grid, chest, image):
    """Add 0-3 nodules well inside the lungs; returns the label map."""
    label = np.zeros(grid.shape, np.uint8)
    depth_in_lung = ndimage.distance_transform_edt(chest.lungs, sampling=grid.spacing)
    count = rng.choice(len(NODULES_PER_CASE_PROBABILITY), p=NODULES_PER_CASE_PROBABILITY)
    for _ in range(count):
        radius = rng.uniform(*NODULE_DIAMETER_MM) / 2
        candidates = np.argwhere(depth_in_lung > 0.8 * radius)
        if len(candidates) == 0:
            continue
        center = [axis.ravel()[i] for axis, i in zip(grid.points, candidates[rng.integers(len(candidates))])]
        radii = radius * rng.uniform(0.85, 1.15, 3)
        nodule = (lobulated_level(rng, grid.points, center, radii, lobulation=0.2) > 0) & chest.lungs
        density = HU["ground_glass"] + rng.uniform(-100, 100) if rng.random() < 0.2 else rng.uniform(-20, 60)
        paint(image, nodule, [density])
        label[nodule] = LABELS["nodule"]
    return label


def _scanner(rng, grid, hu):
    """Point spread, then correlated noise as in a reconstructed CT, then int16 Hounsfield units."""
    hu = blur_mm(hu, grid.spacing, 0.45 * np.asarray(grid.spacing))
    noise = ndimage.gaussian_filter(rng.normal(size=grid.shape), 0.6)
    hu += rng.uniform(12, 30) * noise / (noise.std() + 1e-8)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)
