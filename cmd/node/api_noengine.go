//go:build !cgo

package main

func newEngineAPI(apiFlags) (*apiHost, error) { return nil, errNoEngineAPI }
