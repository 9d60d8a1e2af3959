# DOPPLER — build, run and test.
GO      ?= go
MODEL   ?= ../shared/models/stories260K.gguf
BIN     := ./doppler
FUZZTIME ?= 5s

.PHONY: build run test fmt-check vet fuzz

build:
	CGO_ENABLED=1 $(GO) build -o $(BIN) ./cmd/node

# The main job: package the default model as RDRR, inspect and verify it.
run: build
	rm -rf .cache/run-model
	$(BIN) convert $(MODEL) -o .cache/run-model
	$(BIN) inspect .cache/run-model
	$(BIN) verify .cache/run-model

# Everything CI checks: formatting, vet, the unit/golden/GPU tests, fuzzing.
test: fmt-check vet
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
