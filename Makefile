# Fresh machine:  make demo   (venv, install, whole pipeline on the default data, short settings)
#                 make test   (the test suite; SLURM tests run where a SLURM answers)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FACES  ?= ../shared/data/face_images
RUNS   ?= runs

.PHONY: venv conda-env demo test app tensorboard results results-regressor-study bench bench-pipeline bench-scale bench-folders bench-tensorboard bench-metrics \
  slurm-start clean

# TORCH_CUDA=cu126 (or cu128, ...): torch and torchvision built for that CUDA, from PyTorch's own
# wheel index, for drivers older than PyPI's CUDA 13.0 build needs (R580); empty: PyPI's build
TORCH_CUDA ?=
# requirements.txt's torch and torchvision pins, as that build: torch==2.14.1+cu126 ...
TORCH_BUILD = $(patsubst %,%+$(TORCH_CUDA),$(shell grep -E '^torch(vision)?==' requirements.txt))
TORCH_INDEX = https://download.pytorch.org/whl/$(TORCH_CUDA)

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(if $(TORCH_CUDA),$(VENV)/bin/pip install --quiet --index-url $(TORCH_INDEX) $(TORCH_BUILD))
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(PY) -c "import torch, torchvision, torchvision.ops, ignite, cv2, skimage; \
	  torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5); \
	  print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| ignite', ignite.__version__)"
	touch $@

# the conda route (clusters): the same packages, torch from PyTorch's index when TORCH_CUDA is set
CONDA_ENV ?= colorization
conda-env:
	conda env create -f environment.yml -n $(CONDA_ENV)
	$(if $(TORCH_CUDA),conda run -n $(CONDA_ENV) pip install --index-url $(TORCH_INDEX) $(TORCH_BUILD))

# data/face_images/ if present, else the bundled demo photos; a few epochs
demo: venv
	$(PY) prepare_data.py --out $(RUNS)/demo/data
	$(PY) train_regressor.py --data $(RUNS)/demo/data --out $(RUNS)/demo/regressor --epochs 3
	$(PY) train_colorizer.py --data $(RUNS)/demo/data --out $(RUNS)/demo/colorizer --epochs 5
	$(PY) evaluate.py --data $(RUNS)/demo/data --colorizer $(RUNS)/demo/colorizer/best.pt \
	  --regressor $(RUNS)/demo/regressor/best.pt --out $(RUNS)/demo/report
	$(PY) colorize.py $(UNSEEN_FACES) --side-by-side --out $(RUNS)/demo/colorized   # the shipped model

test: venv
	$(PY) -m pytest

# a page to colour photos in, with the shipped model: open the address it prints
app: venv
	$(PY) app.py

# every run's TensorBoard event files under $(RUNS) (on the cluster: see README, "Watch a training")
tensorboard: venv
	$(VENV)/bin/tensorboard --logdir $(RUNS)

# The study on the real faces, every run the README's results come from (CPU: about 5 hours,
# most of it the U-Nets; the regressor's 200 epochs take hours more).
FACES_RUNS = $(RUNS)/faces
PERSON_RUNS = $(RUNS)/faces_by_person
REGRESSOR_EPOCHS ?= 200
CAPACITY_EPOCHS ?= 20
# extra flags for every training, e.g. TRAIN_FLAGS=--data-on-device on a GPU (speed only, same results)
TRAIN_FLAGS ?=
TRAIN = $(PY) train_colorizer.py --data $(FACES_RUNS)/data $(TRAIN_FLAGS)
UNET = --arch unet --base-channels 8 --depth 4 --lr 0.002 --patience 0
# two face photos that are not in the dataset, shipped with scikit-image and matplotlib
UNSEEN_FACES = $(shell $(PY) -c "import skimage, matplotlib, pathlib as p; \
  print(p.Path(skimage.__file__).parent / 'data' / 'astronaut.png', \
        p.Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg')" 2>/dev/null)

.PHONY: faces faces-data faces-activation faces-quality faces-capacity faces-regressor faces-regressor-study \
  faces-conditioning faces-person faces-person-cosine
faces: faces-activation faces-quality faces-capacity faces-regressor faces-regressor-study faces-conditioning \
  faces-person faces-person-cosine

faces-data: venv
	$(PY) prepare_data.py --source $(FACES) --out $(FACES_RUNS)/data

