"""The guard rails every script runs inside: one-line errors (exit status 2) and the flag types that catch bad
values before any work; files written whole or not at all; output folders claimed, locked and never taken from
the user; the record of what made a run; the device a job was granted, and whether bfloat16 pays on it.

Nothing here knows colour, data or models: common.py and the scripts build on it (locks between processes are
locks.py's, below it).
"""
from __future__ import annotations

import argparse
import errno
import gc
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from locks import Busy, FileLock, FolderLock, process_alive

# ---------------------------------------------------------------------------------------------
# Errors: every user-facing failure is one line naming the file and what to do, exit status 2


class UserError(Exception):
    """A problem with the user's input; main() prints it as one line and exits with status 2."""


INTERRUPTED_EXIT = 130  # the shell's status for a process ended by Ctrl-C


def exit_on_user_error(main):
    """Run main(); a UserError becomes 'error: ...' on stderr and exit status 2, Ctrl-C one line and status 130,
    not a traceback (every file is written whole or not at all, so an interrupted run leaves none half-written).
    File names that are not UTF-8 print with their odd bytes as \\xNN, on stdout too. What the script imported
    lives until it ends, so it is frozen out of the garbage collector's reach: the collector would walk torch's
    ~180,000 objects at every full collection and again as the interpreter exits (0.4 s of every run)."""
    sys.stdout.reconfigure(errors="backslashreplace")
    gc.freeze()
    try:
        return main()
    except UserError as exc:
        # one raised in a DataLoader worker arrives wrapped in the worker's traceback: its last line is the message
        message = escape_bytes(exc).strip().splitlines()[-1]
        print(f"error: {message.split('UserError: ', 1)[-1]}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the files written so far are whole; run the same command again to finish",
              file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def no_space_error(exc: BaseException, folder: str | Path) -> UserError | None:
    """A UserError naming folder if exc says the disk (or the quota) is full, else None. torch.save reports a
    full disk as a RuntimeError ('file write failed'), so the free space decides that case."""
    chain = []  # exc and the exceptions it was raised while handling (torch.save: a failed write, then its close)
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    full = any(isinstance(e, OSError) and e.errno in DISK_FULL for e in chain)
    # what torch.save says on a full disk: 'basic_ios::clear: iostream error', then 'unexpected pos 576 vs 534'
    if not full and any(isinstance(e, RuntimeError) and re.search("write|iostream error|unexpected pos", str(e))
                        for e in chain):
        try:
            full = shutil.disk_usage(folder).free < 64 * 2 ** 20
        except OSError:
            full = False
    if not full:
        return None
    return UserError(f"{folder}: no space left on its disk (or quota); files written before are as they were; "
                     "free some space, or pass another --out, and run the same command again")


def escape_bytes(text) -> str:
    """str(text) safe to print whatever the file names in it (undecodable bytes shown as \\xNN)."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def real_path(path: str | Path) -> Path:
    """The path with every link resolved, as far as they resolve (a link loop is no error here)."""
    return Path(os.path.realpath(path))


# ---------------------------------------------------------------------------------------------
# Flags: a bad value is one line before any work


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default after its help, unless the help names it already or the flag is a switch (its help says
    what it turns on); the description and the examples as the docstring lays them out."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is value for value in (None, False, True, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as one line ('error: argument --lr: ...') and exit status 2; the
    description is the first paragraph of the script's docstring, and its lines that start with "python " are
    the examples --help ends with."""

    def __init__(self, doc: str, **kwargs):
        examples = [line.strip() for line in doc.splitlines() if line.strip().startswith("python ")]
        super().__init__(description=doc.split("\n\n")[0], formatter_class=HelpFormatter,
                         epilog="examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None,
                         **kwargs)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def number_type(convert, test, wanted: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value
    return parse


positive_int = number_type(int, lambda v: v > 0, "a whole number >= 1")
non_negative_int = number_type(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = number_type(float, lambda v: v > 0, "a number > 0")
non_negative_float = number_type(float, lambda v: v >= 0, "a number >= 0")
fraction = number_type(float, lambda v: 0 < v < 1, "a number between 0 and 1")
port = number_type(int, lambda v: 0 <= v <= 65535, "a port, a whole number from 0 to 65535")
# ---------------------------------------------------------------------------------------------
# Files: written whole or not at all


# Temporary files and folders are named .NAME.<TEMP_TAG>-HOST-PID-...: a later run on the same host removes
# those whose process is gone (a killed run's), and never those of a live run on any host (a job array
# writing into one shared folder from several nodes).
TEMP_TAG = "colorization-tmp"


TEMP_NAME_BYTES = 64  # of the final name, in a temporary one: host, pid and random letters must fit beside it


def temp_prefix(name: str) -> str:
    """The start of a temporary name for name: any name's fits the file system's 255 bytes (a long name's first
    bytes stand for it)."""
    short = os.fsdecode(os.fsencode(name)[:TEMP_NAME_BYTES])
    return f".{short}.{TEMP_TAG}-{socket.gethostname()}-{os.getpid()}-"


def remove_stale_temporaries(folder: Path, recursive=False) -> None:
    """Remove what killed runs of this project left in folder (below it too if recursive): temporary files
    and staging folders whose process, on this host, is gone. Each is named on one line."""
    if not folder.is_dir():
        return
    host = socket.gethostname()
    for path in (folder.rglob if recursive else folder.glob)(f".*.{TEMP_TAG}-*"):
        fields = path.name.rsplit(f".{TEMP_TAG}-", 1)[1].rsplit("-", 2)
        if len(fields) == 3 and fields[0] == host and fields[1].isdigit() and not process_alive(int(fields[1])):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            print(f"removed {escape_bytes(path)}, left by an interrupted run", file=sys.stderr)


def new_temporary_file(path: Path) -> Path:
    """A new empty file beside path, named for it (temp_prefix), with the permissions the umask gives any new file
    (mkstemp's would be private to the user, and reading the umask means setting it)."""
    while True:
        tmp = path.with_name(f"{temp_prefix(path.name)}{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path), then rename onto path, so no half-written file is ever left (a full disk
    becomes a one-line UserError naming the folder, the temporary file removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary_file(path)
    try:
        write(str(tmp))  # the writers' libraries (OpenCV) take a str
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = no_space_error(exc, path.parent)
        if full is not None:
            raise full from None
        raise


def write_json(path: str | Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def read_json(path: Path):
    """The JSON a file holds, or None where it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Output folders: one rule, a script replaces only what it wrote, checked before any work. A folder a run owns whole
# (the trainers, evaluate) is claimed by take_output_folder and locked while written; prepare_data.py swaps in a
# whole prepared set, refused over anything else by the same not_ours; colorize.py, whose runs share one --out (a job
# array), applies the rule file by file through the record of which input each output came from (claim_outputs).


def writable_folder(path: Path, flag="--out") -> bool:
    """Create the folder if needed and prove it writable now, before any work; -> whether it was created."""
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise cannot_write(path, exc, flag) from None
    return created


def cannot_write(path: Path, exc: OSError, flag="--out") -> UserError:
    return UserError(f"{path}: cannot write there ({exc.strerror or type(exc).__name__}); pass another {flag}")


OWNER_FILE = ".written-by.json"  # in an --out folder: which script writes there, so that no other does
FOLDER_LOCK = ".lock"  # in an --out folder: held by the live run writing there


def take_output_folder(path: Path, script: str, ours: Callable[[Path], bool] = lambda folder: False):
    """Make path the output folder of this run of script, before any work: a new or empty folder is claimed
    (OWNER_FILE written), one that script claimed before is reused; any other is refused with one line, so that no
    file of the user's (or of another script) is ever replaced. ours(path) recognises, by what its files hold, a
    folder the script wrote before OWNER_FILE existed (file names alone prove nothing). Then the folder is locked
    (one live run at a time) and what killed runs left there is removed. -> (whether the folder was created, the
    lock: held until released)."""
    created = writable_folder(path)
    try:
        owner = json.loads((path / OWNER_FILE).read_text()).get("script")
    except (OSError, ValueError, AttributeError):
        owner = None
    names = sorted(p.name for p in path.iterdir() if p.name != OWNER_FILE and TEMP_TAG not in p.name)
    if owner != script and names and not (owner is None and ours(path)):
        raise not_ours(path, script, names, owner)
    lock = lock_folder(path)
    if owner != script:
        write_json(path / OWNER_FILE, {"script": script})
    remove_stale_temporaries(path)
    return created, lock


def not_ours(path: Path, script: str, names: list[str], owner: str | None = None) -> UserError:
    """The one line that refuses an --out holding files script did not write (names: what it holds; owner: the
    script that claimed it, where one did): every script replaces only what it wrote."""
    what = f"written by {owner}" if owner else f"holds {escape_bytes(names[0])}" + \
        (f" and {len(names) - 1} more" if len(names) > 1 else "") + f", not written by {script}"
    return UserError(f"{path}: {what}; pass a new or empty folder as --out ({script} replaces only what it wrote)")


def lock_folder(out: Path) -> FileLock:
    """-> the held lock of an output folder (its FOLDER_LOCK file; the system frees it on any exit); a live run
    there already: one line naming it."""
    try:
        return FileLock(out / FOLDER_LOCK).acquire(wait=False)
    except Busy as exc:
        raise UserError(f"{out}: a run is writing there now ({exc}); wait for it to end, or pass another --out") \
            from None


def hold_for_reading(folder: Path) -> FolderLock:
    """A prepared set held while this run reads it: prepare_data.py does not replace it meanwhile."""
    try:
        return FolderLock(folder).acquire()
    except Busy:
        raise UserError(f"{folder}: prepare_data.py is replacing this prepared set now; wait for it to end") from None


# ---------------------------------------------------------------------------------------------
# The record of a run: what made it


RUN_CONFIG = "config.json"  # in a run or report folder: which code, settings, versions and machine made it
PROJECT_DIR = Path(__file__).resolve().parent


def write_run_config(folder: Path, settings: dict, device: torch.device) -> None:
    """folder/config.json: the command line, every setting, the code (git commit, and whether the checkout had
    changes), the versions of the libraries the numbers depend on, the machine and the device; paths relative
    to the working folder where they lie inside it. Written when a run or report starts (a resumed run: the
    command that resumed it)."""
    import platform

    import cv2
    import ignite
    import numpy as np
    import PIL
    import skimage
    import torchvision

    write_json(folder / RUN_CONFIG, {
        "command": ["python", *map(relative_to_cwd, sys.argv)],
        "settings": {key: relative_to_cwd(value) for key, value in settings.items()},
        "code": code_version(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "ignite": ignite.__version__, "numpy": np.__version__,
                     "opencv": cv2.__version__, "scikit-image": skimage.__version__,
                     "pillow": PIL.__version__},
        "machine": {"host": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(), "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}})


def relative_to_cwd(value):
    """A path (or a list of them) as the working folder reaches it, where it lies inside it; anything else as it
    is: a record that another checkout can read, without this machine's folders."""
    if isinstance(value, (list, tuple)):
        return [relative_to_cwd(v) for v in value]
    if isinstance(value, (str, Path)) and os.path.isabs(value) and real_path(value).is_relative_to(Path.cwd()):
        return os.path.relpath(value)
    return str(value) if isinstance(value, Path) else value


def cpu_model() -> str:
    """The CPU's name as the system states it (Linux: /proc/cpuinfo), else what the platform module says."""
    import platform

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())


def code_version() -> dict:
    """{"commit": the git commit of this project's checkout, "dirty": whether its files differ from it}; both None
    where it is not a git checkout (an unpacked release) or git is missing."""
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(PROJECT_DIR), *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


# ---------------------------------------------------------------------------------------------
# Devices: a job that holds a GPU never falls back to the CPU; bfloat16 where the device has it


FAKE_GPUS_VARIABLE = "COLORIZATION_FAKE_GPUS"  # =1: this job's GPUs are a test cluster's fakes (tests only)


def gpus_granted() -> str | None:
    """How SLURM says this job holds GPUs ('SLURM_JOB_GPUS=0', ...), or None where it holds none."""
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS"):
        value = os.environ.get(name, "")
        # *_GPUS list GPU indexes ("0" is the first GPU); *_ON_NODE and SLURM_GPUS are counts
        if value and not (name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS") and value == "0"):
            return f"{name}={value}"
    return None


def add_device_argument(parser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the GPU where one answers, else the CPU; a job that holds a GPU never falls back "
                             "to the CPU (it stops with one line); cpu: the CPU on purpose")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda where a GPU answers, else cpu; but a job that holds GPUs (SLURM says so) or asked
    for --device cuda never falls back to the CPU: without CUDA it stops with one line saying what
    it found and what to do. --device cpu runs on the CPU on purpose, anywhere."""
    if name == "cpu":
        return torch.device("cpu")
    with warnings.catch_warnings(record=True) as caught:  # e.g. "The NVIDIA driver on your system is too old"
        warnings.simplefilter("always")
        answers = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if answers:
        return torch.device("cuda")
    granted = gpus_granted()
    if name == "auto" and not granted:
        return torch.device("cpu")
    if name == "auto" and os.environ.get(FAKE_GPUS_VARIABLE) == "1":
        print(f"note: {granted}, but {FAKE_GPUS_VARIABLE}=1 declares them fake: running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    said = f" ({escape_bytes(caught[0].message).split('.')[0]})" if caught else ""
    raise UserError(f"{granted or '--device cuda'}, but no CUDA GPU answers{said}: torch {torch.__version__} "
                    f"(CUDA build {torch.version.cuda}), {read_nvidia_driver()}, CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; install the torch build your driver "
                    "runs (e.g. TORCH_CUDA=cu126 make venv; README, cluster section) or pass --device cpu to run "
                    "on the CPU on purpose")


def amp_supported(device_type: str) -> bool:
    """Whether bfloat16 autocast pays on this device: any CUDA GPU the project runs on; a CPU with bfloat16
    instructions (AVX512-BF16 or AMX), as oneDNN finds them."""
    return device_type == "cuda" or torch.backends.mkldnn.is_available() and \
        torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bfloat16_autocast(device_type: str, wanted: bool, what: str) -> bool:
    """--amp settled: whether bfloat16 autocast runs; one line where it was asked for and this device lacks it."""
    if wanted and not amp_supported(device_type):
        print(f"note: --amp: this CPU has no bfloat16 instructions (vector unit: "
              f"{torch.backends.cpu.get_cpu_capability()}); {what} in float32", file=sys.stderr)
    return wanted and amp_supported(device_type)


def read_nvidia_driver() -> str:
    """'driver 535.104 (serves CUDA up to 12.2)' as nvidia-smi reports it, or why it cannot be read."""
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "no nvidia-smi here (no NVIDIA driver?)"
    driver, cuda = (re.search(rf"{key} Version:\s*([\d.]+)", out) for key in ("Driver", "CUDA"))
    if not driver:
        return "nvidia-smi finds no driver"
    return f"driver {driver.group(1)}" + (f" (serves CUDA up to {cuda.group(1)})" if cuda else "")
