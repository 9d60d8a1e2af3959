//go:build !linux

package swarmbench

import (
	"context"
	"errors"
)

// runLink needs Linux: network namespaces, veth pairs and tc.
func runLink(context.Context, *runEnv) error {
	return errors.New("--link needs Linux (network namespaces and tc): use --sim elsewhere")
}
