# dinocurate: every target creates or reuses .venv and installs what it needs.
# Stage inputs are variables (SHARDS, IMAGES, OUT, FEATURES, INDEX, QUERY, QUERIES, POOL, SELECTION, EXECUTOR);
# FEATURES roots are read-only to a stage given OUT: index, knn, dedup, curate and evaluate then write OUT/<stage>/.
# every other option goes through ARGS, e.g.  make extract SHARDS='d/train-{000000..000009}.tar' ARGS='--resolution 224'

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build for this machine (CPU here; these CUDA wheels also run on the CPU). CUDA / CPU-only /
# Ascend users: see docs/install.md, e.g. make test TORCH='torch==2.9.1 torchvision==0.24.1'
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

.PHONY: help venv lint test test-slow demo extract pack bench parity device-check docs perf-page index search serve knn dedup apply curate export export-npy evaluate report pca clean
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

# The stage inputs are taken as written (a `$` stays a `$`) and each reaches python as one argument, quoted by
# $(call q,...): quotes, `$`, spaces, newlines and non-ASCII pass through unchanged (COMPARE: one argument per
# space-separated path). ARGS stays a shell word list. $NEWLINE stands in for a newline, which ends a recipe line.
WHEELS ?=
INPUTS := WHEELS OUT SHARDS EXECUTOR IMAGES UNDO SEARCH LABELS COMPARE QUERIES POOL SELECTION FEATURES INDEX QUERY K
$(foreach v,$(INPUTS),$(eval override $(v) := $$(value $(v))))
define newline


endef
export NEWLINE := $(newline)
q = '$(subst $(newline),'"$$NEWLINE"',$(subst ','\'',$(1)))'

help:
	@echo "make test                      run the test suite (creates .venv on first use)"
	@echo "make lint                      ruff over the code (configured in pyproject.toml)"
	@echo "make demo [OUT=..]             pack a few real photos into shards and extract their features (default: ~/.cache/dinocurate/demo)"
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
	@echo "make pca IMAGES=DIR OUT=..     the DINOv2 picture: patch PCA as RGB + foreground mask per image"
	@echo "make bench                     images/s vs the machine's limit: backbone sweep, end-to-end, naive loop, fast paths"
	@echo "make docs                      the docs site (MkDocs, --strict: a broken link fails) → site/"
	@echo "make perf-page                 docs/PERFORMANCE.md from benchmarks/results/*.json"
	@echo "make parity                    PASS/FAIL: fused vs unfused attention, fp16 storage, bf16 (, device)"
	@echo "make device-check [WHEELS=DIR] one JSON of this GPU's speed, parity, memory, index (ARGS='--cpu': in seconds)"

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
	$(PY) -m jobs.demo $(if $(OUT),--out $(call q,$(OUT))) $(ARGS)

extract: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(SHARDS)$(IMAGES)) -a -n $(call q,$(OUT)) || { echo "usage: make extract SHARDS='data/train-{000000..000009}.tar' OUT=out/train [ARGS='...']  (or IMAGES=DIR; ARGS=--help lists the options)"; exit 2; }
	$(PY) -m jobs.extract $(if $(HELP),--help,$(if $(SHARDS),--shards $(call q,$(SHARDS))) $(if $(IMAGES),--images $(call q,$(IMAGES))) --out $(call q,$(OUT)) $(if $(EXECUTOR),--executor $(call q,$(EXECUTOR))) $(ARGS))

pack: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(IMAGES)) -a -n $(call q,$(OUT)) || { echo "usage: make pack IMAGES=DIR OUT=shards/ [ARGS='--shard-size 1000']"; exit 2; }
	$(PY) -m jobs.pack $(if $(HELP),--help,--images $(call q,$(IMAGES)) --out $(call q,$(OUT)) $(ARGS))

index: $(STAMP)
	@test -n $(call q,$(HELP)$(FEATURES)) || { echo "usage: make index FEATURES=out/train [ARGS='--factory IVF4096,PQ32x4fs']"; exit 2; }
	$(PY) -m jobs.index $(if $(HELP),--help,--features $(call q,$(FEATURES))$(if $(OUT), --out $(call q,$(OUT)/index)) $(ARGS))

search: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(INDEX)) -a -n $(call q,$(QUERY)) || { echo "usage: make search INDEX=out/train/index QUERY=photo.jpg K=10"; exit 2; }
	$(PY) -m jobs.search $(if $(HELP),--help,--index $(call q,$(INDEX)) --query $(call q,$(QUERY)) --k $(call q,$(K)) $(ARGS))

serve: $(STAMP)
	@test -n $(call q,$(HELP)$(INDEX)) || { echo "usage: make serve INDEX=out/train/index [ARGS='--port 8000 --reviewer alice']"; exit 2; }
	$(PY) -m jobs.serve $(if $(HELP),--help,--index $(call q,$(INDEX)) $(ARGS))

knn: $(STAMP)
	@test -n $(call q,$(HELP)$(FEATURES)) || { echo "usage: make knn FEATURES=out/train [ARGS='--k 64']"; exit 2; }
	$(PY) -m jobs.knn $(if $(HELP),--help,--features $(call q,$(FEATURES))$(if $(OUT), --out $(call q,$(OUT)/knn)) $(ARGS))

