"""`nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerSCNASSearch`: the SCNAS architecture search.

Bi-level and first-order (paper §2.2, Algorithm 1): the fold's training cases split 4:1 into a weight set (nnU-Net's
"train" loader) and an architecture set (its "val" loader); each iteration is a weight step and an architecture
step on fresh two-op samples; the fold's validation cases are never seen. The pseudo Dice is the current genotype's
on the architecture set; at the end the genotype is ranked against random ones there. A cost-aware variant adds the
expected training cost to the architecture loss after a weights-only warm-up. The logic lives in
`nnunet_scnas/nnunet/search/`; this class holds nnU-Net's hooks and the attributes its variants change.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scnas.errors import exit_on_user_error
from nnunet_scnas.nnunet.labels import check_every_head_annotated, checked_label_manager, describe_heads
from nnunet_scnas.nnunet.memory_estimate import decide_memory_mode
from nnunet_scnas.nnunet.plan_strides import deep_supervision_scales, scnas_strides
from nnunet_scnas.nnunet.search.checkpoint import (check_search_checkpoint, save_atomically,
                                                 state_dict_taken_once)
from nnunet_scnas.nnunet.search.cost import cost_schedule, search_cost, warmup_line
from nnunet_scnas.nnunet.search.network import search_supernet
from nnunet_scnas.nnunet.search.progress import projected_end
from nnunet_scnas.nnunet.search.ranking import check_ranking, check_ranking_settings, draw_ranking_batches
from nnunet_scnas.nnunet.search.report import SKIPPED_VALIDATION, SearchReport
from nnunet_scnas.nnunet.search.settings import SearchSettings
from nnunet_scnas.nnunet.search.split import search_datasets
from nnunet_scnas.nnunet.search.state import TemperatureSchedule, make_search_optimizer, seed_everything, seed_from
from nnunet_scnas.nnunet.search.step import allow_unused_parameters, search_iteration
from nnunet_scnas.nnunet.training.cpu_layout import channels_last_on_cpu
from nnunet_scnas.nnunet.training.jaccard_loss import build_search_loss
from nnunet_scnas.supernet import SCNASSupernet


class nnUNetTrainerSCNASSearch(SearchSettings, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        with exit_on_user_error():  # before nnU-Net's constructor asserts on bad labels with a traceback
            checked_label_manager(dataset_json, plans.get("dataset_name", "the dataset"))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.search_epochs
        self.num_iterations_per_epoch = self.search_iterations_per_epoch
        self.num_val_iterations_per_epoch = self.search_val_iterations_per_epoch
        self.save_every = 1  # a search is long: --c resumes from the last finished epoch
        with exit_on_user_error():  # an unusable plan or dataset fails here, before anything is trained
            check_every_head_annotated(self.label_manager, self.dataset_json, self.preprocessed_dataset_folder,
                                       self.plans_manager.dataset_name)
            self.search_strides = scnas_strides(self.configuration_manager, configuration)
            check_ranking_settings(self)
            self.cost_schedule = cost_schedule(type(self), self.num_epochs)
        self.report = self.search_cost = None
        self.iteration = 0  # counts weight+architecture iterations over the run: it seeds each step's sample

    def initialize(self):
        seed_everything(self.search_seed)  # the same initial supernet on every rank
        super().initialize()
        channels_last_on_cpu(self.network, self.device)
        with exit_on_user_error():  # a GPU too small or an impossible budget: before any data is loaded
            self.supernet.memory_mode, memory_line = decide_memory_mode(self, self.memory_mode)
            self.search_cost, cost_lines = search_cost(self, self.cost_schedule)
        for line in (memory_line, *cost_lines):
            self.print_to_log_file(line)
        if self.is_ddp:
            self.network = allow_unused_parameters(self.network)
        self._seed_data_streams()  # before nnU-Net forks its augmentation workers

    def _seed_data_streams(self):
        # ranks differ only by the patches they draw; seeded per epoch, a search resumes exactly
        seed_everything(seed_from(self.search_seed, self.current_epoch, self.local_rank))

    def _do_i_compile(self):
        return False  # the sampled graph changes every step

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return search_supernet(cls, configuration_manager, num_input_channels, num_output_channels,
                               enable_deep_supervision)

    @property
    def supernet(self) -> SCNASSupernet:
        return self.network.module if self.is_ddp else self.network

    def _get_deep_supervision_scales(self):
        return deep_supervision_scales(self.search_strides) if self.enable_deep_supervision else None

    def configure_optimizers(self):
        optimizer = make_search_optimizer(self.network, self)
        return optimizer, TemperatureSchedule(self.network, self.num_epochs, self.tau_start, self.tau_end,
                                              self.cost_schedule.warmup_epochs, optimizer.architecture,
                                              self.arch_lr_poly)

    def _build_loss(self):
        return build_search_loss(super()._build_loss(), self)

    def get_tr_and_val_datasets(self):
        return search_datasets(self)  # nnU-Net's "train" / "val" loaders: the weight and architecture sets

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(describe_heads(self.label_manager, self.dataset_json))  # names the pseudo Dice
        self.report = SearchReport(self.output_folder)
        self.first_epoch = self.current_epoch  # of this run (a resumed search starts later)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()  # also anneals tau (TemperatureSchedule)
        self._seed_data_streams()
        self.iteration = self.current_epoch * self.num_iterations_per_epoch
        self.supernet.mode = "two_op"
        self.print_to_log_file(f"tau {self.supernet.tau:.3f}, architecture lr "
                               f"{self.optimizer.architecture.param_groups[0]['lr']:.3g}"
                               + warmup_line(self.cost_schedule, self.current_epoch))

    def train_step(self, batch: dict) -> dict:
        epoch = self.current_epoch
        weight_loss, architecture_loss = search_iteration(
            self.network, self.loss, self.optimizer, batch,
            next(self.dataloader_val) if self.cost_schedule.trains_architecture(epoch) else None, self.search_seed,
            self.iteration, self.grad_clip, self.grad_scaler,
            self.search_cost and self.search_cost.penalty_for(self.supernet, epoch))
        self.iteration += 1
        return {'loss': weight_loss, 'architecture_loss': architecture_loss}

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        # NaN in a weights-only warm-up epoch
        self.architecture_loss = float(sum(o['architecture_loss'] for o in train_outputs) / len(train_outputs))
        if self.optimizer.plateau.observe(self.logger.get_value('train_losses', step=-1)):
            self.print_to_log_file(f"training loss plateaued for {self.plateau_patience} epochs: weight lr -> "
                                   f"{self.optimizer.param_groups[0]['lr']:.2e}")

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.supernet.mode = "argmax"  # pseudo Dice of the current architecture on the architecture set

    def on_epoch_end(self):
        if self.local_rank == 0:
            self.print_to_log_file(f"architecture loss {self.architecture_loss:.4f}")
            for line in self.report.record_search_epoch(
                    self.current_epoch, self.supernet, self.logger.get_value('train_losses', step=-1),
                    self.architecture_loss, self.optimizer.param_groups[0]['lr'], self.search_cost):
                self.print_to_log_file(line)
        super().on_epoch_end()  # logs the epoch's end time, then counts it
        if self.current_epoch == self.first_epoch + 1 and self.current_epoch < self.num_epochs:
            self.print_to_log_file(projected_end(self.logger, self.num_epochs - self.current_epoch))

    def save_checkpoint(self, filename: str) -> None:
        save_atomically(super().save_checkpoint, filename, is_writer=self.local_rank == 0)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not self.was_initialized:
            self.initialize()
        with exit_on_user_error():
            check_search_checkpoint(filename_or_checkpoint, self.supernet, self.plans_manager.dataset_name)
        with state_dict_taken_once(self.network):
            super().load_checkpoint(filename_or_checkpoint)

    def on_train_end(self):
        batches = draw_ranking_batches(self)  # while nnU-Net's loaders still run; None on ranks > 0
        super().on_train_end()  # writes checkpoint_final.pth first: the ranking check cannot change it
        if self.local_rank == 0:
            self.print_to_log_file(self.report.finish(self.supernet.genotype(), self.plans_manager.dataset_name))
        for line in check_ranking(self, batches) if batches else ():
            self.print_to_log_file(line)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file(SKIPPED_VALIDATION)
