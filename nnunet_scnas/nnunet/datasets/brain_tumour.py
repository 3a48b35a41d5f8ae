"""A brain-tumour-like multi-modal MRI phantom with the label semantics of MSD Task01 BrainTumour.

Each case is a head (scalp, skull, CSF, cortex, white matter, deep grey matter, ventricles with choroid
plexus, veins) with one or two gliomas: edema around a tumour core; the core is either a ring of
enhancing tumour around necrosis, a non-enhancing mass with enhancing nodules, or non-enhancing only.
Images are int16 in arbitrary MRI units, with a gain of their own per case and channel.

The anatomy is a miniature: the head spans about `size` voxels at clinical spacing (about 5 cm instead of
18 cm) so that the set trains on a CPU; proportions and contrasts follow real MRI.

Why a threshold fails here: white-matter lesions and the scalp are as bright as edema on FLAIR; CSF is as
bright as necrosis on T2; choroid plexus, veins and scalp fat are as bright as enhancing tumour on T1gd;
and a smooth bias field moves every tissue's intensity across the volume.
"""
import numpy as np
from scipy import ndimage

from nnunet_scnas.nnunet.datasets.phantom import (
    Grid, SmoothField, SyntheticCase, blur_mm, erode, lobulated_level, paint, paint_tube, random_rotation, rotate,
)

CHANNEL_NAMES = {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"}
LABELS = {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}
# `--regions`: BraTS 2021 as nnU-Net converts it (Dataset137_BraTS2021). Its conversion maps BraTS's edema,
# necrosis and enhancing tumour to labels 1, 2, 3, as here, so the same label images train as its nested regions.
REGION_LABELS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}
REGIONS_CLASS_ORDER = [1, 2, 3]

IN_PLANE_SPACING_MM = (0.9, 1.3)
SLICE_SPACING_MM = (1.0, 3.0)
# the median case (in-plane 1.1 mm) has about `size` voxels front to back
REFERENCE_SPACING_MM = 1.1

# Signal per tissue, channels (FLAIR, T1w, T1gd, T2w), relative to white matter on T1w = 0.75.
TISSUE_SIGNAL = {
    "air": (0.0, 0.0, 0.0, 0.0),
    "scalp": (0.82, 0.95, 0.97, 0.62),           # skin and fat: bright on T1, fairly bright on FLAIR
    "skull": (0.07, 0.08, 0.09, 0.07),           # cortical bone gives no signal
    "csf": (0.10, 0.20, 0.21, 1.00),             # bright on T2, suppressed on FLAIR
    "grey_matter": (0.62, 0.55, 0.56, 0.60),
    "white_matter": (0.50, 0.75, 0.76, 0.42),
    "choroid_plexus": (0.45, 0.55, 1.05, 0.55),  # enhances, like tumour
    "vein": (0.25, 0.40, 1.08, 0.25),            # venous sinus and cortical veins fill with contrast
    "wm_lesion": (0.90, 0.62, 0.63, 0.82),       # small-vessel disease: FLAIR/T2 bright, not tumour
    "edema": (0.92, 0.58, 0.59, 0.82),
    "necrosis": (0.52, 0.30, 0.33, 0.95),        # fluid-like: dark T1, bright T2, no enhancement
    "solid_tumour": (0.74, 0.48, 0.51, 0.66),    # non-enhancing solid tumour
    "enhancing": (0.74, 0.55, 1.05, 0.64),
}


