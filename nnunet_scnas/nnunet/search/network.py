"""The search trainer's network: the supernet at a plan's strides (`build_network_architecture`)."""
from nnunet_scnas.errors import UserError, exit_on_user_error
from nnunet_scnas.nnunet.plan_strides import scnas_strides
from nnunet_scnas.supernet import SCNASSupernet


def search_supernet(trainer_class, configuration_manager, num_input_channels: int, num_output_channels: int,
                    deep_supervision: bool) -> SCNASSupernet:
    """The supernet of `trainer_class` (its `stem_width`) for nnU-Net's configuration, in "argmax" mode: what
    inference from a search checkpoint sees (the search itself samples). A bad plan or variant ends the process
    with one line (nnU-Net's command line calls this)."""
    with exit_on_user_error():
        strides = scnas_strides(configuration_manager)
        try:
            network = SCNASSupernet(num_input_channels, num_output_channels, trainer_class.stem_width, strides,
                                    deep_supervision=deep_supervision)
        except ValueError as error:  # a variant's attributes, e.g. a stem width that is no multiple of 4
            raise UserError(f"{trainer_class.__name__}: {error}") from None
    network.mode = "argmax"
    return network
