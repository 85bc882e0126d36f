package rulestest_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyTestsImport walks processors, the only tree the internal rule lets
// import rulestest, and fails on a non-test file that does.
func TestOnlyTestsImport(t *testing.T) {
	const self = "github.com/orderpipe/orderpipe/processors/internal/rulestest"
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == self {
				t.Errorf("%s: got an import of rulestest in non-test code, want none", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk processors: %v", err)
	}
}
