# dinocurate: every target creates or reuses .venv and installs what it needs.
# Stage inputs are variables (SHARDS, IMAGES, OUT, FEATURES, INDEX, QUERY, QUERIES, POOL, SELECTION, EXECUTOR);
# FEATURES roots are read-only to a stage given OUT: index, knn, dedup, curate and evaluate then write OUT/<stage>/.
# every other option goes through ARGS, e.g.  make extract SHARDS='d/train-{000000..000009}.tar' ARGS='--resolution 224'

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build for this machine (CPU here; these CUDA wheels also run on the CPU). CUDA / CPU-only /
# Ascend users: see README "Installing for your hardware", e.g. make test TORCH='torch==2.9.1 torchvision==0.24.1'
TORCH ?= torch==2.14.1 torchvision==0.29.1
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.installed

OUT ?=
# ARGS='--help' (or -h) shows a stage's options without its required variables
HELP := $(filter --help -h,$(ARGS))
SHARDS ?=
EXECUTOR ?=
IMAGES ?=
ARGS ?=
UNDO ?=

.PHONY: help venv lint test test-slow demo extract pack bench parity index search serve knn dedup apply curate export export-npy evaluate report pca clean
SEARCH ?=
LABELS ?=
COMPARE ?=
QUERIES ?=
POOL ?=
SELECTION ?=
FEATURES ?=
INDEX ?=
QUERY ?=
K ?= 10

help:
	@echo "make test                      run the test suite (creates .venv on first use)"
	@echo "make lint                      ruff over the code (configured in pyproject.toml)"
	@echo "make demo                      pack a few real photos into shards and extract their features"
	@echo "make extract SHARDS=... OUT=.. features of webdataset shards (or IMAGES=DIR); ARGS='--help' lists options"
	@echo "make pack IMAGES=DIR OUT=...   write an image folder as webdataset shards"
	@echo "make index FEATURES=OUT        Faiss index over extracted features (OUT=DIR: into DIR/index, not FEATURES)"
	@echo "make search INDEX=.. QUERY=..  nearest indexed images of an image, folder, shards or features"
	@echo "make serve INDEX=..            local search + dedup review server on 127.0.0.1:8000 (pages, JSON API)"
	@echo "make dedup IMAGES=DIR OUT=..   find copies in a folder: writes OUT/duplicates.csv (deletes nothing)"
	@echo "make apply OUT=..              act on a folder's dedup: move duplicates aside (dry run; ARGS='--yes'), UNDO=manifest"
	@echo "make curate POOL=.. QUERIES=.. LVD-142M retrieval from a pool near seed sets (or ARGS='--balanced N')"
	@echo "make export SELECTION=.. OUT=  selected samples as new webdataset shards"
	@echo "make export-npy FEATURES=.. OUT=  features as emb.npy + keys.parquet (every stage takes FEATURES=emb.npy back)"
	@echo "make evaluate FEATURES=OUT     k-NN + linear-probe accuracy (folders as classes, or LABELS=key,label[,split] file)"
	@echo "make report OUT=out/x          HTML report: dedup groups + threshold histogram, curate, extract (SEARCH=results.parquet)"
	@echo "make pca IMAGES=DIR [OUT=..]   the DINOv2 picture: patch PCA as RGB + foreground mask per image"
	@echo "make bench                     images/s vs the machine's limit: backbone sweep, end-to-end, naive loop, fast paths"
	@echo "make parity                    PASS/FAIL: fused vs unfused attention, fp16 storage, bf16 (, device)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_TORCH_ARGS) $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

demo: $(STAMP)
	$(PY) -m jobs.demo --out '$(or $(OUT),demo_out)' $(ARGS)

extract: $(STAMP)
	@test -n "$(HELP)" -o -n "$(SHARDS)$(IMAGES)" -a -n "$(OUT)" || { echo "usage: make extract SHARDS='data/train-{000000..000009}.tar' OUT=out/train [ARGS='...']  (or IMAGES=DIR; ARGS=--help lists the options)"; exit 2; }
	$(PY) -m jobs.extract $(if $(HELP),--help,$(if $(SHARDS),--shards '$(SHARDS)') $(if $(IMAGES),--images '$(IMAGES)') --out '$(OUT)' $(if $(EXECUTOR),--executor $(EXECUTOR)) $(ARGS))

pack: $(STAMP)
	@test -n "$(HELP)" -o -n "$(IMAGES)" -a -n "$(OUT)" || { echo "usage: make pack IMAGES=DIR OUT=shards/ [ARGS='--shard-size 1000']"; exit 2; }
	$(PY) -m jobs.pack $(if $(HELP),--help,--images '$(IMAGES)' --out '$(OUT)' $(ARGS))

index: $(STAMP)
	@test -n "$(HELP)$(FEATURES)" || { echo "usage: make index FEATURES=out/train [ARGS='--factory IVF4096,PQ32x4fs']"; exit 2; }
	$(PY) -m jobs.index $(if $(HELP),--help,--features '$(FEATURES)'$(if $(OUT), --out '$(OUT)/index') $(ARGS))

