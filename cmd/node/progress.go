package main

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newProgress returns a byte progress bar on stderr when it is a terminal,
// and nil (no output) otherwise.
func newProgress(desc string, total int64) *progressbar.ProgressBar {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)
}

// progressFunc adapts a bar to a "done, total" callback; nil-safe.
func progressFunc(desc string) (func(done, total int64), func()) {
	var bar *progressbar.ProgressBar
	update := func(done, total int64) {
		if bar == nil {
			if bar = newProgress(desc, total); bar == nil {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(io.Discard))
			}
		}
		bar.Set64(done)
	}
	finish := func() {
		if bar != nil {
			bar.Finish()
		}
	}
	return update, finish
}
