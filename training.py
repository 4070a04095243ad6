"""The training loop both trainers share (train_regressor.py, train_colorizer.py; bench.py and
preflight.py borrow its step): a trainer script describes what it trains (a TrainingSetup) and
hands it to train(), which runs training() under ignite's idist.Parallel, so that the same script
trains on one CPU, one GPU, or several processes (torchrun, or srun under SLURM).

training() reads as the run's table of contents: data, model and optimizer, the engines, then
every handler, attached in the order it runs, then resume and the epochs. An epoch: every
training batch once through predict, the loss and an Adam step; then the validation loss and MSE,
best.pt when the MSE is the best yet, last.pt, history.json, loss.png and one line in --out.
"""
from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import shutil
import signal
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, NamedTuple

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.engine.deterministic import DeterministicEngine
from ignite.handlers import Checkpoint, CosineAnnealingScheduler, DiskSaver, EarlyStopping, ProgressBar, Timer
from ignite.metrics import Loss
from ignite.utils import manual_seed

from common import (DEFAULT_BATCH_SIZE, HISTORY_KEYS, LabSplit, ab_to_ab01, check_prepared, checkpoint_contents,
                    collate_unchanged, colorize_lab01, dataset_id, images_to_lab01, is_history, lab01_to_rgb,
                    new_history, open_rgb_split, plot_loss_curves, random_variant, run_record, run_record_of,
                    size_problem, torch_load)
from faces import face_scale
from guards import (FOLDER_LOCK, OWNER_FILE, RUN_CONFIG, TEMP_TAG, UserError, add_device_argument, atomic_write,
                    bfloat16_autocast, escape_bytes, hold_for_reading, no_space_error, non_negative_float,
                    non_negative_int, positive_float, positive_int, read_json, resolve_device, take_output_folder,
                    writable_folder, write_json, write_run_config)

RESUMABLE_EXIT = 3  # exit status after a signal: a checkpoint was saved, run again to resume
TENSORBOARD = "tensorboard"  # in a run folder: TensorBoard's event files (tensorboard --logdir RUN)
# what a run writes in its folder
RUN_FILES = {"best.pt", "last.pt", "history.json", "loss.png", RUN_CONFIG, TENSORBOARD, FOLDER_LOCK}
LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.smooth_l1_loss}
# settings that may change between an interrupted run and its resumption
_OPERATIONAL_KEYS = {"device", "num_workers", "backend", "world_size", "dry_run", "resume", "out", "data",
                     "epochs", "patience", "epoch_length", "data_on_device", "amp", "channels_last", "compile",
                     "face_scale", "tensorboard"}
# settings newer than some checkpoints: their default
_ADDED_KEYS = {"augment": False, "lr_schedule": "constant", "init_from": None}

def add_training_args(parser: argparse.ArgumentParser, *, out: str, epochs: int, lr: float,
                      weight_decay: float, patience: int) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--data", default="data/prepared", help="folder written by prepare_data.py")
    g.add_argument("--out", default=out, help="run folder: checkpoints, history, loss plot")
    g.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set, at most")
    g.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help="global batch size, split across processes")
    g.add_argument("--lr", type=positive_float, default=lr, help="Adam's learning rate")
    g.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: the learning rate falls from --lr to 0 along a half cosine over the --epochs")
    g.add_argument("--weight-decay", type=non_negative_float, default=weight_decay, help="Adam's weight decay")
    g.add_argument("--patience", type=non_negative_int, default=patience,
                   help="early stopping on validation MSE after this many epochs without progress (0: off)")
    g.add_argument("--loss", choices=sorted(LOSSES), default="mse",
                   help="the training loss of a regressing model (a classifying one learns by cross-entropy)")
    g.add_argument("--seed", type=int, default=0, help="random seed: weights, batch order, augmentation")
    add_device_argument(g)
    g.add_argument("--num-workers", type=non_negative_int, default=None,
                   help="DataLoader workers; default 0 on CPU (a batch is one read of converted arrays, and "
                        "workers would take cores from the model), 4 on GPU (pinned memory, non-blocking copies)")
    g.add_argument("--backend", choices=["auto", "none", "gloo", "nccl"], default="auto",
                   help="torch.distributed backend; auto: none for one process; the processes torchrun or srun "
                        "starts form one run, with nccl on GPUs, gloo on CPUs")
    g.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh even if the run folder holds last.pt")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="write no TensorBoard event files into the run folder")
    g.add_argument("--epoch-length", type=positive_int, default=None,
                   help="batches per epoch (default: the whole set)")
    g.add_argument("--dry-run", action="store_true", help="one epoch of two batches, to check the setup")
    g.add_argument("--augment", action="store_true",
                   help="a fresh random flip and resized crop of every training image at every step, on top of "
                        "the fixed copies prepare_data.py made")
    f = parser.add_argument_group("speed (results do not depend on these, beyond rounding)")
    f.add_argument("--data-on-device", action="store_true",
                   help="hold the whole prepared set on the device as uint8 and convert batches there (GPU)")
    f.add_argument("--amp", action="store_true", help="mixed precision: bfloat16 autocast in training steps")
    f.add_argument("--channels-last", action="store_true", help="channels-last memory format for model and batches")
    f.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler on CPU)")