def generate_case(rng: np.random.Generator, size: int) -> SyntheticCase:
    """Draw one case; `size` is roughly the number of voxels front to back at the reference spacing."""
    in_plane = rng.uniform(*IN_PLANE_SPACING_MM)
    spacing = (rng.uniform(*SLICE_SPACING_MM), in_plane, in_plane)
    fov_ap = size * REFERENCE_SPACING_MM
    # head semi-axes (z: feet-head, y: back-front, x: right-left) in mm
    semi_ap = 0.45 * fov_ap * rng.uniform(0.93, 1.03)
    semi = np.array([0.90 * semi_ap * rng.uniform(0.95, 1.05), semi_ap, 0.82 * semi_ap * rng.uniform(0.95, 1.05)])
    grid = Grid((0.78 * fov_ap, fov_ap, 0.84 * fov_ap), spacing)
    # the head sits low in the field of view, so the lowest slices cut through the skull base
    center = np.array([-0.18 * semi[0], 0.0, 0.0]) + rng.uniform(-0.03, 0.03, 3) * fov_ap
    head = _HeadFrame(grid, center, semi, random_rotation(rng, 8.0))

    tissues = _head_tissues(rng, head)
    tumour, label = _tumours(rng, head, tissues)
    image = _render(rng, grid, head, tissues, tumour)
    # the head is drawn with the face at +y; the written images are LPS (+y towards the back of the head)
    return SyntheticCase(images=[np.ascontiguousarray(channel[:, ::-1]) for channel in image],
                         label=np.ascontiguousarray(label[:, ::-1]), spacing=spacing)


class _HeadFrame:
    """Head-normalised coordinates: q = rotated position / head semi-axis, |q| = 1 at the skin."""

    def __init__(self, grid, center, semi, rotation):
        self.grid, self.center, self.semi, self.rotation = grid, center, semi, rotation
        local = rotate(grid.points, rotation, center)
        self.q = [c / s for c, s in zip(local, semi)]
        self.local_mm = local

    def to_world(self, q):
        """Head-normalised point(s) (..., 3) to scanner mm (z, y, x)."""
        return self.center + (np.asarray(q) * self.semi) @ self.rotation


def _head_tissues(rng, head):
    """Boolean masks of the head's tissues, before any tumour."""
    qz, qy, qx = head.q
    points = head.grid.points
    rho = np.sqrt(qz ** 2 + qy ** 2 + qx ** 2) * (1 + 0.03 * SmoothField(rng, 0.8 * head.semi[1])(points))
    brain = rho < 0.80
    masks = {
        "head": rho < 1.0,
        "skull": (rho >= 0.84) & (rho < 0.91),
        "inside_skull": rho < 0.84,
        "brain": brain,
    }
    # cortex: a grey band of varying thickness, cut by sulci (thin CSF sheets along a field's zero set)
    gyri = SmoothField(rng, 0.35 * head.semi[1])(points)
    cortex = brain & (rho > 0.80 - 0.10 * (1 + 0.5 * gyri))
    sulci = cortex & (np.abs(SmoothField(rng, 0.25 * head.semi[1])(points)) < 0.25)
    # the interhemispheric fissure, above the corpus callosum and in front of / behind the ventricles
    fissure = brain & ((qz > 0.3) | (np.abs(qy) > 0.4)) & (np.abs(head.local_mm[2]) < 0.5 * head.grid.spacing[2])
    masks["cortex"] = cortex
    masks["sulci"] = sulci | fissure

    # deep grey matter and the lateral ventricles, mirrored on |qx| with a little asymmetry; both are
    # drawn a little larger than life so that they stay visible at this miniature scale
    side_scale = np.where(qx > 0, 1.0, rng.uniform(0.85, 1.15))
    masks["deep_grey"] = (((qz - 0.0) / 0.15) ** 2 + ((qy - 0.03) / 0.22) ** 2
                          + ((np.abs(qx) - 0.25) / 0.10) ** 2) < 1
    ventricle_size = rng.uniform(0.8, 1.4)  # small in the young, large with atrophy
    ventricle_z = qz - 0.10 + 0.6 * qy ** 2  # banana-shaped: the horns curve downwards
    ventricles = ((ventricle_z / (0.16 * ventricle_size)) ** 2 + (qy / 0.42) ** 2
                  + ((np.abs(qx) - 0.11) / (0.09 * ventricle_size * side_scale)) ** 2) < 1
    masks["ventricles"] = ventricles & brain
    choroid = (((ventricle_z + 0.04) / 0.08) ** 2 + ((qy + 0.24) / 0.12) ** 2
               + ((np.abs(qx) - 0.12) / 0.06) ** 2) < 1
    masks["choroid_plexus"] = choroid & masks["ventricles"]

    white_matter = brain & ~cortex & ~masks["deep_grey"] & ~masks["ventricles"]
    masks["wm_lesion"] = _white_matter_lesions(rng, head) & white_matter
    masks["vein"] = _veins(rng, head)
    return masks