dedup: $(STAMP)
	@test -n $(call q,$(HELP)$(FEATURES)) -o -n $(call q,$(IMAGES)) -a -n $(call q,$(OUT)) || { echo "usage: make dedup FEATURES=out/train | make dedup IMAGES=DIR OUT=out/dir [ARGS='--weights random']"; exit 2; }
	$(PY) -m jobs.dedup $(if $(HELP),--help,$(if $(FEATURES),--features $(call q,$(FEATURES))) $(if $(IMAGES),--images $(call q,$(IMAGES)))$(if $(OUT), --out $(call q,$(OUT))) $(ARGS))

apply: $(STAMP)
	@test -n $(call q,$(HELP)$(OUT)$(UNDO)) || { echo "usage: make apply OUT=out/photos [ARGS='--yes']  (dry run without --yes; ARGS='--move-to DIR' or '--link-keepers DIR') | make apply UNDO=out/photos/apply/manifest-....parquet"; exit 2; }
	$(PY) -m jobs.apply $(if $(HELP),--help,$(if $(UNDO),--undo $(call q,$(UNDO)),--out $(call q,$(OUT))) $(ARGS))

curate: $(STAMP)
	@test -n $(call q,$(HELP)$(POOL)$(FEATURES)) || { echo "usage: make curate POOL=out/pool QUERIES=name=out/seeds[,name2=...] | make curate POOL=out/pool ARGS='--balanced 100000'  (FEATURES=emb.npy stands for POOL)"; exit 2; }
	$(PY) -m jobs.curate $(if $(HELP),--help,--pool $(call q,$(or $(POOL),$(FEATURES))) $(if $(QUERIES),--queries $(call q,$(QUERIES)))$(if $(OUT), --out $(call q,$(OUT)/curate)) $(ARGS))

# FEATURES as OUT/emb.npy (N×D, L2-normalised rows) + OUT/keys.parquet, for other tools (ARGS='--dtype float16')
export-npy: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(FEATURES)) -a -n $(call q,$(OUT)) || { echo "usage: make export-npy FEATURES=out/train OUT=emb/ [ARGS='--feature concat --dtype float16']"; exit 2; }
	$(PY) -m jobs.export_npy $(if $(HELP),--help,--features $(call q,$(FEATURES)) --out $(call q,$(OUT)) $(ARGS))

export: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(SELECTION)) -a -n $(call q,$(OUT)) || { echo "usage: make export SELECTION=out/pool/curate/selected.parquet OUT=curated/"; exit 2; }
	$(PY) -m jobs.export $(if $(HELP),--help,--selection $(call q,$(SELECTION)) --out $(call q,$(OUT)) $(ARGS))

evaluate: $(STAMP)
	@test -n $(call q,$(HELP)$(FEATURES)$(COMPARE)) || { echo "usage: make evaluate FEATURES=out/photos [LABELS=labels.csv] | make evaluate COMPARE='out/a out/b' [ARGS='--feature cls,concat']"; exit 2; }
	$(PY) -m jobs.evaluate $(if $(HELP),--help,$(if $(COMPARE),--compare $(foreach p,$(COMPARE),$(call q,$(p))),--features $(call q,$(FEATURES))) $(if $(LABELS),--labels $(call q,$(LABELS)))$(if $(OUT), --out $(call q,$(OUT)/eval)) $(ARGS))

report: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(OUT)) || { echo "usage: make report OUT=out/train [SEARCH=neighbours.parquet] [ARGS='--groups-per-page 50']"; exit 2; }
	$(PY) -m jobs.report $(if $(HELP),--help,--out $(call q,$(OUT)) $(if $(SEARCH),--search $(call q,$(SEARCH))) $(ARGS))

pca: $(STAMP)
	@test -n $(call q,$(HELP)) -o -n $(call q,$(IMAGES)) -a -n $(call q,$(OUT)) || { echo "usage: make pca IMAGES=DIR OUT=pca/ [ARGS='--weights PATH --resolution 448']"; exit 2; }
	$(PY) -m jobs.pca $(if $(HELP),--help,--images $(call q,$(IMAGES)) --out $(call q,$(OUT)) $(ARGS))

bench: $(STAMP)
	$(PY) -m jobs.bench $(ARGS)

parity: $(STAMP)
	$(PY) -m jobs.parity $(ARGS)

# a bare GPU machine has no .venv: its python3 (torch, timm, ... installed) runs the check, WHEELS=DIR the rest
DEVICE_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
device-check:
	$(DEVICE_PY) benchmarks/device_check.py $(if $(OUT),--out $(call q,$(OUT))) $(if $(WHEELS),--wheels $(call q,$(WHEELS))) $(ARGS)

# the docs site; mkdocs comes with the dev extras ($(STAMP)); --strict turns a broken link or anchor into an error
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

# docs/PERFORMANCE.md is generated: edit benchmarks/results/*.json (make bench ARGS='--record ...'), then this
perf-page: $(STAMP)
	$(PY) -m jobs.perf_page

clean:
	rm -rf demo_out bench_out pca_out test-artifacts .pytest_cache site
