"""Step 3: train the colorizer, L -> (a*, b*) per pixel.

Defaults are the seed's: its small encoder-decoder, sigmoid output, Adam lr 0.01, at most 20
epochs, early stopping with patience 5 on validation MSE, the loss an MSE between the true Lab
image and the input L merged with the predicted ab. Flags select the seed's variants (final
activation, max channels, layers per side) and better models (--arch unet, --regressor CKPT to
condition on a trained regressor's mean colour).
"""
import argparse

from common import (FINAL_ACTIVATIONS, add_training_args, build_model, colorize_lab01, exit_on_user_error,
                    load_checkpoint, train)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_args(p, out="runs/colorizer", epochs=20, lr=0.01, weight_decay=0.0, batch_size=64, patience=5)
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=["seed", "unet"], default="seed")
    m.add_argument("--activation", choices=sorted(FINAL_ACTIVATIONS), default="sigmoid", help="final activation")
    m.add_argument("--max-channels", type=int, default=128, help="seed arch: widest layer (128, 256, 512 in the seed)")
    m.add_argument("--layers", type=int, default=3, help="seed arch: layers per side (3 or 5 in the seed)")
    m.add_argument("--base-channels", type=int, default=32, help="unet: channels at full resolution")
    m.add_argument("--depth", type=int, default=4, help="unet: number of downsamplings")
    m.add_argument("--regressor", default=None,
                   help="a trained regressor checkpoint: condition on its predicted mean colour")
    args = p.parse_args(argv)
    if args.layers < 2 or args.max_channels < 16 or args.depth < 1:
        p.error("--layers must be >= 2, --max-channels >= 16 and --depth >= 1")
    return args


def setup_colorizer(config, device):
    regressor = None
    if config["regressor"]:
        # frozen: the colorizer learns to use the regressor's guess, as it will at test time
        regressor, _, _ = load_checkpoint(config["regressor"], task="regressor", device=device)
        regressor.requires_grad_(False)

    def predict(model, lab01):
        return colorize_lab01(model, lab01, regressor), lab01

    return build_model(config), predict


def main():
    config = vars(parse_args())
    config["task"] = "colorizer"
    train(config, setup_colorizer)


if __name__ == "__main__":
    exit_on_user_error(main)