class TrainingSetup(NamedTuple):
    """What a trainer script trains: its setup function's answer to train()."""
    model: nn.Module
    predict: Callable     # (network, Lab01 batch) -> (output, target)
    train_loss: Callable  # (output, target) -> loss, in training mode
    val_loss: Callable    # the same in eval mode, on the validation set (its MSE is taken too)
    loss_name: str        # train_loss's name in the epoch lines
    regressor: nn.Module | None = None  # the frozen regressor a conditioned colorizer learns from: checkpoints carry it


class RunRecord:
    """Config and per-epoch history of a run, saved inside every checkpoint, with the sum and count of
    the current epoch's training losses (kept across a resume mid-epoch), and the weights of the regressor a
    conditioned colorizer learns from: the checkpoint carries it, and nothing else decides which one it uses."""

    def __init__(self, config: dict, regressor: nn.Module | None = None):
        self.config = dict(config)
        self.regressor = regressor
        self.history = new_history()
        # the sum stays a tensor on the device while training: no step waits for the GPU to read a loss back
        self.loss_sum, self.loss_count = 0.0, 0

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1

    def clear_losses(self) -> None:
        self.loss_sum, self.loss_count = 0.0, 0

    def add_epoch(self, epoch: int, metrics: dict, images_per_s: float) -> None:
        """Append an epoch: its mean training loss over all processes, the validation metrics, the speed."""
        totals = idist.all_reduce(torch.tensor([float(self.loss_sum), self.loss_count], dtype=torch.float64))
        row = dict(epoch=epoch, train_loss=float(totals[0] / totals[1]), val_loss=metrics["val_loss"],
                   val_mse=metrics["val_mse"], train_images_per_s=images_per_s)
        for key, value in row.items():
            self.history[key].append(value)

    def state_dict(self) -> dict:
        regressor = self.regressor.state_dict() if self.regressor is not None else None
        epoch_loss = [float(self.loss_sum), self.loss_count]
        return {**run_record(self.config, self.history, regressor), "epoch_loss": epoch_loss}

    def load_state_dict(self, state: dict) -> None:
        self.history, (self.loss_sum, self.loss_count) = state["history"], state["epoch_loss"]
        if self.regressor is not None and "regressor" in state:  # resumed with the regressor it began with
            self.regressor.load_state_dict(state["regressor"])


