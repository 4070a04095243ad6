"""Step 3: train the colorizer, L -> (a*, b*) per pixel.

Defaults are the seed's: its small encoder-decoder, sigmoid output, Adam lr 0.01, at most 20
epochs, early stopping with patience 5 on validation MSE, the loss an MSE between the true Lab
image and the input L merged with the predicted ab. Flags select the seed's variants (final
activation, max channels, layers per side) and better models (--arch unet, --regressor CKPT to
condition on a trained regressor's mean colour, --head classify for colour as classification
after Zhang, Isola and Efros 2016).

An epoch (training.py): every training batch once through predict, the loss and an Adam step;
then the validation loss and MSE, best.pt when the MSE is the best yet, last.pt, history.json and
loss.png in --out.

    python train_colorizer.py --data data/prepared --out runs/colorizer             # the seed's colorizer
    python train_colorizer.py --data data/prepared --out runs/unet --arch unet --head classify --augment
"""

import numpy as np
import torch
import torch.nn.functional as F

from common import (ARCHITECTURES, ARCHITECTURE_SETTINGS, CLASSIFY_STRIDE, DEFAULT_TEMPERATURE, FINAL_ACTIVATIONS,
                    LabSplit, ab01_to_ab, ab_bins, build_model, colorize_lab01, colorizer_input, lab01_to_lab,
                    load_checkpoint, load_colorizer, read_manifest, temperature, training_statistic)
from guards import ArgumentParser, exit_on_user_error, non_negative_float, positive_int, real_path
from training import LOSSES, TrainingSetup, add_training_args, train


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_training_args(p, out="runs/colorizer", epochs=20, lr=0.01, weight_decay=0.0, patience=5)
    m = p.add_argument_group("model (with --init-from: taken from that checkpoint)")
    m.add_argument("--init-from", default=None, metavar="CKPT",
                   help="fine-tune: start from this colorizer's weights (its architecture, head and regressor; a "
                        "fresh optimizer and schedule); rerunning the command resumes as usual")
    m.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None, help="default: seed")
    m.add_argument("--activation", choices=sorted(FINAL_ACTIVATIONS), default=None,
                   help="final activation (default: sigmoid)")
    m.add_argument("--max-channels", type=positive_int, default=None,
                   help="seed arch: widest layer (128, 256, 512 in the seed; default 128)")
    m.add_argument("--layers", type=positive_int, default=None,
                   help="seed arch: layers per side (3 or 5 in the seed; default 3)")
    m.add_argument("--base-channels", type=positive_int, default=None,
                   help="unet: channels at full resolution (default 32)")
    m.add_argument("--depth", type=positive_int, default=None, help="unet: number of downsamplings (default 4)")
    m.add_argument("--regressor", default=None,
                   help="a trained regressor checkpoint: condition on its predicted mean colour")
    m.add_argument("--head", choices=["regress", "classify"], default=None,
                   help="classify: a distribution over quantized ab bins (Zhang et al. 2016) instead of ab values "
                        "(default: regress)")
    m.add_argument("--rebalance", type=non_negative_float, default=0.5,
                   help="classify: the paper's class rebalancing lambda, from 0 (each colour weighed by the inverse "
                        "of its frequency: the most vivid) to 1 (no rebalancing)")
    m.add_argument("--temperature", type=temperature, default=DEFAULT_TEMPERATURE,
                   help="classify: annealed-mean temperature")
    args = p.parse_args(argv)
    # the architecture's settings, where neither a flag nor --init-from says otherwise
    architecture = {name: setting.default for name, setting in ARCHITECTURE_SETTINGS.items()}
    if args.init_from:
        trained = load_checkpoint(args.init_from, task="colorizer")[1]
        architecture = {k: trained.get(k, v) for k, v in {**architecture, "regressor": None}.items()}
    for key, value in architecture.items():
        given = getattr(args, key)
        if args.init_from and given is not None and given != value:
            p.error(f"argument --{key.replace('_', '-')}: {args.init_from} was trained with {key} {value!r}; "
                    "fine-tuning keeps its architecture: leave the flag out")
        setattr(args, key, value if given is None else given)
    for key, setting in ARCHITECTURE_SETTINGS.items():  # what it trains must load: the checkpoints' own bounds
        if not setting.valid(getattr(args, key)):
            p.error(f"argument --{key.replace('_', '-')}: {getattr(args, key)!r} is beyond what a checkpoint may hold")
    if args.layers < 2 or args.max_channels < 16 or args.rebalance > 1:
        p.error("--layers must be >= 2, --max-channels >= 16 and --rebalance at most 1")
    return args


