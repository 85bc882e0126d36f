package ingest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCert writes a self-signed certificate for 127.0.0.1 with serial
// number serial to dir and returns its files and the parsed certificate.
func testCert(t *testing.T, dir string, serial int64) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "orderpipe test edge"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// tlsClient trusts only roots and speaks HTTP/1.1, as a strict client would.
func tlsClient(roots ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// TestTLS: with --tls-cert and --tls-key the edge serves HTTPS that a
// verifying client accepts, refuses plain HTTP and clients that do not
// trust it, and a reload swaps in a new certificate (a bad one keeps the
// old).
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, first := testCert(t, dir, 1)
	h := newHarness(t, options{cfg: Config{TLSCertFile: certFile, TLSKeyFile: keyFile}})
	url := "https://" + h.edge.Addr()

	get := func(cl *http.Client, path string) (int, string, *x509.Certificate, error) {
		resp, err := cl.Get(url + path)
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.TLS.PeerCertificates[0], err
	}
	status, body, peer, err := get(tlsClient(first), "/healthz")
	if err != nil || status != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Fatalf("GET /healthz over TLS: %d %q %v, want 200 ok", status, body, err)
	}
	if peer.SerialNumber.Int64() != 1 {
		t.Fatalf("served certificate serial %v, want 1", peer.SerialNumber)
	}
	// The order API works over TLS too: a valid order is accepted.
	resp, err := tlsClient(first).Post(url+"/v1/orders", "application/json", strings.NewReader(orderBody("c1", "A:1")))
	if err != nil {
		t.Fatalf("POST /v1/orders over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/orders over TLS: %d, want 202", resp.StatusCode)
	}

	// A client that does not trust the certificate fails the handshake.
	var unknown x509.UnknownAuthorityError
	if _, _, _, err := get(tlsClient(), "/healthz"); !errors.As(err, &unknown) {
		t.Errorf("GET from a client that does not trust the edge: %v, want x509.UnknownAuthorityError", err)
	}
	// Plain HTTP on the TLS port gets no HTTP answer.
	if line := plainHTTP(t, h.edge.Addr()); strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Errorf("plain HTTP to the TLS port answered %q, want no HTTP 200", line)
	}

	// A bad pair keeps the certificate in use.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.edge.ReloadKeys(); err == nil {
		t.Error("reload of a broken certificate file: nil error, want one")
	}
	if _, _, peer, err := get(tlsClient(first), "/healthz"); err != nil || peer.SerialNumber.Int64() != 1 {
		t.Fatalf("after a failed reload: %v, serial %v, want the first certificate still served", err, peer)
	}
	// A good new pair is served to new connections at once.
	_, _, second := testCert(t, dir, 2)
	if err := h.edge.ReloadKeys(); err != nil {
		t.Fatalf("reload a new certificate: %v", err)
	}
	if _, _, peer, err := get(tlsClient(second), "/healthz"); err != nil || peer.SerialNumber.Int64() != 2 {
		t.Fatalf("after reload: %v, serial %v, want the second certificate", err, peer)
	}
}

// plainHTTP sends a plain HTTP request to addr and returns the first line
// of whatever comes back ("" if the connection is closed).
func plainHTTP(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return ""
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return line
}

// TestTLSConfig: the pair goes together, and a missing file stops New.
func TestTLSConfig(t *testing.T) {
	if err := (Config{TLSCertFile: "a.crt", Brokers: []string{"x:1"}}).Validate(); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("Validate with a cert and no key: %v, want an error naming --tls-key", err)
	}
	if _, err := loadCertificate(filepath.Join(t.TempDir(), "none.crt"), "none.key"); err == nil {
		t.Error("loadCertificate of missing files: nil error, want one")
	}
}