# the seed's colorizer with its three final activations (seed settings: lr 0.01, <= 20 epochs, patience 5)
faces-activation: faces-data
	for act in sigmoid relu tanh; do $(TRAIN) --out $(FACES_RUNS)/activation/$$act --activation $$act; done

# regression vs classification: the same U-Net, the same 16 epochs; and the seed backbone classifying
faces-quality: faces-data
	$(TRAIN) --out $(FACES_RUNS)/quality/unet8 $(UNET) --epochs 16
	$(TRAIN) --out $(FACES_RUNS)/quality/unet8_classify $(UNET) --epochs 16 --head classify
	$(TRAIN) --out $(FACES_RUNS)/quality/seed_classify --head classify

# the seed's capacity table: max channels x layers per side, at the seed's settings (at most
# CAPACITY_EPOCHS epochs, early stopping with patience 5)
faces-capacity: faces-data
	for layers in 3 5; do for ch in 128 256 512; do $(TRAIN) --out $(FACES_RUNS)/capacity/c$$ch-l$$layers \
	  --max-channels $$ch --layers $$layers --epochs $(CAPACITY_EPOCHS); done; done
	$(TRAIN) --out $(FACES_RUNS)/capacity/c64-l5 --max-channels 64 --layers 5 --epochs $(CAPACITY_EPOCHS)

faces-regressor: faces-data
	$(PY) train_regressor.py --data $(FACES_RUNS)/data --out $(FACES_RUNS)/regressor --epochs $(REGRESSOR_EPOCHS) \
	  $(TRAIN_FLAGS)

# the regressor on the CPU: the seed's settings against a higher learning rate, a cosine schedule
# and smaller batches, REGRESSOR_STUDY_EPOCHS each (about 45 s an epoch on 2 cores)
REGRESSOR_STUDY_EPOCHS ?= 5
REGRESSOR = $(PY) train_regressor.py $(TRAIN_FLAGS) --epochs $(REGRESSOR_STUDY_EPOCHS)
# the alternative the study chose: the regressor the conditioned colorizers use
REGRESSOR_CPU = --lr 1e-3 --lr-schedule cosine
faces-regressor-study: faces-data
	$(REGRESSOR) --data $(FACES_RUNS)/data --out $(FACES_RUNS)/regressor_study/seed
	$(REGRESSOR) --data $(FACES_RUNS)/data --out $(FACES_RUNS)/regressor_study/lr1e-3 --lr 1e-3
	$(REGRESSOR) --data $(FACES_RUNS)/data --out $(FACES_RUNS)/regressor_study/lr1e-3_cosine $(REGRESSOR_CPU)
	$(REGRESSOR) --data $(FACES_RUNS)/data --out $(FACES_RUNS)/regressor_study/batch16 --batch-size 16