def setup_colorizer(config, device) -> TrainingSetup:
    if config["init_from"]:  # its weights, and the regressor it carries
        model, regressor, _, _ = load_colorizer(config["init_from"], device)
        if config["head"] == "classify":  # decoded as this run's config says: the chroma gain is chosen afterwards
            model.temperature, model.chroma_gain = config["temperature"], 1.0
    else:
        model = build_model(config)
        regressor = load_checkpoint(config["regressor"], task="regressor", device=device)[0] if config["regressor"] \
            else None
    if regressor is not None:  # frozen: the colorizer learns to use the regressor's guess, as it will at test time
        regressor.requires_grad_(False)
    if config["head"] == "regress":
        loss = LOSSES[config["loss"]]
        def predict(network, lab01):
            return colorize_lab01(network, lab01, regressor), lab01
        return TrainingSetup(model, predict, loss, loss, config["loss"], regressor)

    bins = ab_bins().to(device)
    weights = rebalancing_weights(load_ab_prior(config["data"], bins.cpu()), config["rebalance"]).to(device)

    def predict(m, lab01):
        if not m.training:  # evaluation: decoded colours, scored like any colorizer
            return colorize_lab01(m, lab01, regressor), lab01
        target, nearest = soft_encode(lab01[:, 1:], bins)
        return m(colorizer_input(lab01[:, :1], regressor)), (target, weights[nearest])

    def rebalanced_cross_entropy(logits, target):
        distribution, pixel_weights = target
        return -(pixel_weights * (distribution * F.log_softmax(logits, dim=1)).sum(dim=1)).mean()

    return TrainingSetup(model, predict, rebalanced_cross_entropy, F.mse_loss, "cross-entropy", regressor)


# ---------------------------------------------------------------------------------------------
# What only training the classification head needs (Zhang, Isola and Efros 2016): soft-encoded
# targets and class rebalancing against the training set's colour prior.


def nearest_bins(ab: torch.Tensor, bins: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ab in Lab units (N, 2, H, W) -> (distances, indices) of the k nearest bins, each (N, H, W, k)."""
    d = torch.cdist(ab.permute(0, 2, 3, 1).reshape(-1, 2), bins)
    dist, idx = d.topk(k, dim=1, largest=False)
    shape = (ab.shape[0], *ab.shape[2:], k)
    return dist.view(shape), idx.view(shape)


def soft_encode(ab01: torch.Tensor, bins: torch.Tensor, k=5, sigma=5.0):
    """ab in [0, 1] at full resolution -> (target distribution over the bins at 1/CLASSIFY_STRIDE
    resolution, (N, Q, h, w): the k nearest bins weighted by a Gaussian of sigma Lab units;
    index of the nearest bin, (N, h, w))."""
    ab = ab01_to_ab(F.avg_pool2d(ab01, CLASSIFY_STRIDE))
    dist, idx = nearest_bins(ab, bins, k)
    weights = torch.softmax(-dist ** 2 / (2 * sigma ** 2), dim=-1)
    target = torch.zeros(*idx.shape[:3], len(bins), device=ab.device).scatter_(-1, idx, weights)
    return target.permute(0, 3, 1, 2), idx[..., 0]


def ab_prior(lab01: np.ndarray, bins: torch.Tensor, sigma=5.0, batch=16) -> torch.Tensor:
    """Empirical distribution of the training pixels (Lab01, N x 3 x H x W) over the bins, smoothed
    with a Gaussian of sigma (Lab units) across bins: the p-tilde of the paper's class rebalancing."""
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for i in range(0, len(lab01), batch):
        ab = lab01_to_lab(torch.from_numpy(np.array(lab01[i:i + batch])).float())[:, 1:]
        counts += torch.bincount(nearest_bins(ab, bins, 1)[1].flatten(), minlength=len(bins)).double()
    p = counts / counts.sum()
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()) ** 2 / (2 * sigma ** 2))
    smoothed = kernel @ p
    return (smoothed / smoothed.sum()).float()


def load_ab_prior(data_dir, bins):
    """The training set's smoothed ab distribution over the bins: computed once, kept beside the data."""
    factor = read_manifest(data_dir)["augment_factor"]  # the originals only, not their augmented copies
    prior = training_statistic(data_dir, "ab_prior", (len(bins),),
                               lambda: ab_prior(LabSplit(data_dir, "train").array[::factor], bins).numpy(),
                               f"the ab prior of the training images over {len(bins)} bins")
    return torch.from_numpy(prior)


def rebalancing_weights(prior: torch.Tensor, lam=0.5) -> torch.Tensor:
    """w proportional to 1 / ((1 - lambda) p + lambda / Q), scaled so that its mean under p is 1."""
    w = 1 / ((1 - lam) * prior + lam / len(prior))
    return w / (prior * w).sum()


def main():
    args = parse_args()
    # the regressor's weights travel in the checkpoints; its path, resolved, says where they came from
    config = {**vars(args), "task": "colorizer", "init_from": args.init_from and str(real_path(args.init_from))}
    if args.regressor and not args.init_from:
        config["regressor"] = str(real_path(args.regressor))
    train(config, setup_colorizer)


if __name__ == "__main__":
    exit_on_user_error(main)
