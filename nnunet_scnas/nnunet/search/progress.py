"""The search's projected end, logged after the first epoch a run trains (a search takes a day or more)."""
from datetime import datetime, timedelta


def projected_end(logger, epochs_left: int, now: datetime | None = None) -> str:
    """A log line: when the search ends if each of its `epochs_left` remaining epochs takes as long as the last.

    Args:
        logger: nnU-Net's trainer logger, once the epoch's end is logged (its timestamps time the whole epoch:
            training, the architecture-set pseudo Dice, checkpointing).
        epochs_left: epochs still to train after it.
        now: default the current time.
    """
    epoch_seconds = (logger.get_value("epoch_end_timestamps", step=-1)
                     - logger.get_value("epoch_start_timestamps", step=-1))
    left = timedelta(seconds=epoch_seconds * epochs_left)
    end = (now or datetime.now()) + left
    return (f"projected end of the search: {end:%Y-%m-%d %H:%M} ({left.total_seconds() / 3600:.1f} h from now: "
            f"{epochs_left} more epochs of {epoch_seconds / 60:.1f} min, as long as this one)")
