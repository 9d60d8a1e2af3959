package swarmbench

import (
	"context"
	"errors"
	"os"
)

// runLink is a stand-in until link mode lands (link.go, link_other.go);
// the commit that adds them deletes this file.
func runLink(context.Context, *runEnv) error {
	if os.Geteuid() != 0 {
		return errNoRoot
	}
	return errors.New("link mode: not built yet")
}
