package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestCodeInBinary checks that no package linked into the binary
// imports testing: test helpers live in packages only tests import, and
// Goka, which ships its mocks in its main packages, is replaced by
// third_party/goka, the same release without them.
func TestNoTestCodeInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if imp == "testing" {
				t.Errorf("%s imports testing and is linked into bin/orderpipe", f[0])
			}
		}
	}
}
