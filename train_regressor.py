"""Step 2: train the regressor, L -> mean (a*, b*) of the image (the seed's first model).

Defaults are the seed's: Adam lr 1e-4, weight decay 1e-5, 200 epochs. The best checkpoint by
validation MSE is RUN/best.pt; RUN/last.pt resumes an interrupted run (rerun the same command).

An epoch (training.py): every training batch once through predict, the loss and an Adam step;
then the validation loss and MSE, best.pt when the MSE is the best yet, last.pt, history.json and
loss.png in --out.

    python train_regressor.py --data data/prepared --out runs/regressor             # the seed: 200 epochs
    python train_regressor.py --data data/prepared --out runs/try --epochs 3 --dry-run
"""
from common import SeedRegressor
from guards import ArgumentParser, exit_on_user_error
from training import LOSSES, TrainingSetup, add_training_args, train


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    add_training_args(p, out="runs/regressor", epochs=200, lr=1e-4, weight_decay=1e-5, patience=0)
    return p.parse_args(argv)


def setup_regressor(config, device) -> TrainingSetup:
    def predict(model, lab01):
        # prediction and target: the mean (a, b) of each image, on the [0, 1] scale
        return model(lab01[:, :1]), lab01[:, 1:].mean(dim=(2, 3))

    loss = LOSSES[config["loss"]]
    return TrainingSetup(SeedRegressor(), predict, loss, loss, config["loss"])


def main():
    train({**vars(parse_args()), "task": "regressor"}, setup_regressor)


if __name__ == "__main__":
    exit_on_user_error(main)
