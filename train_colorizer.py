"""Step 3: train the colorizer, L -> (a*, b*) per pixel.

Defaults are the seed's: its small encoder-decoder, sigmoid output, Adam lr 0.01, at most 20
epochs, early stopping with patience 5 on validation MSE, the loss an MSE between the true Lab
image and the input L merged with the predicted ab. Flags select the seed's variants (final
activation, max channels, layers per side) and better models (--arch unet, --regressor CKPT to
condition on a trained regressor's mean colour, --head classify for colour as classification
after Zhang, Isola and Efros 2016).
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import (FINAL_ACTIVATIONS, LOSSES, ArgumentParser, FaceLabDataset, ab_bins, ab_prior, add_training_args,
                    atomic_write, build_model, colorize_lab01, colorizer_input, exit_on_user_error, load_checkpoint,
                    non_negative_float, positive_float, positive_int, read_manifest, rebalancing_weights, soft_encode,
                    train)


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_training_args(p, out="runs/colorizer", epochs=20, lr=0.01, weight_decay=0.0, patience=5)
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=["seed", "unet"], default="seed")
    m.add_argument("--activation", choices=sorted(FINAL_ACTIVATIONS), default="sigmoid", help="final activation")
    m.add_argument("--max-channels", type=positive_int, default=128,
                   help="seed arch: widest layer (128, 256, 512 in the seed)")
    m.add_argument("--layers", type=positive_int, default=3, help="seed arch: layers per side (3 or 5 in the seed)")
    m.add_argument("--base-channels", type=positive_int, default=32, help="unet: channels at full resolution")
    m.add_argument("--depth", type=positive_int, default=4, help="unet: number of downsamplings")
    m.add_argument("--regressor", default=None,
                   help="a trained regressor checkpoint: condition on its predicted mean colour")
    m.add_argument("--head", choices=["regress", "classify"], default="regress",
                   help="classify: a distribution over quantized ab bins (Zhang et al. 2016) instead of ab values")
    m.add_argument("--rebalance", type=non_negative_float, default=0.5, help="classify: class rebalancing lambda")
    m.add_argument("--temperature", type=positive_float, default=0.38, help="classify: annealed-mean temperature")
    args = p.parse_args(argv)
    if args.layers < 2 or args.max_channels < 16 or args.rebalance > 1:
        p.error("--layers must be >= 2, --max-channels >= 16 and --rebalance at most 1")
    return args


def load_ab_prior(data_dir, bins):
    """The training set's smoothed ab distribution over the bins: computed once, saved beside the data."""
    path = Path(data_dir) / "ab_prior.npy"
    if not path.is_file():
        factor = read_manifest(data_dir)["augment_factor"]
        prior = ab_prior(FaceLabDataset(data_dir, "train").array[::factor], bins).numpy()
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), prior))
        print(f"computed the ab prior of the training images over {len(bins)} bins: {path}")
    return torch.from_numpy(np.load(path))


def setup_colorizer(config, device):
    regressor = None
    if config["regressor"]:
        # frozen: the colorizer learns to use the regressor's guess, as it will at test time
        regressor, _, _ = load_checkpoint(config["regressor"], task="regressor", device=device)
        regressor.requires_grad_(False)
    model = build_model(config)
    if config["head"] == "regress":
        loss = LOSSES[config["loss"]]
        return model, lambda m, lab01: (colorize_lab01(m, lab01, regressor), lab01), loss, loss

    bins = ab_bins().to(device)
    weights = rebalancing_weights(load_ab_prior(config["data"], bins.cpu()), config["rebalance"]).to(device)

    def predict(m, lab01):
        if not m.training:  # evaluation: decoded colours, scored like any colorizer
            return colorize_lab01(m, lab01, regressor), lab01
        L = lab01[:, :1]
        logits = m(colorizer_input(L, regressor(L) if regressor is not None else None))
        target, nearest = soft_encode(lab01[:, 1:], bins)
        return logits, (target, weights[nearest])

    def rebalanced_cross_entropy(logits, target):
        distribution, pixel_weights = target
        return -(pixel_weights * (distribution * F.log_softmax(logits, dim=1)).sum(dim=1)).mean()

    return model, predict, rebalanced_cross_entropy, F.mse_loss


def main():
    config = vars(parse_args())
    config["task"] = "colorizer"
    train(config, setup_colorizer)


if __name__ == "__main__":
    exit_on_user_error(main)
