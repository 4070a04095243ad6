"""Ship a trained colorizer in the repository: its weights (float16, no optimizer state) and config, loadable
as any checkpoint (colorize.py and evaluate.py take it as --checkpoint / --colorizer; colorize.py uses
models/face_colorizer.pt when given none).

    python models/export.py runs/lfw/colorizers/unet16_classify/best.pt models/face_colorizer.pt --temperature 0.5 \
        --chroma-gain 1.2
"""
import io
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (ClassifyingColorizer, check_prepared, checkpoint_contents, chroma_gain,  # noqa: E402
                    load_checkpoint, run_record, run_record_of, temperature)
from guards import ArgumentParser, UserError, atomic_write, exit_on_user_error  # noqa: E402
from faces import face_scale  # noqa: E402


def main():
    p = ArgumentParser(__doc__)
    p.add_argument("checkpoint", help="a colorizer checkpoint written by train_colorizer.py (best.pt)")
    p.add_argument("out", type=Path, help="the file to write, e.g. models/face_colorizer.pt")
    p.add_argument("--temperature", type=temperature, default=None,
                   help="classification checkpoints: the annealed-mean temperature to ship (chosen on validation)")
    p.add_argument("--chroma-gain", type=chroma_gain, default=None,
                   help="classification checkpoints: the chroma gain to ship (chosen on validation)")
    p.add_argument("--face-scale-from", type=Path, default=None, metavar="DATA",
                   help="measure the scale of the faces in this prepared set's training images (the set the model "
                        "was trained on), for a checkpoint from before checkpoints carried it")
    args = p.parse_args()
    model, config, ckpt = load_checkpoint(args.checkpoint, task="colorizer")
    if args.face_scale_from:
        config = {**config, "face_scale": face_scale(args.face_scale_from, check_prepared(args.face_scale_from))}
    if config.get("regressor"):
        raise UserError(f"{args.checkpoint}: a colorizer conditioned on a regressor; ship an unconditioned one")
    for key, value in (("temperature", args.temperature), ("chroma_gain", args.chroma_gain)):
        if value is not None:
            if not isinstance(model, ClassifyingColorizer):
                raise UserError(f"{args.checkpoint}: --{key.replace('_', '-')} applies to classification "
                                "checkpoints only")
            config = {**config, key: value}
    # parameters in float16 halve the file (float32 again when loaded: the scores are measured on this file);
    # buffers, the batch-norm statistics and the ab bins, stay as they are
    parameters = {name for name, _ in model.named_parameters()}
    weights = {k: v.half() if k in parameters else v for k, v in model.state_dict().items()}
    shipped = checkpoint_contents(weights, run_record(config, run_record_of(ckpt)["history"]))
    # saved to memory first: torch.save names the archive inside the file after the file it writes, and the
    # temporary file's name changes every run; from a buffer the same model is the same bytes
    buffer = io.BytesIO()
    torch.save(shipped, buffer)
    atomic_write(args.out, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    print(f"shipped {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) from {args.checkpoint}")


if __name__ == "__main__":
    exit_on_user_error(main)