def train(config: dict, setup: Callable[[dict, torch.device], TrainingSetup]) -> None:
    """Train what setup(config, device) describes into the run folder config["out"]: the config settled
    once (the checks that need no GPU among it), the folder claimed, then one training() per process."""
    config = settle_config(config)
    out = Path(config["out"])
    # rank 0 as torchrun or srun numbered it (there is no process group yet) claims and locks the folder; one
    # process is rank 0 whatever a login shell left in its environment
    rank0 = config["world_size"] == 1 or int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0) == 0
    script = f"train_{config['task']}.py"
    with ExitStack() as held:  # the prepared set held for reading, the run folder locked: both until this returns
        held.callback(hold_for_reading(Path(config["data"])).release)
        created, lock = take_output_folder(out, script, ours=run_folder_of(config["task"])) \
            if rank0 else (writable_folder(out), None)
        if lock is not None:
            held.callback(lock.release)
        if rank0:
            write_run_config(out, config, torch.device(config["device"]))
        try:
            with idist.Parallel(backend=_choose_backend(config["backend"], config["device"])[0]) as parallel:
                # ignite's launcher logs at INFO, and its engines log an exception before raising it: our own lines
                # say what a user needs (a UserError from a handler: one line)
                logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)
                logging.getLogger("ignite.engine").setLevel(logging.CRITICAL)
                try:
                    parallel.run(training, config, setup)
                finally:
                    _free_run_objects()
        except BaseException as exc:
            held.close()
            if created and {p.name for p in out.iterdir()} <= {FOLDER_LOCK, OWNER_FILE, RUN_CONFIG, TENSORBOARD}:
                shutil.rmtree(out / TENSORBOARD, ignore_errors=True)  # this run's events: no epoch ended
                for name in (FOLDER_LOCK, OWNER_FILE, RUN_CONFIG):
                    (out / name).unlink(missing_ok=True)
                out.rmdir()  # a run that failed before writing anything leaves no empty folder
            full = no_space_error(exc, out)
            if full is not None:
                raise full from None
            raise


def run_folder_of(task: str) -> Callable[[Path], bool]:
    """-> whether a folder (without OWNER_FILE) is a run of this task by what its files hold: only run files,
    a last.pt of this project for the task, and history.json, if there, as the trainers write it."""

    def ours(folder: Path) -> bool:
        names = {p.name for p in folder.iterdir() if TEMP_TAG not in p.name} - {OWNER_FILE}
        if "last.pt" not in names or not names <= RUN_FILES:
            return False
        if "history.json" in names and not is_history(read_json(folder / "history.json")):
            return False
        try:
            return run_record_of(torch_load(folder / "last.pt"))["config"]["task"] == task
        except Exception:  # another tool's file: anything can go wrong reading it
            return False
    return ours


def settle_config(config: dict) -> dict:
    """The run's whole config, decided before any process starts and not changed afterwards: the device (a GPU
    job without CUDA stops here), the prepared set's image size and identity (a run resumes on that set only),
    the number of processes, and whether bfloat16 autocast runs (--amp)."""
    device = resolve_device(config["device"]).type
    manifest = check_prepared(config["data"])
    n_train = manifest["counts"]["train_augmented"]
    if n_train < config["batch_size"]:
        raise UserError(f"{config['data']}: {n_train} training images, fewer than one batch of "
                        f"{config['batch_size']}; pass a smaller --batch-size or prepare more images")
    world = _choose_backend(config["backend"], device)[1]
    if config["batch_size"] < world:
        raise UserError(f"--batch-size {config['batch_size']}: smaller than the {world} processes; "
                        f"pass at least {world}")
    problem = size_problem(config, manifest["size"])
    if problem:
        raise UserError(f"{config['data']}: {manifest['size']}x{manifest['size']} images, but {problem}")
    if config["compile"] and device == "cpu" and not any(map(shutil.which, (os.environ.get("CXX") or "g++",
                                                                            "c++", "clang++"))):
        raise UserError("--compile on the CPU builds C++ kernels, and no C++ compiler is on PATH (g++, c++, "
                        "clang++ or $CXX): install one (Debian: apt-get install g++), or leave out --compile")
    amp = bfloat16_autocast(device, config["amp"], "training")
    scale = {"face_scale": face_scale(config["data"], manifest)} if config["task"] == "colorizer" else {}
    return {**config, "device": device, "image_size": manifest["size"], "data_id": dataset_id(manifest),
            "world_size": world, "amp": amp, **scale}


