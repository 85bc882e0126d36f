package ingest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// The scopes an API key can grant.
const (
	// ScopeOrdersWrite allows POST /v1/orders and POST /v1/orders:batch.
	ScopeOrdersWrite = "orders:write"
	// ScopeOrdersRead allows GET /v1/orders/{id} (the client's own orders
	// only) and GET /v1/inventory/{sku}.
	ScopeOrdersRead = "orders:read"
	// ScopeInventoryAdmin allows PUT and GET /v1/inventory/{sku}.
	ScopeInventoryAdmin = "inventory:admin"
)

func knownScope(s string) bool {
	return s == ScopeOrdersWrite || s == ScopeOrdersRead || s == ScopeInventoryAdmin
}

// client is an authenticated caller, or with anyScope the anonymous caller
// of an edge without authentication (id "").
type client struct {
	id       string
	scopes   []string
	anyScope bool
}

// allowed reports whether c holds any of scopes.
func (c *client) allowed(scopes []string) bool {
	if c.anyScope {
		return true
	}
	for _, s := range scopes {
		if slices.Contains(c.scopes, s) {
			return true
		}
	}
	return false
}

// apiKey is one line of the keys file: the client and the SHA-256 of its
// key. The key itself is never stored, so the file is not a secret.
type apiKey struct {
	client client
	hash   [sha256.Size]byte
}

// keyring holds the API keys. It never changes: Edge.ReloadKeys swaps in a
// new one.
type keyring struct {
	keys []apiKey
}

// loadKeyring reads the keys file at path.
func loadKeyring(path string) (*keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open api keys file: %w", err)
	}
	defer f.Close()
	kr, err := parseKeyring(f)
	if err != nil {
		return nil, fmt.Errorf("api keys file %s: %w", path, err)
	}
	return kr, nil
}

// clients is the number of distinct clients with a key.
func (kr *keyring) clients() int {
	ids := make(map[string]struct{}, len(kr.keys))
	for _, k := range kr.keys {
		ids[k.client.id] = struct{}{}
	}
	return len(ids)
}

// parseKeyring reads lines "client_id sha256hex scope1,scope2"; blank lines
// and lines starting with # are skipped. Every mistake is an error: a keys
// file that is half understood would lock clients out or let them in by
// accident.
func parseKeyring(r io.Reader) (*keyring, error) {
	kr := &keyring{}
	ids := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("line %d: want \"client_id sha256hex scope1,scope2\", got %d fields", n, len(fields))
		}
		id, sum, scopes := fields[0], fields[1], strings.Split(fields[2], ",")
		if err := checkClientID(id); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if ids[id] {
			return nil, fmt.Errorf("line %d: client %q appears twice", n, id)
		}
		ids[id] = true
		raw, err := hex.DecodeString(sum)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("line %d: the key hash must be 64 hex digits (SHA-256)", n)
		}
		if err := checkScopes(scopes); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		kr.keys = append(kr.keys, apiKey{client: client{id: id, scopes: scopes}, hash: [sha256.Size]byte(raw)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(kr.keys) == 0 {
		return nil, errors.New("no keys: every request would be refused")
	}
	return kr, nil
}

// authenticate returns the client whose key is presented, or nil. It hashes
// the key and compares it with every stored hash in constant time, without
// stopping at a match, so the time taken tells nothing about the keys.
func (kr *keyring) authenticate(presented []byte) *client {
	sum := sha256.Sum256(presented)
	var found *client
	for i := range kr.keys {
		if subtle.ConstantTimeCompare(sum[:], kr.keys[i].hash[:]) == 1 {
			found = &kr.keys[i].client
		}
	}
	return found
}

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive (RFC 9110).
func bearerToken(header []byte) ([]byte, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !bytes.EqualFold(header[:len(scheme)], []byte(scheme)) {
		return nil, false
	}
	token := bytes.TrimSpace(header[len(scheme):])
	return token, len(token) > 0
}

func checkClientID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("client id %q: want 1 to 128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("client id %q: want printable ASCII without spaces", id)
		}
	}
	return nil
}

func checkScopes(scopes []string) error {
	if len(scopes) == 0 {
		return errors.New("no scopes")
	}
	for _, s := range scopes {
		if !knownScope(s) {
			return fmt.Errorf("unknown scope %q (want %s, %s or %s)", s, ScopeOrdersWrite, ScopeOrdersRead, ScopeInventoryAdmin)
		}
	}
	return nil
}

// NewAPIKey creates a key for clientID with scopes. It returns the key, to
// hand to the client once (a random 32-byte value, base64url without
// padding), and the line to append to the keys file, which holds only the
// key's SHA-256:
//
//	client_id sha256hex scope1,scope2
func NewAPIKey(clientID string, scopes []string) (key, line string, err error) {
	if err := checkClientID(clientID); err != nil {
		return "", "", err
	}
	if err := checkScopes(scopes); err != nil {
		return "", "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", fmt.Errorf("read random key: %w", err)
	}
	key = base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(key))
	return key, clientID + " " + hex.EncodeToString(sum[:]) + " " + strings.Join(scopes, ","), nil
}
