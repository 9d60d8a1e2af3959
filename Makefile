# DOPPLER — build, run and test.
GO      ?= go
MODEL   ?= ../shared/models/stories260K.gguf
BIN     := ./doppler
FUZZTIME ?= 5s

PROMPT  ?= Once upon a time

.PHONY: deps build run test fmt-check vet fuzz

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

# Everything CI checks: formatting, vet, the unit/golden/GPU tests, fuzzing.
test: deps fmt-check vet
	$(GO) test -count=1 ./...
	$(MAKE) fuzz

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./rdrr/gguf
	$(GO) test -run '^$$' -fuzz '^FuzzParseManifest$$' -fuzztime $(FUZZTIME) ./rdrr