def training(local_rank: int, config: dict, setup: Callable) -> None:
    """One process's run: its stages in the order they happen, every handler attached here in the order it
    runs (an event's handlers run in the order they were attached)."""
    rank0, world = idist.get_rank() == 0, idist.get_world_size()
    if world != config["world_size"]:
        raise UserError(f"{world} processes started, but the environment announced {config['world_size']} "
                        "(WORLD_SIZE, SLURM_STEP_NUM_TASKS): start the run with torchrun or srun, as slurm/README.md "
                        "shows")
    # one process: settle_config() resolved --device already (and stopped a GPU job without CUDA)
    device = idist.device() if world > 1 else torch.device(config["device"])
    manual_seed(config["seed"])

    # data, model and optimizer
    trainee = setup(config, device)
    memory_format = torch.channels_last if config["channels_last"] else torch.contiguous_format
    model, network, optimizer = initialize(config, trainee.model, device, memory_format)
    record = RunRecord(config, trainee.regressor)
    prepare_batch = batch_converter(device, memory_format)
    step = training_step(network, trainee.predict, trainee.train_loss, optimizer, config["amp"])
    trainer = create_trainer(config, step, prepare_batch, record)
    train_loader, val_loader = data_loaders(config, trainer, device)
    evaluator = create_evaluator(network, trainee, prepare_batch)
    if rank0:
        print(f"training on {device.type} in {world} process{'es' if world > 1 else ''}: "
              f"{len(train_loader.dataset)} training images, {len(val_loader.dataset)} validation", flush=True)

    # every iteration: the learning rate first, then the step; after it, the loss checked, the signals read
    schedule = None
    if config["lr_schedule"] == "cosine":  # a half cycle from --lr to 0 over the whole run
        schedule = CosineAnnealingScheduler(optimizer, "lr", config["lr"], 0.0,
                                            cycle_size=config["epochs"] * len(train_loader))
        trainer.add_event_handler(Events.ITERATION_STARTED, schedule)
    trainer.add_event_handler(Events.EPOCH_STARTED, clear_epoch_losses, record)
    # a non-finite loss stops the run before anything is saved from it: checked after every step on one CPU,
    # every 50 steps where reading the loss makes a GPU, or the other processes, wait (and before each epoch's
    # checkpoints, attached later)
    every = 1 if world == 1 and config["device"] == "cpu" else 50
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every) | Events.EPOCH_COMPLETED, stop_if_not_finite,
                              record, config)
    if rank0 and sys.stderr.isatty():  # batch logs (SLURM, CI) get the per-epoch lines only
        ProgressBar(persist=False).attach(trainer, output_transform=lambda loss: {"loss": float(loss)})
    # seconds per batch since the epoch began (or resumed), paused before validating: training alone
    timer = Timer(average=True).attach(trainer, start=Events.EPOCH_STARTED, pause=Events.EPOCH_COMPLETED,
                                       step=Events.ITERATION_COMPLETED)

    # every epoch's end: validate (its scores checked, best.pt, early stopping), last.pt, the report
    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate, evaluator, val_loader, record, timer,
                              config["batch_size"])
    evaluator.add_event_handler(Events.COMPLETED, refuse_non_finite_scores, trainer)
    saver = RunSaver(config["out"], require_empty=False, create_dir=True)
    best = Checkpoint(checkpoint_contents(model, record), saver, filename_pattern="best.pt", n_saved=1,
                      score_function=negative_val_mse, score_name="neg_val_mse")
    evaluator.add_event_handler(Events.COMPLETED, best)
    resumable = {**checkpoint_contents(model, record), "optimizer": optimizer, "trainer": trainer, "best": best}
    if schedule is not None:
        resumable["lr_schedule"] = schedule
    stopper = None
    if config["patience"] > 0:
        stopper = EarlyStopping(config["patience"], negative_val_mse, trainer)
        evaluator.add_event_handler(Events.COMPLETED, stopper)
        resumable["early_stopping"] = stopper
    last = Checkpoint(resumable, saver, filename_pattern="last.pt", n_saved=1)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last)
    if rank0:  # after validate: it reports the epoch that validate added to the record
        trainer.add_event_handler(Events.EPOCH_COMPLETED, report_epoch, config, record, trainee.loss_name)
    stop = StopOnSignal(last)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, stop)
    # TensorBoard, last: what the epoch's handlers above decided (the history row) is what it shows
    events = attach_tensorboard(config, trainer, optimizer, record, network, trainee.regressor, val_loader,
                                prepare_batch, every) if rank0 and tensorboard_can_write(config) else None

    # resume, run, say how it ended
    try:
        if not resume(config, resumable, trainer, stopper):
            return
        trainer.run(train_loader, max_epochs=1 if config["dry_run"] else config["epochs"])
    finally:
        if events is not None:
            events.close()
    idist.barrier()  # leave together: a rank that tears down gloo while another still talks to it aborts
    out = Path(config["out"])
    if stop.stopped_by is not None:
        if rank0:
            print(f"interrupted (signal {stop.stopped_by}): saved {out / 'last.pt'}; run the same command to resume",
                  flush=True)
        sys.exit(RESUMABLE_EXIT)
    if rank0:
        print(f"done: best checkpoint {out / 'best.pt'} (val MSE {min(record.history['val_mse']):.3e})")


