//go:build !cgo

package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doppler-llm/doppler/swarm"
)

// The engine wiring of a build without cgo, hence without the GPU engine
// (engine.go says what it is for): every function fails with errNoGPU.

// engineAvailable reports that this build has no GPU engine.
func engineAvailable() error { return errNoGPU }

// defaultSampling is the zero sampling: run stops at engineAvailable
// before it reads its flags.
func defaultSampling() sampling { return sampling{} }

func (sampling) validate() error { return errNoGPU }

func generate(context.Context, *modelSource, *runFlags, genRequest) (*genResult, error) {
	return nil, errNoGPU
}

func benchRuns(context.Context, *modelSource, *runFlags, benchOptions) (*benchRun, error) {
	return nil, errNoGPU
}

func prefillLoader(string) (swarm.PrefillLoader, func(), error) { return nil, nil, errNoGPU }

func newEngineAPI(apiFlags, *prometheus.Registry) (*apiHost, error) { return nil, errNoGPU }

func terminalChat(context.Context, *modelSource, *runFlags, chatOptions) error { return errNoGPU }
