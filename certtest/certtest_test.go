package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// TestSelfSigned: the files load as a key pair whose certificate the pool
// verifies for 127.0.0.1 as a server.
func TestSelfSigned(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := SelfSigned(t, "certtest")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "certtest" {
		t.Errorf("common name: got %q, want certtest", cert.Subject.CommonName)
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("verify for 127.0.0.1 with the pool: %v", err)
	}
}