# ---------------------------------------------------------------------------------------------
# The stages


def initialize(config: dict, model: nn.Module, device: torch.device, memory_format: torch.memory_format):
    """-> (the model on the device, shared among the processes; the network the steps run: the model,
    or its compiled form with --compile; Adam)."""
    model = model.to(device, memory_format=memory_format)
    if idist.get_world_size() > 1:  # auto_model alone would also move a --device cpu model onto a GPU
        model = idist.auto_model(model)
    optimizer = idist.auto_optim(torch.optim.Adam(model.parameters(), lr=config["lr"],
                                                  weight_decay=config["weight_decay"]))
    return model, torch.compile(model) if config["compile"] else model, optimizer


def batch_converter(device: torch.device, memory_format: torch.memory_format) -> Callable:
    """-> convert(loader batch) -> float32 Lab01 on the device, in the memory format the model has:
    stored Lab is only cast, images held on the device (--data-on-device) converted there."""

    def convert(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        lab01 = images_to_lab01(batch) if batch.dtype == torch.uint8 else batch.float()
        return lab01.contiguous(memory_format=memory_format)
    return convert


def training_step(network: nn.Module, predict, loss_fn, optimizer, amp: bool):
    """-> step(Lab01 batch on the network's device) -> loss: the optimisation step of every training script
    (and the benchmark's ceiling). amp: network and loss under bfloat16 autocast (no gradient scaler needed).
    The loss stays a tensor: reading its value (.item()) would make the host wait for the GPU every step."""
    device_type = next(network.parameters()).device.type

    def step(lab01: torch.Tensor) -> torch.Tensor:
        network.train()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            pred, target = predict(network, lab01)
            loss = loss_fn(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def data_loaders(config: dict, trainer, device: torch.device):
    """-> (training loader, validation loader): this process's share of the run's batches (StepSampler) and
    of the validation set, mapped from the Lab arrays or held on the device (--data-on-device)."""
    world, rank = idist.get_world_size(), idist.get_rank()
    dataset = (lambda split: DeviceImages(config["data"], split, device)) if config["data_on_device"] else \
        (lambda split: LabSplit(config["data"], split))
    train_set, val_set = dataset("train"), dataset("val")
    workers = 0 if config["data_on_device"] else config["num_workers"]
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    loader_args = dict(collate_fn=collate_unchanged, num_workers=workers, persistent_workers=workers > 0,
                       pin_memory=device.type == "cuda" and not config["data_on_device"])
    sampler = StepSampler(len(train_set), config["batch_size"] // world * world, world, rank, config["seed"],
                          2 if config["dry_run"] else config["epoch_length"], lambda: trainer.state.iteration)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config["batch_size"] // world,
                                               sampler=sampler, drop_last=True, **loader_args)
    # each process scores its share; ignite's metrics gather them
    val_sampler = torch.utils.data.DistributedSampler(val_set, world, rank, shuffle=False) if world > 1 else None
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=max(1, config["batch_size"] // world),
                                             sampler=val_sampler, **loader_args)
    return train_loader, val_loader


class DeviceImages(torch.utils.data.TensorDataset):
    """--data-on-device: a whole split's uint8 RGB images held on the device (a quarter of the
    memory of float32 Lab); batches are gathered there and converted there (images_to_lab01)."""

    def __init__(self, data_dir: str | Path, split: str, device: torch.device):
        super().__init__(torch.from_numpy(np.array(open_rgb_split(data_dir, split))).to(device))

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        # non_blocking: a plain copy of the indices would wait for every queued GPU step first
        return self.tensors[0][torch.as_tensor(indices).to(self.tensors[0].device, non_blocking=True)]


class StepSampler(torch.utils.data.Sampler):
    """One process's sample indices for an epoch of `steps` batches (default: one pass over the set). The
    run's batch j is slice j mod k of shuffle j // k (k whole batches per pass; shuffle p seeded by (seed, p)),
    and an epoch starts at the run's iteration count when its batches are drawn: a run resumed mid-epoch, with
    or without --epoch-length, replays exactly the batches of an uninterrupted one, whoever draws them."""

    def __init__(self, n: int, global_batch: int, world: int, rank: int, seed: int, steps: int | None, iteration):
        self.n, self.global_batch, self.world, self.rank, self.seed = n, global_batch, world, rank, seed
        self.per_pass = n // global_batch
        self.steps = steps or self.per_pass
        self.iteration = iteration  # -> the number of batches the run has trained so far

    def __len__(self) -> int:
        return self.steps * (self.global_batch // self.world)

    def __iter__(self):
        done = self.iteration()
        first = done - done % self.steps  # the run's batch number where this epoch began
        shuffle, current = None, None
        for j in range(first, first + self.steps):
            p, k = divmod(j, self.per_pass)
            if p != current:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
                shuffle, current = torch.randperm(self.n, generator=generator), p
            yield from shuffle[k * self.global_batch:(k + 1) * self.global_batch][self.rank::self.world].tolist()


def create_trainer(config: dict, step: Callable, prepare_batch: Callable, record: RunRecord) -> Engine:
    """The engine of the training steps: step on every prepared (and with --augment, augmented) batch,
    its loss added to the record's epoch sum."""
    augment = augmentation(config["image_size"]) if config["augment"] else (lambda lab01: lab01)

    def train_step(engine, batch):
        loss = step(augment(prepare_batch(batch)))
        record.add_loss(loss)
        return loss

    # DeterministicEngine reseeds every epoch and skips the batches done, so a run resumed from a
    # mid-epoch checkpoint follows exactly the batches of an uninterrupted one
    return DeterministicEngine(train_step)


def augmentation(size: int) -> Callable:
    """--augment: batch -> each image its own random variant (common.random_variant, upright)."""
    transform = random_variant(size, upright=True)
    return lambda batch: torch.stack([transform(image) for image in batch])


def create_evaluator(network: nn.Module, trainee: TrainingSetup, prepare_batch: Callable) -> Engine:
    """The engine that scores the validation set in eval mode: the trainee's val_loss and the MSE."""

    @torch.no_grad()
    def eval_step(engine, batch):
        network.eval()
        return trainee.predict(network, prepare_batch(batch))  # full precision: validation scores are exact

    evaluator = Engine(eval_step)
    Loss(trainee.val_loss).attach(evaluator, "val_loss")
    # ignite's MeanSquaredError averages per image; the seed's MSE is per element, as F.mse_loss
    Loss(F.mse_loss).attach(evaluator, "val_mse")
    return evaluator


# ---------------------------------------------------------------------------------------------
# The handlers, in the order training() attaches them


def clear_epoch_losses(engine, record: RunRecord) -> None:
    if engine.state.iteration % engine.state.epoch_length == 0:  # not when resuming mid-epoch
        record.clear_losses()


def stop_if_not_finite(engine, record: RunRecord, config: dict) -> None:
    """A loss that is NaN or infinite stops the run with one line; last.pt and best.pt stay the last good ones."""
    bad = torch.tensor(float(not math.isfinite(float(record.loss_sum))))
    if idist.get_world_size() > 1:
        bad = idist.all_reduce(bad)
    if bad > 0:
        step = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        raise UserError(f"the training loss is not a finite number (NaN or inf) at epoch {engine.state.epoch}, by "
                        f"batch {step} of {engine.state.epoch_length}: nothing of it was saved ({config['out']} keeps "
                        "the last good checkpoints); check the prepared data, or train with a lower --lr")


def validate(trainer, evaluator: Engine, val_loader, record: RunRecord, timer: Timer, batch_size: int) -> None:
    record.add_epoch(trainer.state.epoch, evaluator.run(val_loader).metrics, batch_size / timer.value())


def refuse_non_finite_scores(evaluator, trainer) -> None:
    """Before best.pt and early stopping read the scores: a NaN or inf stops the run with one line."""
    if not all(math.isfinite(v) for v in evaluator.state.metrics.values()):
        raise UserError(f"the validation scores are not finite numbers ({evaluator.state.metrics}) after epoch "
                        f"{trainer.state.epoch}: nothing of it was saved; check the prepared data, or train "
                        "with a lower --lr")


def negative_val_mse(evaluator) -> float:
    """best.pt's and early stopping's score: higher is better."""
    return -evaluator.state.metrics["val_mse"]


class RunSaver(DiskSaver):
    """ignite's DiskSaver writing through atomic_write: a temporary file renamed into place, named so that a
    later run removes one that a killed run left, and a full disk reported as one line."""

    def _save_func(self, checkpoint, path: Path, func: Callable) -> None:
        atomic_write(path, lambda tmp: func(checkpoint, tmp, **self.kwargs))

    def remove(self, filename: str) -> None:
        """Keep the file: ignite removes the old checkpoint before writing the new one, and a run killed in between
        would lose last.pt; every name here is fixed, so the rename replaces it."""


TENSORBOARD_PHOTOS = 8  # validation photos in the grid TensorBoard shows each epoch


def tensorboard_can_write(config: dict) -> bool:
    """--tensorboard, unless the run folder's name is not UTF-8 (a Latin-1 archive's): TensorBoard's writer
    cannot name a file there; the run goes on without event files, and a line says so."""
    if not config["tensorboard"]:
        return False
    try:
        str(Path(config["out"]).resolve()).encode("utf-8")
    except UnicodeEncodeError:
        print(f"note: {escape_bytes(config['out'])}: TensorBoard cannot write into a folder whose name is not UTF-8: "
              "no event files (rename the folder to have them)", flush=True)
        return False
    return True


def attach_tensorboard(config: dict, trainer: Engine, optimizer, record: RunRecord, network: nn.Module,
                       regressor: nn.Module | None, val_loader, prepare_batch: Callable, every: int):
    """Event files in RUN/tensorboard, through ignite's TensorboardLogger: the training loss and the learning rate
    every `every` iterations (each read costs a GPU a wait: as often as the loss is checked), each epoch's row of
    history.json (the same numbers), and for a colorizer the first TENSORBOARD_PHOTOS validation photos each epoch:
    gray, coloured, the truth."""
    from ignite.handlers.tensorboard_logger import TensorboardLogger
    from torchvision.utils import make_grid

    events = TensorboardLogger(log_dir=str(Path(config["out"]) / TENSORBOARD))
    events.attach_output_handler(trainer, Events.ITERATION_COMPLETED(every=every), tag="training",
                                 output_transform=lambda loss: {"loss": loss})
    events.attach_opt_params_handler(trainer, Events.ITERATION_STARTED(every=every), optimizer)
    # read as the loaders read a batch, not through a loader: its iterator would start its worker processes
    dataset = val_loader.dataset
    photos = prepare_batch(dataset.__getitems__(list(range(min(TENSORBOARD_PHOTOS, len(dataset))))))

    @torch.no_grad()
    def log_epoch(engine):
        epoch = engine.state.epoch
        for key in HISTORY_KEYS[1:] + ("train_images_per_s",):
            events.writer.add_scalar(f"epoch/{key}", record.history[key][-1], epoch)
        if config["task"] != "colorizer":
            return
        was_training = network.training
        network.eval()
        coloured = colorize_lab01(network, photos, regressor)
        network.train(was_training)
        gray = torch.cat([photos[:, :1], torch.full_like(photos[:, 1:], ab_to_ab01(0.0))], dim=1)
        rows = [lab01_to_rgb(images.float()).clamp(0, 1).cpu() for images in (gray, coloured, photos)]
        events.writer.add_image("validation/gray, coloured, truth", make_grid(torch.cat(rows), nrow=len(photos)),
                                epoch)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, log_epoch)
    return events


def report_epoch(engine, config: dict, record: RunRecord, loss_name: str) -> None:
    """After every epoch, on rank 0: history.json, loss.png and one line."""
    out, h = Path(config["out"]), record.history
    write_json(out / "history.json", h)
    plot_loss_curves({out.name: h}, out / "loss.png", title=f"{config['task']} ({out.name})")
    print(f"epoch {engine.state.epoch:3d}/{engine.state.max_epochs}  {loss_name} loss: train "
          f"{h['train_loss'][-1]:.3e}, validation {h['val_loss'][-1]:.3e}  validation MSE "
          f"{h['val_mse'][-1]:.3e}  ({h['train_images_per_s'][-1]:.0f} training images/s)", flush=True)


class StopOnSignal:
    """SLURM sends USR1 before the time limit and TERM on preemption; Ctrl-C sends INT (twice: stop at once).
    After that iteration, every process saves last.pt and stops; stopped_by names the signal."""

    def __init__(self, save: Callable):
        self.save, self.stopped_by, self.received = save, None, []
        received = self.received

        def receive(signum, frame):  # holds the list alone: the signal table must not keep the run alive
            if signum == signal.SIGINT and signal.SIGINT in received:
                raise KeyboardInterrupt
            received.append(signum)

        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, receive)

    def __call__(self, engine):
        count = idist.all_reduce(len(self.received)) if idist.get_world_size() > 1 else len(self.received)
        if count > 0:
            self.stopped_by = self.received[0] if self.received else "on another process"
            self.save(engine)
            engine.terminate()