def _white_matter_lesions(rng, head):
    """Small FLAIR-bright spots, most of them beside the ventricles, as in small-vessel disease."""
    lesions = np.zeros(head.grid.shape, bool)
    for _ in range(rng.integers(3, 12)):
        if rng.random() < 0.6:
            q = [0.12 + rng.uniform(-0.08, 0.12), rng.uniform(-0.35, 0.35),
                 rng.choice([-1, 1]) * rng.uniform(0.16, 0.26)]
        else:
            q = _random_point_in_ball(rng, 0.6)
        radius = rng.uniform(0.05, 0.11) * head.semi[1]
        level = lobulated_level(rng, head.grid.points, head.to_world(q), [radius] * 3, lobulation=0.2)
        lesions |= level > 0
    return lesions


def _veins(rng, head):
    """Partial-volume fraction of the superior sagittal sinus and a few cortical veins."""
    occupancy = np.zeros(head.grid.shape, np.float32)
    # superior sagittal sinus: along the midline, between brain and skull, front to back
    angles = np.linspace(np.deg2rad(15), np.deg2rad(165), 9)
    sinus = head.to_world(np.stack([0.82 * np.sin(angles), 0.82 * np.cos(angles), np.zeros_like(angles)], 1))
    for a, b in zip(sinus[:-1], sinus[1:]):
        paint_tube(occupancy, head.grid, a, b, 0.035 * head.semi[1])
    # cortical veins: short random walks on the brain surface
    for _ in range(rng.integers(3, 8)):
        point = _random_point_in_ball(rng, 1.0, upper_only=True)
        point = 0.79 * point / np.linalg.norm(point)
        for _ in range(4):
            step = point + rng.normal(scale=0.12, size=3)
            step = 0.79 * step / np.linalg.norm(step)
            paint_tube(occupancy, head.grid, head.to_world(point), head.to_world(step), 0.022 * head.semi[1])
            point = step
    return occupancy


def _random_point_in_ball(rng, radius, upper_only=False):
    direction = rng.normal(size=3)
    if upper_only:
        direction[0] = abs(direction[0])
    return direction / np.linalg.norm(direction) * radius * rng.random() ** (1 / 3)


def _tumours(rng, head, tissues):
    """Masks of edema, necrosis, solid and enhancing tumour, and the label map they imply."""
    points = head.grid.points
    whole = np.zeros(head.grid.shape, bool)
    core = np.zeros_like(whole)
    enhancing = np.zeros_like(whole)
    necrosis = np.zeros_like(whole)
    for _ in range(1 if rng.random() < 0.85 else 2):
        center_q = _random_point_in_ball(rng, 0.55)
        center_q[0] = abs(center_q[0]) * 0.8  # gliomas sit mostly in the cerebral hemispheres
        # large gliomas: at 0.25-0.45 of the head (cores 0.6-0.85 of that) the core labels held 120 and 65 voxels
        # per case, and stock nnU-Net reached 1 % Dice on the enhancing one in 480 CPU iterations (docs/datasets.md)
        edema_radii = rng.uniform(0.45, 0.65) * head.semi[1] * rng.uniform(0.8, 1.2, 3)
        this_whole = (lobulated_level(rng, points, head.to_world(center_q), edema_radii, lobulation=0.3) > 0)
        # edema fills the sulci it reaches but stops at the ventricles and the brain's surface
        this_whole = _largest_component(this_whole & tissues["brain"] & ~tissues["ventricles"])
        core_center = head.to_world(center_q) + rng.uniform(-0.25, 0.25, 3) * edema_radii
        core_radii = edema_radii * rng.uniform(0.75, 0.9) * rng.uniform(0.85, 1.15, 3)
        core_level = lobulated_level(rng, points, core_center, core_radii, lobulation=0.3)
        # the core stays at least one voxel inside the edema, so edema always surrounds it
        this_core = (core_level > 0) & erode(this_whole, 1)
        pattern = rng.choice(["ring", "nodular", "non_enhancing"], p=[0.6, 0.25, 0.15])
        if pattern == "ring":
            rim = rng.uniform(0.3, 0.45) * (1 + 0.4 * SmoothField(rng, core_radii.mean())(points))
            this_enhancing = this_core & (core_level < rim)
            necrosis |= this_core & ~this_enhancing
        elif pattern == "nodular":
            this_enhancing = np.zeros_like(this_core)
            inside = np.argwhere(this_core)
            for _ in range(rng.integers(1, 5) if len(inside) else 0):
                seed_voxel = inside[rng.integers(len(inside))]
                seed_mm = [axis.ravel()[i] for axis, i in zip(points, seed_voxel)]
                radius = rng.uniform(0.3, 0.5) * core_radii.mean()
                this_enhancing |= lobulated_level(rng, points, seed_mm, [radius] * 3, lobulation=0.2) > 0
            this_enhancing &= this_core
        else:
            this_enhancing = np.zeros_like(this_core)
        whole |= this_whole
        core |= this_core
        enhancing |= this_enhancing
    label = np.zeros(head.grid.shape, np.uint8)
    label[whole] = LABELS["edema"]
    label[core] = LABELS["non-enhancing tumor"]
    label[enhancing] = LABELS["enhancing tumour"]
    tumour = {"edema": whole & ~core, "necrosis": necrosis & ~enhancing,
              "solid_tumour": core & ~necrosis & ~enhancing, "enhancing": enhancing}
    return tumour, label


