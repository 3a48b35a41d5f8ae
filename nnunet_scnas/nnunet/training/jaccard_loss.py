"""The Jaccard (soft IoU) loss of the paper's retraining recipe (paper §3), on nnU-Net's targets."""
import torch
from torch import nn


class SoftJaccardLoss(nn.Module):
    """1 - soft IoU of the predicted probabilities and the reference, averaged over the foreground classes.

    Probabilities are the softmax over classes (background left out of the mean, like nnU-Net's Dice), or for
    nnU-Net's region-based training a sigmoid per region (every region counts).

    Args:
        regions: region-based training: sigmoid outputs, the target holds one channel per region.
        ignore_label: label value of voxels that count nowhere (for regions nnU-Net flags them in the target's
            last channel); None when the dataset has no ignore label.
        batch_iou: one IoU per class over the whole batch instead of one per case (nnU-Net's `batch_dice`).
        smooth: added to intersection and union: a class absent from reference and prediction scores 1, not NaN.

    Shapes: logits `[N, K, *spatial]`; target `[N, 1, *spatial]` labels, or for regions `[N, K (+1), *spatial]`.
    Returns a scalar in [0, 1].
    """

    def __init__(self, regions: bool = False, ignore_label: int | None = None, batch_iou: bool = False,
                 smooth: float = 1e-5):
        super().__init__()
        self.regions, self.ignore_label, self.batch_iou, self.smooth = regions, ignore_label, batch_iou, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.regions:
            probabilities = torch.sigmoid(logits)
            if self.ignore_label is not None:
                mask, target = 1 - target[:, -1:], target[:, :-1]
            reference = target.float()
        else:
            probabilities = torch.softmax(logits, 1)
            labels = target[:, 0].long()
            if self.ignore_label is not None:
                mask = (labels != self.ignore_label)[:, None]
                labels = torch.where(mask[:, 0], labels, 0)
            reference = nn.functional.one_hot(labels, logits.shape[1]).movedim(-1, 1).float()
            probabilities, reference = probabilities[:, 1:], reference[:, 1:]
        if mask is not None:
            probabilities, reference = probabilities * mask, reference * mask
        axes = [0, *range(2, logits.dim())] if self.batch_iou else list(range(2, logits.dim()))
        intersection = (probabilities * reference).sum(axes)
        union = (probabilities + reference).sum(axes) - intersection
        return 1 - ((intersection + self.smooth) / (union + self.smooth)).mean()


def with_jaccard_loss(nnunet_loss: nn.Module, label_manager, batch_dice: bool) -> nn.Module:
    """nnU-Net's loss (from `nnUNetTrainer._build_loss`) with the soft Jaccard loss in place of Dice + CE: under
    deep supervision nnU-Net's wrapper and its weights stay, only what it weighs changes."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    jaccard = SoftJaccardLoss(regions=label_manager.has_regions, ignore_label=label_manager.ignore_label,
                              batch_iou=batch_dice)
    if isinstance(nnunet_loss, DeepSupervisionWrapper):
        nnunet_loss.loss = jaccard
        return nnunet_loss
    return jaccard


def build_search_loss(nnunet_loss: nn.Module, trainer) -> nn.Module:
    """The search's loss from nnU-Net's (`trainer._build_loss`): as it is (`search_loss = "nnunet"`) or with the
    soft Jaccard loss in place of Dice + CE (`"jaccard"`, the paper's §3)."""
    if trainer.search_loss == "jaccard":
        return with_jaccard_loss(nnunet_loss, trainer.label_manager, trainer.configuration_manager.batch_dice)
    if trainer.search_loss != "nnunet":
        raise ValueError(f"{type(trainer).__name__}.search_loss must be 'nnunet' or 'jaccard', "
                         f"got {trainer.search_loss!r}")
    return nnunet_loss
