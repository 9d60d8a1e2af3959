# DOPPLER — build, run and test.
# bash with pipefail: `go test | tee` fails when go test does.
SHELL   := bash
.SHELLFLAGS := -eu -o pipefail -c

GO      ?= go
MODEL   ?= ../shared/models/stories260K.gguf
BIN     := ./doppler

# Fuzzing: make test (and make fuzz) runs every fuzz target for FUZZTIME;
# make fuzz-long runs the parsers of outside bytes (targets named
# FuzzParse*, FuzzDecode*, FuzzRead*: GGUF, safetensors, manifests, wire
# frames, signaling messages) for FUZZTIME_PARSERS and the rest for
# FUZZTIME (1m unless given). See scripts/fuzz.sh.
FUZZTIME ?= 5s
FUZZTIME_PARSERS ?= 10m
ifeq ($(origin FUZZTIME),file)
fuzz-long: FUZZTIME := 1m
endif

# staticcheck, pinned (2026.2.2: Go 1.26), run from the module proxy.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

PROMPT  ?= Once upon a time

.PHONY: deps build run test go-test fmt-check vet staticcheck fuzz fuzz-long

deps:
	@bash scripts/deps.sh

build: deps
	CGO_ENABLED=1 $(GO) build -o $(BIN) ./cmd/node

HTTP    ?= 127.0.0.1:8080

# The main job: package the default model as RDRR (inspect, verify),
# generate a sample from it on the GPU, then serve it as a node until
# Ctrl-C: the HTTP seed, signaling, WebRTC for browsers and the page at
# http://$(HTTP)/d (the log prints the page's URL with the model ID).
run: build
	rm -rf .cache/run-model
	$(BIN) convert $(MODEL) -o .cache/run-model
	$(BIN) inspect .cache/run-model
	$(BIN) verify .cache/run-model
	$(BIN) run -m .cache/run-model -p "$(PROMPT)" -n 96 --temp 0
	$(BIN) serve .cache/run-model --store .cache/run-store --http $(HTTP)

# Everything CI checks (.ci/run runs exactly this): formatting, vet,
# staticcheck, the unit/golden/GPU/browser tests, every fuzz target for
# FUZZTIME, then how long each package's tests took. Tests that need a
# GPU adapter, Chromium or shared data fail under CI=true when it is
# missing (internal/testenv), they do not skip. -timeout 30m: the kernel
# suite in Chromium (SwiftShader) nears go test's default 10 minutes on a
# loaded 2-core machine; slow is not broken (issue 16).
test: deps fmt-check vet staticcheck
	@mkdir -p .cache
	@start=$$SECONDS; status=0; \
	$(GO) test -count=1 -timeout 30m ./... 2>&1 | tee .cache/test.log || status=$$?; \
	wall=$$((SECONDS - start)); \
	[ $$status -ne 0 ] || GO=$(GO) bash scripts/fuzz.sh $(FUZZTIME) || status=$$?; \
	bash scripts/test-times.sh .cache/test.log $$wall; \
	exit $$status

# The tests alone, without the checks, fuzzing or the summary.
go-test:
	$(GO) test -count=1 -timeout 30m ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# Every fuzz target (found with go test -list), each for FUZZTIME.
fuzz:
	GO=$(GO) bash scripts/fuzz.sh $(FUZZTIME)

# Every fuzz target for long: parsers of outside bytes for
# FUZZTIME_PARSERS (10m), the rest for FUZZTIME (1m): over 3 hours with
# the 21 targets of now (19 parsers), so run it on a spare machine.
fuzz-long:
	GO=$(GO) bash scripts/fuzz.sh $(FUZZTIME) $(FUZZTIME_PARSERS)