# the seed's two-stage idea: each colorizer with and without the regressor's mean colour, same budget
# (the seed colorizer at its own settings, the U-Net classifier CONDITION_EPOCHS epochs)
CONDITION_EPOCHS ?= 3
UNET_CLASSIFY = $(UNET) --head classify --epochs $(CONDITION_EPOCHS)
define conditioned_colorizers  # (prepared data, regressor checkpoint, folder of runs)
	$(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(1) --out $(3)/seed
	$(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(1) --out $(3)/seed_regressor --regressor $(2)
	$(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(1) --out $(3)/unet8_classify $(UNET_CLASSIFY)
	$(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(1) --out $(3)/unet8_classify_regressor $(UNET_CLASSIFY) \
	  --regressor $(2)
endef
STUDY_REGRESSOR = $(FACES_RUNS)/regressor_study/lr1e-3_cosine/best.pt
faces-conditioning: faces-regressor-study
	$(call conditioned_colorizers,$(FACES_RUNS)/data,$(STUDY_REGRESSOR),$(FACES_RUNS)/conditioning)

# people the models never saw: split by person (JPEG comment): 35 people train, 5 validate, 10 test;
# the four conditioning runs, and the seed colorizer with --augment (a fresh flip and crop every step)
faces-person: venv
	$(PY) prepare_data.py --source $(FACES) --out $(PERSON_RUNS)/data --split-by person --held-out 0.3 \
	  --val-share 0.33
	$(REGRESSOR) --data $(PERSON_RUNS)/data --out $(PERSON_RUNS)/regressor $(REGRESSOR_CPU)
	$(call conditioned_colorizers,$(PERSON_RUNS)/data,$(PERSON_RUNS)/regressor/best.pt,$(PERSON_RUNS)/colorizers)
	$(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(PERSON_RUNS)/data --out $(PERSON_RUNS)/colorizers/seed_augment --augment

# what the unseen-people goal tried next: the learning rate falling along a half cosine (it let the
# regressor settle), on the seed colorizer, the U-Net with either head and the 5-layer seed colorizer
# (then twice as wide, and with --augment)
PERSON_EPOCHS ?= 20
PERSON_UNET_EPOCHS ?= 8
PERSON_COLORIZER = $(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(PERSON_RUNS)/data --lr-schedule cosine \
  --patience 0
faces-person-cosine: faces-person
	$(PERSON_COLORIZER) --out $(PERSON_RUNS)/colorizers/seed_cosine --epochs $(PERSON_EPOCHS)
	$(PERSON_COLORIZER) --out $(PERSON_RUNS)/colorizers/unet8_cosine $(UNET) --epochs $(PERSON_UNET_EPOCHS)
	$(PERSON_COLORIZER) --out $(PERSON_RUNS)/colorizers/unet8_classify_cosine $(UNET) --head classify \
	  --epochs $(PERSON_UNET_EPOCHS)
	$(PERSON_COLORIZER) --out $(PERSON_RUNS)/colorizers/c128-l5_cosine --layers 5 --epochs $(PERSON_EPOCHS)
	$(PERSON_COLORIZER) --out $(PERSON_RUNS)/colorizers/c256-l5_cosine --layers 5 --max-channels 256 \
	  --epochs $(PERSON_EPOCHS)
	$(PERSON_COLORIZER) --out $(PERSON_RUNS)/colorizers/c128-l5_cosine_augment --layers 5 --augment \
	  --epochs $(PERSON_EPOCHS)

# Faces from the wild (../shared/data/lfw_wild, LFW: research use): split by person (the file name without its
# number), 20% of the people held out, half of them validate, half test (326 each); the U-Net 16x4 classifier
# twice, with the paper's class rebalancing (lambda 0.5) and without it (1), and a U-Net 16x5 (one level more: a
# wider view) between the two (lambda 0.75); LFW_EPOCHS epochs on a cosine rate, in bfloat16 (--amp; this Intel
# CPU has AMX); about 30 minutes each on the 2-core VM
LFW ?= ../shared/data/lfw_wild
LFW_RUNS = $(RUNS)/lfw
LFW_EPOCHS ?= 20
LFW_COLORIZER = $(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(LFW_RUNS)/data --arch unet --base-channels 16 \
  --depth 4 --head classify --lr 0.002 --lr-schedule cosine --patience 0 --augment --amp --epochs $(LFW_EPOCHS)
.PHONY: lfw lfw-data shipped-model finetune
lfw-data: venv
	$(PY) prepare_data.py --source $(LFW) --out $(LFW_RUNS)/data --split-by person --person-from file-name \
	  --held-out 0.2 --augment-factor 1
lfw: lfw-data
	$(LFW_COLORIZER) --out $(LFW_RUNS)/colorizers/unet16_classify
	$(LFW_COLORIZER) --out $(LFW_RUNS)/colorizers/unet16_classify_norebalance --rebalance 1
	$(LFW_COLORIZER) --out $(LFW_RUNS)/colorizers/unet16x5_classify_rebalance075 --depth 5 --rebalance 0.75

# the shipped model (models/face_colorizer.pt, card: models/README.md), chosen on the 326 validation people:
# each lfw run's last epoch (the end of its cosine schedule) and best.pt (its lowest validation MSE at T=0.38)
# at LFW_TEMPERATURES, each also with its colours spread by LFW_CHROMA_GAINS; the lowest seed MSE with a
# colorfulness gap of at most 3, among the networks that ship in a few MB (the U-Net 16x4: 3.9 MB in float16; the
# 16x5, 15.6 MB, does not), ships (the sweep's report names it; SHIPPED_* say the same), then is scored on the 326
# test people beside the baselines, the runs' best.pt, and two photos from neither set. The committed choice:
# `make shipped-model LFW_RUN_NAMES=unet16_classify_norebalance LFW_TEMPERATURES="0.7 1 1.3"
# LFW_SWEEP_OUT=docs/results/lfw_chroma` (the other runs' sweep, before the chroma gain: lfw_temperature)
LFW_TEMPERATURES ?= 0.2 0.5 0.7 1
LFW_CHROMA_GAINS ?= 1.3 1.35 1.4
LFW_RUN_NAMES ?= unet16_classify unet16_classify_norebalance unet16x5_classify_rebalance075
LFW_CHECKPOINTS = $(foreach run,$(LFW_RUN_NAMES),$(foreach f,best last,$(LFW_RUNS)/colorizers/$(run)/$(f).pt))
LFW_SWEEP_OUT ?= docs/results/lfw_temperature
SHIPPED_CHECKPOINT ?= $(LFW_RUNS)/colorizers/unet16_classify_norebalance/last.pt
SHIPPED_TEMPERATURE ?= 1
SHIPPED_CHROMA_GAIN ?= 1.35
shipped-model: venv
	$(PY) evaluate.py --data $(LFW_RUNS)/data --colorizer $(LFW_CHECKPOINTS) --temperatures $(LFW_TEMPERATURES) \
	  --chroma-gains $(LFW_CHROMA_GAINS) --split val --out $(LFW_SWEEP_OUT) --show 4
	$(PY) models/export.py $(SHIPPED_CHECKPOINT) models/face_colorizer.pt --temperature $(SHIPPED_TEMPERATURE) \
	  --chroma-gain $(SHIPPED_CHROMA_GAIN) --face-scale-from $(LFW_RUNS)/data
	$(PY) evaluate.py --data $(LFW_RUNS)/data --colorizer models/face_colorizer.pt --runs $(LFW_RUNS)/colorizers \
	  --photos $(UNSEEN_FACES) --out docs/results/lfw --show 4
	rm -f docs/shipped_model/grace_hopper.jpg docs/shipped_model/grace_hopper_compare.jpg  # the README's figure, redrawn
	$(PY) colorize.py $(word 2,$(UNSEEN_FACES)) --side-by-side --out docs/shipped_model

# the split the shipped model was trained on, to score it on its 326 test people: prepare_data.py as it was at
# SHIPPED_SPLIT_COMMIT (since then, 5 more near-gray photos are told gray and left out, which changes the split)
SHIPPED_SPLIT_COMMIT ?= 8c86153
.PHONY: lfw-shipped-data bench-faces
lfw-shipped-data: venv
	git worktree add --detach $(RUNS)/.shipped_split $(SHIPPED_SPLIT_COMMIT)
	cd $(RUNS)/.shipped_split && $(abspath $(PY)) prepare_data.py --source $(abspath $(LFW)) \
	  --out $(abspath $(LFW_RUNS))_shipped/data --split-by person --person-from file-name --held-out 0.2 \
	  --augment-factor 1; status=$$?; git worktree remove --force $(RUNS)/.shipped_split; exit $$status

# group photos built from the shipped model's test people: --faces off against auto (benchmarks/group_photos.py),
# and how the face search does against other settings of its cascade (benchmarks/face_search.py)
bench-faces: venv
	$(PY) benchmarks/group_photos.py --data $(LFW_RUNS)_shipped/data
	$(PY) benchmarks/face_search.py --data $(LFW_RUNS)_shipped/data

# fine-tuning against training from scratch, the same budget (FINETUNE_EPOCHS epochs of the same U-Net on the
# same photos): the studio faces of 35 people (525 photos, no fixed augmented copies), scored on 10 others and on
# the two portraits from neither set
FINETUNE_RUNS = $(RUNS)/finetune
FINETUNE_EPOCHS ?= 10
FINETUNE = $(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(FINETUNE_RUNS)/data --lr-schedule cosine --patience 0 \
  --augment --amp --epochs $(FINETUNE_EPOCHS)
finetune: venv
	$(PY) prepare_data.py --source $(FACES) --out $(FINETUNE_RUNS)/data --split-by person --held-out 0.3 \
	  --val-share 0.33 --augment-factor 1
	$(FINETUNE) --out $(FINETUNE_RUNS)/colorizers/scratch --arch unet --base-channels 16 --depth 4 --head classify \
	  --lr 0.002
	$(FINETUNE) --out $(FINETUNE_RUNS)/colorizers/finetuned --init-from models/face_colorizer.pt --lr 0.0005
	$(PY) evaluate.py --data $(FINETUNE_RUNS)/data --colorizer models/face_colorizer.pt \
	  --runs $(FINETUNE_RUNS)/colorizers --photos $(UNSEEN_FACES) --out docs/results/finetune --show 4

# what bfloat16 (--amp) does to quality at a fixed budget on the CPU: the scratch run of `make finetune` in float32
# and in bfloat16, two seeds each (the seeds' spread is the yardstick); needs the data `make finetune` prepared
AMP_STUDY = $(PY) train_colorizer.py $(TRAIN_FLAGS) --data $(FINETUNE_RUNS)/data --lr-schedule cosine --patience 0 \
  --augment --epochs $(FINETUNE_EPOCHS) --arch unet --base-channels 16 --depth 4 --head classify --lr 0.002
.PHONY: amp-study
amp-study: venv
	$(foreach seed,0 1,$(AMP_STUDY) --seed $(seed) --out $(RUNS)/amp_study/fp32_seed$(seed) && \
	  $(AMP_STUDY) --seed $(seed) --amp --out $(RUNS)/amp_study/bf16_seed$(seed) &&) true

# the README's results tables and figures, from the runs `make faces` trained
# (the classifiers' annealed-mean temperature on unseen people: chosen on the 5 validation people among
# TEMPERATURES, the lowest MSE with a colorfulness gap of at most 1)
TEMPERATURES ?= 0.1 0.2 0.3 0.5 0.7 1
PERSON_TEMPERATURE ?= 0.5
results: venv
	$(PY) evaluate.py --data $(FACES_RUNS)/data --runs $(FACES_RUNS)/activation \
	  --regressor $(FACES_RUNS)/regressor/best.pt --out docs/results/activation
	$(PY) evaluate.py --data $(FACES_RUNS)/data --colorizer $(FACES_RUNS)/activation/sigmoid/best.pt \
	  --runs $(FACES_RUNS)/quality --photos $(UNSEEN_FACES) --out docs/results/quality
	$(PY) evaluate.py --data $(FACES_RUNS)/data --runs $(FACES_RUNS)/capacity --out docs/results/capacity --show 4
	$(PY) evaluate.py --data $(PERSON_RUNS)/data --colorizer $(PERSON_RUNS)/colorizers/unet8_classify_cosine/best.pt \
	  --temperatures $(TEMPERATURES) --split val --out docs/results/by_person_temperature --show 4
	$(PY) evaluate.py --data $(PERSON_RUNS)/data --runs $(PERSON_RUNS)/colorizers --temperatures $(PERSON_TEMPERATURE) \
	  --regressor $(PERSON_RUNS)/regressor/best.pt --out docs/results/by_person --show 3
	$(PY) evaluate.py --data $(FACES_RUNS)/data --runs $(FACES_RUNS)/conditioning --regressor $(STUDY_REGRESSOR) \
	  --out docs/results/conditioning

# the regressor study's reports (test MSE with its bootstrap interval, learning curves), one per run
results-regressor-study: venv
	for run in seed lr1e-3 lr1e-3_cosine batch16; do $(PY) evaluate.py --data $(FACES_RUNS)/data \
	  --regressor $(FACES_RUNS)/regressor_study/$$run/best.pt --out docs/results/regressor_study/$$run; done

bench: venv
	$(PY) benchmarks/bench.py

# wall time of the whole seed pipeline (200 regressor epochs: hours on a CPU, minutes on a GPU)
bench-pipeline: venv
	$(PY) benchmarks/pipeline.py

# memory with 100,000 photos against 10,000: prepare_data.py and training (about 15 minutes on 2 cores)
bench-scale: venv
	$(PY) benchmarks/scale.py

# colorize.py on folders of 12-MP JPEGs, 24-MP 16-bit TIFFs and a mix, beside decoding and encoding them alone
bench-folders: venv
	$(PY) benchmarks/photo_folders.py

# what TensorBoard's event files cost a training (needs a prepared set: make lfw-data)
bench-tensorboard: venv
	$(PY) benchmarks/tensorboard_cost.py --data $(LFW_RUNS)/data

# evaluate's metrics eager against torch.compile, with a fresh compile cache (about a minute; needs make lfw-data)
bench-metrics: venv
	$(PY) benchmarks/metrics.py --cold-cache

slurm-start:
	sudo bash slurm/local_cluster.sh start

clean:
	rm -rf $(RUNS)/demo .pytest_cache
