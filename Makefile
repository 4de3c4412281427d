# int8 NPU generator: the two everyday commands are `make sim` and `make test`.
# Each bootstraps .venv with the pinned packages of requirements.lock on first use.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The project's one command (npu/cli.py); `npu --help` lists its subcommands.
NPU    := $(VENV)/bin/npu
STAMP  := $(VENV)/.installed

# Configuration knobs (see README "Configuration").
ROWS   ?= 8
COLS   ?= 8
SIM    ?= verilator
SEED   ?= 1
JOBS   ?= auto
# Number of random GEMMs in `make regress`, and instruction words its fuzzer of npu_top
# generates (per seed).
N      ?= 1000
FUZZ_WORDS ?= 10000
# `make synth` / `make synth-ice40`: design name of hw/verilog.py DESIGNS (the accelerator top
# `npu` by default; `gemm` is the array alone), nextpnr target (MHz), iCE40 UP5K design and
# array size (8 SB_MAC16: 2x4 or 4x2); nextpnr router (router1, or router2: often faster on
# the congested npu top); `make scaling`: square array sizes.
DESIGN ?= npu
ICE_DESIGN ?= gemm
FREQ   ?= 150
ROUTER ?= router1
ICE_ROWS ?= 2
ICE_COLS ?= 4
ICE_FREQ ?= 50
SIZES  ?= 4,8,16,32

.PHONY: all sim sim-all sim-gemm onnx bench test regress verilog stat synth synth-ice40 depth scaling report model clean distclean venv

all: test

$(STAMP): requirements.lock pyproject.toml
	@echo "== bootstrapping $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@($(PY) -m pip install -r requirements.lock && \
	  $(PY) -m pip install --no-deps --no-build-isolation -e .) > $(VENV)/install.log 2>&1 \
	  || (tail -40 $(VENV)/install.log; echo "pip install failed; see $(VENV)/install.log"; exit 1)
	@touch $@

venv: $(STAMP)

# Images and batch of `make sim` / `make sim-all`.
IMAGES ?= 0:64
BATCH  ?= 8

# The main job: the reference CNN on the generated RTL of npu_top, every image checked bit for
# bit against the golden integer inference; accuracy, cycles, PE utilization per layer.
sim: $(STAMP)
	$(NPU) run --images $(IMAGES) --batch $(BATCH) --sim $(SIM) \
	    --rows $(ROWS) --cols $(COLS) --seed $(SEED)

# All 359 test images of the reference CNN through the RTL.
sim-all: $(STAMP)
	$(NPU) run --images 0:359 --batch $(BATCH) --sim $(SIM) \
	    --rows $(ROWS) --cols $(COLS) --seed $(SEED) --progress

# The GEMM engine alone (npu_gemm): CNN-shaped GEMMs and random GEMMs under backpressure.
sim-gemm: $(STAMP)
	$(NPU) sim-gemm --rows $(ROWS) --cols $(COLS) --sim $(SIM) --seed $(SEED)

# The test suite (fast subset of every regression); runs both simulators, Icarus tests skip
# with a message when iverilog is missing.
test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

# Long random sweep, in parallel across cores, JUnit XML in build/regress.xml: random GEMMs,
# and the instruction fuzzer of npu_top (tests/test_sim_fuzz.py; its counts in the log).
regress: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q -rA -m regress --regress-seed $(SEED) --regress-count $(N) \
	    --fuzz-words $(FUZZ_WORDS) --junitxml=build/regress.xml tests/test_regress.py \
	    tests/test_sim_fuzz.py
	$(NPU) junit-summary build/regress.xml

# One Verilog file with a stable top-level name, for FPGA/ASIC toolchains: the accelerator
# (npu_top) and the GEMM engine alone (npu_gemm).
verilog: $(STAMP)
	$(NPU) verilog npu --rows $(ROWS) --cols $(COLS) -o build/npu_top_$(ROWS)x$(COLS).v
	$(NPU) verilog gemm --rows $(ROWS) --cols $(COLS) -o build/npu_gemm_$(ROWS)x$(COLS).v

# Yosys generic synthesis statistics of the GEMM top.
stat: $(STAMP)
	$(NPU) stat gemm --rows $(ROWS) --cols $(COLS)

# Synthesis + place-and-route for a Lattice ECP5-85F (Yosys synth_ecp5, nextpnr-ecp5, from PyPI):
# LUT/FF/DSP/RAM use and post-route Fmax; table printed, JSON in build/synth/. The default top
# (npu_top 8x8) takes about 40 minutes here, most of it nextpnr; DESIGN=gemm about 2.
synth: $(STAMP)
	$(NPU) synth $(DESIGN) --rows $(ROWS) --cols $(COLS) --arch ecp5 --freq $(FREQ) --router $(ROUTER)

# The same for an iCE40 UP5K (synth_ice40 -dsp, nextpnr-ice40), small configuration.
synth-ice40: $(STAMP)
	$(NPU) synth $(ICE_DESIGN) --rows $(ICE_ROWS) --cols $(ICE_COLS) --arch ice40 --freq $(ICE_FREQ)

# The deepest paths after synth_ecp5 by a rough delay model (minutes, no place-and-route).
depth: $(STAMP)
	$(NPU) depth $(DESIGN) --rows $(ROWS) --cols $(COLS)

# Scaling table of the GEMM array (resources, Fmax, generation/build time, simulation speed):
# build/scaling/scaling.{json,md}. Long: runs P&R and Verilator/Icarus builds per size.
scaling: $(STAMP)
	$(NPU) scaling --sizes $(SIZES)

# Performance report: reference CNN cycles at batch 1 and batch R on the RTL, utilization per
# layer, cycle model vs counters, wall time, Fmax of the last `make synth`; docs/bench/.
bench: $(STAMP)
	$(NPU) bench --rows $(ROWS) --cols $(COLS)

# onnxruntime as an independent oracle: float and QDQ exports of the reference CNN compared with
# the float model and the golden integer inference (exact fraction, max LSB difference, top-1).
onnx: $(STAMP)
	$(NPU) onnx --compare

# Accuracy of the reference CNN (float vs int8 golden) and its size / MACs per layer.
report: $(STAMP)
	$(NPU) report

# Re-create the committed data split, float weights and int8 model (needs scikit-learn,
# installed on demand into .venv; the tests and `make sim` never train).
model: $(STAMP)
	$(PY) -m pip install --quiet "scikit-learn==1.9.1"
	$(PY) -m golden.digits
	$(PY) -m golden.train
	$(PY) -m golden.ptq

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