# ---------------------------------------------------------------------------------------------
# Resuming, and the run's end


def resume(config: dict, resumable: dict, trainer, stopper) -> bool:
    """Load the run folder's last.pt into the run's objects (unless --no-resume); -> whether epochs remain."""
    rank0, last_path = idist.get_rank() == 0, Path(config["out"]) / "last.pt"
    if not (config["resume"] and last_path.is_file()):
        return True
    try:
        state = torch_load(last_path)
        _check_same_run(run_record_of(state)["config"], config, last_path)
        Checkpoint.load_objects(resumable, state)
    except UserError:
        raise
    except Exception as exc:  # unpickling, missing keys, weights of another shape
        raise UserError(f"{last_path}: cannot resume from it ({type(exc).__name__}); pass another --out, "
                        "or --no-resume to start afresh there") from None
    if trainer.state.iteration and rank0:
        print(f"resuming {last_path} at epoch {trainer.state.epoch}, iteration {trainer.state.iteration}")
    done = "stopped early" if stopper is not None and stopper.counter >= config["patience"] else \
        f"trained {trainer.state.epoch} epochs" if trainer.state.epoch >= config["epochs"] else None
    if done and rank0:
        print(f"{last_path}: this run already {done}; nothing to do (--no-resume to start afresh)")
    return done is None


