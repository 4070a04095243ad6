# Fresh machine:  make demo   (venv, install, whole pipeline on the default data, short settings)
#                 make test   (the test suite; SLURM tests run where a SLURM answers)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FACES  ?= ../shared/data/face_images
RUNS   ?= runs

.PHONY: venv demo test faces results bench slurm-start clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(PY) -c "import torch, torchvision, torchvision.ops, ignite, cv2, skimage; \
	  torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5); \
	  print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| ignite', ignite.__version__)"
	touch $@

# data/face_images/ if present, else the bundled demo photos; a few epochs
demo: venv
	$(PY) prepare_data.py --out $(RUNS)/demo/data
	$(PY) train_regressor.py --data $(RUNS)/demo/data --out $(RUNS)/demo/regressor --epochs 3
	$(PY) train_colorizer.py --data $(RUNS)/demo/data --out $(RUNS)/demo/colorizer --epochs 5
	$(PY) evaluate.py --data $(RUNS)/demo/data --colorizer $(RUNS)/demo/colorizer/best.pt \
	  --regressor $(RUNS)/demo/regressor/best.pt --out $(RUNS)/demo/report

test: venv
	$(PY) -m pytest

# the seed's study on the real faces (a CPU takes hours for the regressor's 200 epochs)
REGRESSOR_EPOCHS ?= 200
faces: venv
	$(PY) prepare_data.py --source $(FACES) --out $(RUNS)/faces/data
	for act in sigmoid relu tanh; do $(PY) train_colorizer.py --data $(RUNS)/faces/data \
	  --out $(RUNS)/faces/activation/$$act --activation $$act; done
	$(PY) train_colorizer.py --data $(RUNS)/faces/data --out $(RUNS)/faces/quality/unet8 --arch unet \
	  --base-channels 8 --depth 4 --lr 0.002 --epochs 12
	$(PY) train_colorizer.py --data $(RUNS)/faces/data --out $(RUNS)/faces/quality/seed_classify --head classify
	$(PY) train_regressor.py --data $(RUNS)/faces/data --out $(RUNS)/faces/regressor --epochs $(REGRESSOR_EPOCHS)

# the README's results tables and figures, from the runs `make faces` trained
results: venv
	$(PY) evaluate.py --data $(RUNS)/faces/data --runs $(RUNS)/faces/activation \
	  --regressor $(RUNS)/faces/regressor/best.pt --out docs/results/activation
	$(PY) evaluate.py --data $(RUNS)/faces/data --colorizer $(RUNS)/faces/activation/sigmoid/best.pt \
	  --runs $(RUNS)/faces/quality --out docs/results/quality

bench: venv
	$(PY) benchmarks/bench.py

slurm-start:
	sudo bash slurm/local_cluster.sh start

clean:
	rm -rf $(RUNS)/demo .pytest_cache