search: $(STAMP)
	@test -n "$(HELP)" -o -n "$(INDEX)" -a -n "$(QUERY)" || { echo "usage: make search INDEX=out/train/index QUERY=photo.jpg K=10"; exit 2; }
	$(PY) -m jobs.search $(if $(HELP),--help,--index '$(INDEX)' --query '$(QUERY)' --k $(K) $(ARGS))

serve: $(STAMP)
	@test -n "$(HELP)$(INDEX)" || { echo "usage: make serve INDEX=out/train/index [ARGS='--port 8000 --reviewer alice']"; exit 2; }
	$(PY) -m jobs.serve $(if $(HELP),--help,--index '$(INDEX)' $(ARGS))

knn: $(STAMP)
	@test -n "$(HELP)$(FEATURES)" || { echo "usage: make knn FEATURES=out/train [ARGS='--k 64']"; exit 2; }
	$(PY) -m jobs.knn $(if $(HELP),--help,--features '$(FEATURES)'$(if $(OUT), --out '$(OUT)/knn') $(ARGS))

dedup: $(STAMP)
	@test -n "$(HELP)$(FEATURES)" -o -n "$(IMAGES)" -a -n "$(OUT)" || { echo "usage: make dedup FEATURES=out/train | make dedup IMAGES=DIR OUT=out/dir [ARGS='--weights random']"; exit 2; }
	$(PY) -m jobs.dedup $(if $(HELP),--help,$(if $(FEATURES),--features '$(FEATURES)') $(if $(IMAGES),--images '$(IMAGES)')$(if $(OUT), --out '$(OUT)') $(ARGS))

apply: $(STAMP)
	@test -n "$(HELP)$(OUT)$(UNDO)" || { echo "usage: make apply OUT=out/photos [ARGS='--yes']  (dry run without --yes; ARGS='--move-to DIR' or '--link-keepers DIR') | make apply UNDO=out/photos/apply/manifest-....parquet"; exit 2; }
	$(PY) -m jobs.apply $(if $(HELP),--help,$(if $(UNDO),--undo '$(UNDO)',--out '$(OUT)') $(ARGS))

curate: $(STAMP)
	@test -n "$(HELP)$(POOL)$(FEATURES)" || { echo "usage: make curate POOL=out/pool QUERIES=name=out/seeds[,name2=...] | make curate POOL=out/pool ARGS='--balanced 100000'  (FEATURES=emb.npy stands for POOL)"; exit 2; }
	$(PY) -m jobs.curate $(if $(HELP),--help,--pool '$(or $(POOL),$(FEATURES))' $(if $(QUERIES),--queries '$(QUERIES)')$(if $(OUT), --out '$(OUT)/curate') $(ARGS))

# FEATURES as OUT/emb.npy (N×D, L2-normalised rows) + OUT/keys.parquet, for other tools (ARGS='--dtype float16')
export-npy: $(STAMP)
	@test -n "$(HELP)" -o -n "$(FEATURES)" -a -n "$(OUT)" || { echo "usage: make export-npy FEATURES=out/train OUT=emb/ [ARGS='--feature concat --dtype float16']"; exit 2; }
	$(PY) -m jobs.export_npy $(if $(HELP),--help,--features '$(FEATURES)' --out '$(OUT)' $(ARGS))

export: $(STAMP)
	@test -n "$(HELP)" -o -n "$(SELECTION)" -a -n "$(OUT)" || { echo "usage: make export SELECTION=out/pool/curate/selected.parquet OUT=curated/"; exit 2; }
	$(PY) -m jobs.export $(if $(HELP),--help,--selection '$(SELECTION)' --out '$(OUT)' $(ARGS))

evaluate: $(STAMP)
	@test -n "$(HELP)$(FEATURES)$(COMPARE)" || { echo "usage: make evaluate FEATURES=out/photos [LABELS=labels.csv] | make evaluate COMPARE='out/a out/b' [ARGS='--feature cls,concat']"; exit 2; }
	$(PY) -m jobs.evaluate $(if $(HELP),--help,$(if $(COMPARE),--compare $(COMPARE),--features '$(FEATURES)') $(if $(LABELS),--labels '$(LABELS)')$(if $(OUT), --out '$(OUT)/eval') $(ARGS))

report: $(STAMP)
	@test -n "$(HELP)" -o -n "$(OUT)" -a -d "$(OUT)" || { echo "usage: make report OUT=out/train [SEARCH=neighbours.parquet] [ARGS='--groups-per-page 50']"; exit 2; }
	$(PY) -m jobs.report $(if $(HELP),--help,--out '$(OUT)' $(if $(SEARCH),--search '$(SEARCH)') $(ARGS))

pca: $(STAMP)
	@test -n "$(HELP)$(IMAGES)" || { echo "usage: make pca IMAGES=DIR [OUT=pca_out] [ARGS='--weights PATH --resolution 448']"; exit 2; }
	$(PY) -m jobs.pca $(if $(HELP),--help,--images '$(IMAGES)' --out '$(or $(OUT),pca_out)' $(ARGS))

bench: $(STAMP)
	$(PY) -m jobs.bench $(ARGS)

parity: $(STAMP)
	$(PY) -m jobs.parity $(ARGS)

clean:
	rm -rf demo_out bench_out pca_out test-artifacts .pytest_cache
