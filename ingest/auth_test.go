package ingest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderpipe/orderpipe/internal/testlog"
	"github.com/orderpipe/orderpipe/saga"
	"github.com/orderpipe/orderpipe/topology"
)

func TestNewAPIKey(t *testing.T) {
	key, line, err := NewAPIKey("shop-1", []string{ScopeOrdersWrite, ScopeOrdersRead})
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 43 || strings.ContainsAny(key, "+/=") {
		t.Errorf("key %q: want 43 characters of base64url without padding", key)
	}
	kr, err := parseKeyring(strings.NewReader("# a comment\n\n" + line + "\n"))
	if err != nil {
		t.Fatalf("the printed line does not parse: %v", err)
	}
	c := kr.authenticate([]byte(key))
	if c == nil || c.id != "shop-1" || !c.allowed([]string{ScopeOrdersRead}) || c.allowed([]string{ScopeInventoryAdmin}) {
		t.Fatalf("authenticate: got %+v, want shop-1 with orders scopes", c)
	}
	if c := kr.authenticate([]byte(key + "x")); c != nil {
		t.Errorf("a wrong key authenticated as %+v", c)
	}
	other, _, _ := NewAPIKey("shop-1", []string{ScopeOrdersRead})
	if other == key {
		t.Error("two keys are equal")
	}
	for _, bad := range []struct {
		id     string
		scopes []string
	}{{"", []string{ScopeOrdersRead}}, {"a b", []string{ScopeOrdersRead}}, {"a", nil}, {"a", []string{"orders:delete"}}} {
		if _, _, err := NewAPIKey(bad.id, bad.scopes); err == nil {
			t.Errorf("NewAPIKey(%q, %v): got no error", bad.id, bad.scopes)
		}
	}
}

func TestParseKeyringRefusesMistakes(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, file := range []string{
		"",
		"# only comments\n",
		"a " + hash + "\n",
		"a " + hash + " orders:read extra\n",
		"a " + hash[:62] + " orders:read\n",
		"a " + strings.Repeat("zz", 32) + " orders:read\n",
		"a " + hash + " orders:read,orders:fly\n",
		"a " + hash + " orders:read\na " + hash + " orders:write\n",
	} {
		if _, err := parseKeyring(strings.NewReader(file)); err == nil {
			t.Errorf("keys file %q: got no error", file)
		}
	}
}

func TestNewRefusesOpenNonLoopback(t *testing.T) {
	for _, listen := range []string{":8080", "0.0.0.0:8080", "192.0.2.1:8080", "[::]:8080"} {
		err := Config{Listen: listen}.Validate()
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("listen %s without keys: got %v, want a loopback error", listen, err)
		}
	}
	for _, listen := range []string{"127.0.0.1:0", "localhost:8080", "[::1]:8080", "127.9.9.9:1"} {
		if err := (Config{Listen: listen}).Validate(); err != nil {
			t.Errorf("listen %s without keys: %v", listen, err)
		}
	}
	if err := (Config{Listen: "0.0.0.0:8080", APIKeysFile: "keys"}).Validate(); err != nil {
		t.Errorf("public listen with keys: %v", err)
	}
}

