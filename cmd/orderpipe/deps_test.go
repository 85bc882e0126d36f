package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestCodeInBinary checks that no package of orderpipe's in the
// binary imports testing: test helpers live in packages only tests import.
// Goka v1.1.16 is the one exception we cannot fix from here: it ships its
// mocks (mockbuilder.go, mockautoconsumers.go, storage/test.go) in its main
// packages, so its packages are allowed and named, and any other importer
// fails the test.
func TestNoTestCodeInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{"github.com/lovoo/goka": true, "github.com/lovoo/goka/storage": true}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if imp == "testing" && !allowed[f[0]] {
				t.Errorf("%s imports testing and is linked into bin/orderpipe", f[0])
			}
		}
	}
}
