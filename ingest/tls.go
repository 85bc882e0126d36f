package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// certificate is the edge's TLS certificate, replaced as a whole on reload
// so that a handshake sees either the old pair or the new one.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// loadCertificate reads the pair once, so that a bad file stops the start
// rather than the first handshake.
func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the pair again; on any error the pair in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s, key %s: %w", c.certFile, c.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("tls certificate %s: %w", c.certFile, err)
	}
	if time.Now().After(leaf.NotAfter) {
		return fmt.Errorf("tls certificate %s expired at %s", c.certFile, leaf.NotAfter.Format(time.RFC3339))
	}
	pair.Leaf = leaf
	c.cur.Store(&pair)
	return nil
}

// expires is when the certificate in use stops being valid.
func (c *certificate) expires() time.Time { return c.cur.Load().Leaf.NotAfter }

// listener wraps ln in TLS 1.2+ with the current certificate. HTTP/1.1
// only: fasthttp does not speak HTTP/2, and offering it would make clients
// fail after the handshake.
func (c *certificate) listener(ln net.Listener) net.Listener {
	return tls.NewListener(ln, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	})
}

// validTLS checks that the two files come together.
func validTLS(certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("ingest: --tls-cert and --tls-key go together: set both or neither")
	}
	return nil
}