func TestAuthentication(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	keys := map[string]string{}
	for _, c := range []struct {
		id     string
		scopes []string
	}{
		{"shop-a", []string{ScopeOrdersWrite, ScopeOrdersRead}},
		{"shop-b", []string{ScopeOrdersWrite, ScopeOrdersRead}},
		{"reader", []string{ScopeOrdersRead}},
		{"admin", []string{ScopeInventoryAdmin}},
	} {
		key, line, err := NewAPIKey(c.id, c.scopes)
		if err != nil {
			t.Fatal(err)
		}
		keys[c.id] = key
		lines = append(lines, line)
	}
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte("# test keys\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, logged := testlog.Capture()
	h := newHarness(t, options{cfg: Config{APIKeysFile: path}, log: log})
	bearer := func(client string) []string { return []string{"Authorization", "Bearer " + keys[client]} }
	body := orderBody("c1", "A:1")

	if got := logged(); !strings.Contains(got, `msg="authentication is on: API keys loaded"`) || !strings.Contains(got, "clients=4") {
		t.Errorf("no start line saying auth is on for 4 clients in the edge's log:\n%s", got)
	}
	r := h.postOrder(body)
	if r.status != 401 || !strings.HasPrefix(r.header["Www-Authenticate"], "Bearer") {
		t.Fatalf("no key: got %s WWW-Authenticate %q, want 401 with a Bearer challenge", r, r.header["Www-Authenticate"])
	}
	problemOf(t, r)
	for _, auth := range []string{"Bearer nope", "Basic " + keys["shop-a"], "Bearer", keys["shop-a"]} {
		if r := h.postOrder(body, "Authorization", auth); r.status != 401 {
			t.Errorf("Authorization %q: got %s, want 401", auth, r)
		}
	}
	if r := h.postOrder(body, bearer("reader")...); r.status != 403 {
		t.Errorf("reader posts: got %s, want 403", r)
	} else {
		// The answer names the scope that was missing (RFC 6750 §3).
		if got := r.header["Www-Authenticate"]; !strings.Contains(got, `error="insufficient_scope"`) || !strings.Contains(got, `scope="orders:write"`) {
			t.Errorf("reader posts: WWW-Authenticate %q, want insufficient_scope and scope=\"orders:write\"", got)
		}
		if !strings.Contains(string(r.body), "lacks the scope orders:write, which POST /v1/orders needs") {
			t.Errorf("reader posts: problem %s does not name the missing scope", r.body)
		}
	}
	if r := h.postOrder(body, "Authorization", "bearer "+keys["shop-a"]); r.status != 202 {
		t.Fatalf("shop-a posts (lower-case scheme): got %s, want 202", r)
	}
	h.requireNoMoreThan(1)

	// Orders carry their client, and only that client sees them.
	subs := h.submitted()
	var m *saga.OrderSubmitted
	for _, s := range subs {
		m = s
	}
	if m.ClientID != "shop-a" {
		t.Fatalf("client of the order: got %q, want shop-a", m.ClientID)
	}
	// Before the view shows it, this edge answers from what it produced:
	// to its owner only.
	path = "/v1/orders/" + m.OrderID.String()
	if r := h.do("GET", path, "", "", bearer("shop-a")...); r.status != 200 || field(t, r.body, "status") != "pending" {
		t.Errorf("owner reads the order this edge just accepted: got %s, want 200 pending", r)
	}
	if r := h.do("GET", path, "", "", bearer("shop-b")...); r.status != 404 {
		t.Errorf("shop-b reads the order shop-a just placed: got %s, want 404", r)
	}
	h.setOrder(m, saga.StatusConfirmed, 1)
	if r := h.do("GET", path, "", "", bearer("shop-a")...); r.status != 200 {
		t.Errorf("owner reads: got %s, want 200", r)
	}
	for _, other := range []string{"shop-b", "reader"} {
		if r := h.do("GET", path, "", "", bearer(other)...); r.status != 404 {
			t.Errorf("%s reads shop-a's order: got %s, want 404", other, r)
		}
	}
	if r := h.do("GET", path, "", "", bearer("admin")...); r.status != 403 {
		t.Errorf("admin reads an order: got %s, want 403 (no orders:read)", r)
	}
	// Idempotency keys are per client: the same key is another order.
	ra := h.postOrder(body, append(bearer("shop-a"), "Idempotency-Key", "k")...)
	rb := h.postOrder(orderBody("other", "B:1"), append(bearer("shop-b"), "Idempotency-Key", "k")...)
	if ra.status != 202 || rb.status != 202 || field(t, ra.body, "order_id") == field(t, rb.body, "order_id") {
		t.Errorf("same key, two clients: got %s and %s, want two orders", ra, rb)
	}

	// Inventory: admin writes, readers read, nobody else writes.
	if r := h.do("PUT", "/v1/inventory/A", "application/json", `{"available":5}`, bearer("shop-a")...); r.status != 403 {
		t.Errorf("shop-a sets stock: got %s, want 403", r)
	}
	if r := h.do("PUT", "/v1/inventory/A", "application/json", `{"available":5}`, bearer("admin")...); r.status != 202 {
		t.Errorf("admin sets stock: got %s, want 202", r)
	}
	for _, who := range []string{"reader", "admin"} {
		if r := h.do("GET", "/v1/inventory/A", "", "", bearer(who)...); r.status != 404 {
			t.Errorf("%s reads stock: got %s, want 404 (not in the view: no inventory processor)", who, r)
		}
	}
	// Health and metrics need no key.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := h.do("GET", p, "", ""); r.status != 200 {
			t.Errorf("GET %s without a key: got %s, want 200", p, r)
		}
	}
}

// requireNoMoreThan checks that orders.submitted holds at most n records.
func (h *harness) requireNoMoreThan(n int) {
	h.t.Helper()
	if got := len(h.records(string(topology.OrdersSubmitted))); got > n {
		h.t.Fatalf("records on orders.submitted: got %d, want at most %d", got, n)
	}
}