def _check_same_run(saved: dict, config: dict, path: Path) -> None:
    saved = {**_ADDED_KEYS, **saved}
    changed = sorted(k for k in set(saved) | set(config)
                    if k not in _OPERATIONAL_KEYS and saved.get(k) != config.get(k))
    if config["lr_schedule"] == "cosine" and saved.get("epochs") != config["epochs"]:
        changed.append("epochs, which the cosine schedule spans")
    if changed:
        what = "was trained on other prepared data" if "data_id" in changed else \
            f"used other settings ({', '.join(changed)})"
        raise UserError(f"{path}: the run there {what}; pass another --out, or --no-resume to overwrite it")


# the number of processes each launcher announces, and what else it sets in every process it starts: a number
# without the rest was left in the environment by another shell (srun's is not set in a batch script itself)
_LAUNCHERS = {"WORLD_SIZE": ("torchrun", ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")),
              "SLURM_STEP_NUM_TASKS": ("srun", ("SLURM_PROCID", "SLURM_STEP_ID"))}


def _choose_backend(name: str, device_type: str) -> tuple[str | None, int]:
    """--backend -> (the torch.distributed backend, None for one process; the number of processes)."""
    announced = 1
    for variable, (launcher, companions) in _LAUNCHERS.items():
        value = os.environ.get(variable)
        if not value:
            continue
        missing = [c for c in companions if not os.environ.get(c)]
        if missing or not value.isdigit() or int(value) < 1:
            why = f"no {missing[0]} beside it" if missing else "not a number of processes"
            raise UserError(f"{variable}={value} is set, but {launcher} did not start this process ({why}): unset "
                            f"{variable} to train in one process, or start the run with {launcher} as slurm/README.md "
                            "shows")
        announced = int(value)
        break
    if name == "auto":
        name = ("nccl" if device_type == "cuda" else "gloo") if announced > 1 else "none"
    return (None, 1) if name == "none" else (name, announced)


def _free_run_objects() -> None:
    """Free the run's objects while its process group lives: engines and handlers form reference cycles that
    hold the DDP model, and so the group; freed at exit, after Parallel destroyed it, gloo aborts the process
    ("terminate called without an active exception"). A run that raised keeps them in its traceback: clear it."""
    raised = sys.exc_info()[1]
    if raised is not None:
        traceback.clear_frames(raised.__traceback__)
    gc.collect()
