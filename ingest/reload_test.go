package ingest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReloadKeys: a valid keys file replaces the keys in use at once; an
// invalid one is refused and the keys in use stay.
func TestReloadKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	oldKey, oldLine, _ := NewAPIKey("old", []string{ScopeOrdersRead})
	newKey, newLine, _ := NewAPIKey("new", []string{ScopeOrdersRead})
	write(oldLine + "\n")
	h := newHarness(t, options{cfg: Config{APIKeysFile: path}})
	// 404 (no such SKU) once authenticated, 401 otherwise.
	get := func(key string) int {
		return h.do("GET", "/v1/inventory/A", "", "", "Authorization", "Bearer "+key).status
	}
	if got := get(oldKey); got != 404 {
		t.Fatalf("old key before the reload: got %d, want 404", got)
	}

	write(newLine + "\n")
	if err := h.edge.ReloadKeys(); err != nil {
		t.Fatalf("reload a valid file: %v", err)
	}
	if got, want := []int{get(oldKey), get(newKey)}, []int{401, 404}; got[0] != want[0] || got[1] != want[1] {
		t.Errorf("after the reload: old key %d, new key %d, want %d and %d", got[0], got[1], want[0], want[1])
	}

	write("this is not a keys file\n")
	if err := h.edge.ReloadKeys(); err == nil {
		t.Errorf("reload an invalid file: got nil, want an error")
	}
	if got := get(newKey); got != 404 {
		t.Errorf("after a refused reload: the key in use got %d, want 404", got)
	}
}