def _largest_component(mask):
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == 1 + int(np.argmax(sizes))


def _render(rng, grid, head, tissues, tumour):
    """Paint tissue signals, then add what a scanner adds: blur, bias field, Rician noise, a gain."""
    # each case's contrasts differ a little, as between scanners and protocols
    signal = {name: np.asarray(v) * rng.lognormal(0.0, 0.05, 4) for name, v in TISSUE_SIGNAL.items()}
    image = np.zeros((4,) + grid.shape, np.float32)
    paint(image, tissues["head"], signal["scalp"])
    paint(image, tissues["skull"], signal["skull"])
    paint(image, tissues["inside_skull"], signal["csf"])
    paint(image, tissues["brain"], signal["white_matter"])
    for name, tissue in [("cortex", "grey_matter"), ("deep_grey", "grey_matter"), ("sulci", "csf"),
                         ("ventricles", "csf"), ("choroid_plexus", "choroid_plexus"), ("wm_lesion", "wm_lesion")]:
        paint(image, tissues[name], signal[tissue])
    for name in ("edema", "solid_tumour", "necrosis", "enhancing"):
        paint(image, tumour[name], signal[name])
    # tumours are heterogeneous; healthy tissue has a fainter texture
    in_tumour = np.logical_or.reduce(list(tumour.values()))
    heterogeneity = 1 + np.where(in_tumour, 0.06, 0.03) * _texture(rng, grid.shape)
    image *= heterogeneity.astype(np.float32)
    paint(image, tissues["vein"], signal["vein"])

    image = np.stack([blur_mm(channel, grid.spacing, 0.45 * np.asarray(grid.spacing)) for channel in image])
    shared_bias = SmoothField(rng, 2.5 * head.semi[1])(grid.points)
    for channel in image:
        bias = np.exp(0.18 * shared_bias + 0.07 * SmoothField(rng, 2.5 * head.semi[1])(grid.points))
        channel *= bias.astype(np.float32)
    noise_level = rng.uniform(0.015, 0.04) * 0.75
    real = image + rng.normal(scale=noise_level, size=image.shape)
    imaginary = rng.normal(scale=noise_level, size=image.shape)
    magnitude = np.sqrt(real ** 2 + imaginary ** 2)  # MRI magnitude images have Rician noise
    gain = 1000 * rng.uniform(0.6, 1.4, 4)[:, None, None, None]
    # scanners store integers; the noise is far above one unit, so rounding loses nothing
    return np.clip(np.round(magnitude * gain), 0, np.iinfo(np.int16).max).astype(np.int16)


def _texture(rng, shape):
    """Unit-variance noise correlated over about a voxel."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), 0.8)
    return field / (field.std() + 1e-8)
