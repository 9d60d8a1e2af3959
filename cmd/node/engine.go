package main

import (
	"errors"
	"io"
	"time"

	"github.com/doppler-llm/doppler/swarm"
)

// The GPU engine (packages engine and kernels) needs cgo: wgpu-native is a
// C library. engine_cgo.go is the one place the binary touches it: it
// loads models for run, bench inference and the API, and binds the engine
// to the swarm's interfaces (swarm.PrefillLoader and PrefillSession for
// prefill offload, ExpertTracker's hooks for expert read-ahead). A build
// without cgo (CGO_ENABLED=0: a seed or signaling server on a machine
// without a GPU) gets engine_nocgo.go instead, whose functions of the same
// names fail with errNoGPU. Both files define the functions below on the
// types of this file, and nothing else in cmd/node imports engine or
// kernels:
//
//	engineAvailable() error
//	defaultSampling() sampling
//	(sampling) validate() error
//	generate(ctx, *modelSource, *runFlags, genRequest) (*genResult, error)
//	benchRuns(ctx, *modelSource, *runFlags, benchOptions) (*benchRun, error)
//	prefillLoader(adapter string) (swarm.PrefillLoader, func(), error)
//	newEngineAPI(apiFlags) (*apiHost, error)
//	terminalChat(ctx, *modelSource, *runFlags, chatOptions) error

// errNoGPU is what a command that needs the GPU engine answers in a build
// without it: main prints it as the one line of the failure.
var errNoGPU = errors.New("this build has no GPU engine (built with CGO_ENABLED=0); build with cgo for run and bench inference")

// sampling is run's sampling flags: engine.SampleOptions, field for field.
type sampling struct {
	Temp       float64
	TopK       int     // 0 = off
	TopP       float64 // 0 or 1 = off
	MinP       float64 // 0 = off
	RepPenalty float64 // 0 or 1 = off
	RepLastN   int     // tokens the penalty looks back over; 0 = 64
	Seed       uint64
}

// genRequest is one generation of run.
type genRequest struct {
	ids       []int // the prompt
	maxTokens int   // 0: load the model, generate nothing
	sample    sampling
	ignoreEOS bool     // generate past end-of-generation tokens
	stops     []string // end before the first of these texts
	// onText receives the text as it is generated (engine.GenerateText);
	// a model without a tokenizer generates tokens only.
	onText func(text string) error
	// offload is the prefill-offload policy (Mode off: none); it needs
	// the swarm node of the model source.
	offload swarm.OffloadPolicy
}

// genResult is what a generation produced.
type genResult struct {
	tokens  []int
	text    string // up to the first stop string
	reason  string // "length", "eos", "stop" or "interrupted"
	stats   genStats
	offload *swarm.OffloadResult // nil when no offload was tried
}

// genStats are one generation's timings and counters.
type genStats struct {
	prefill       time.Duration // prompt processing, up to the first token
	tokenLatency  []time.Duration
	submits       uint64 // GPU submits during decode
	dispatches    uint64 // compute dispatches during decode
	readbackBytes uint64 // bytes read back during decode
	paging        pagingStats
}

// pagingStats count what expert paging did.
type pagingStats struct {
	hits, misses, bytesPaged uint64
	stall                    time.Duration
}

// decodeRate is the decode speed in tokens/s (0 when nothing was decoded).
func (s genStats) decodeRate() float64 {
	var total float64
	for _, d := range s.tokenLatency {
		total += d.Seconds()
	}
	if total == 0 {
		return 0
	}
	return float64(len(s.tokenLatency)) / total
}

// benchOptions is one bench inference run.
type benchOptions struct {
	prompts       [][]int // one prompt per size
	gen           int     // tokens generated per run
	warmup, runs  int     // runs per prompt, not measured and measured
	allowSoftware bool    // run on a software (CPU) adapter too
	batch         int     // > 1: sequences decoding together (bench inference --batch)
}

// benchRun is what bench inference measured.
type benchRun struct {
	adapter, backend, adapterType string
	software                      bool
	features, adapterFeatures     []string     // the device's optional features on; all the adapter offers
	gpuBytes, weightBytes         uint64       // allocated on the GPU at the end; the model's weights
	peakBytes, kvBytes            uint64       // the most allocated at once; the session's KV cache
	context                       int          // the session's KV cache length
	stats                         [][]genStats // per prompt, the measured runs
	aggregate                     []float64    // per prompt, with batch > 1: decoded tok/s of all sequences
}

// chatOptions is the terminal chat of run: what the flags say about it.
type chatOptions struct {
	system    string
	sample    sampling
	maxTokens int // per answer; 0: until the model ends it or the context is full
	in        io.Reader
	out       io.Writer
}
