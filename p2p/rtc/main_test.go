//go:build !js

package rtc

import (
	"os"
	"testing"
)

var tempDir string

func testTemp() (string, error) { return tempDir, nil }

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "rtc-test-")
	if err != nil {
		panic(err)
	}
	tempDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}
