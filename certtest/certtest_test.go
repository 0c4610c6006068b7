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

// TestCA: an issued server certificate, written to files, loads and
// verifies against the CA's pool and against its PEM; a client
// certificate verifies for client authentication.
func TestCA(t *testing.T) {
	t.Parallel()
	ca := NewCA(t, "certtest CA")
	certFile, keyFile := ca.WriteIssued(t, t.TempDir(), "server", x509.ExtKeyUsageServerAuth)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	fromPEM := x509.NewCertPool()
	if !fromPEM.AppendCertsFromPEM(ca.PEM()) {
		t.Fatal("the CA's PEM does not parse")
	}
	for name, roots := range map[string]*x509.CertPool{"Pool": ca.Pool(), "PEM": fromPEM} {
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"127.0.0.1", "localhost"} {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
				t.Errorf("server certificate for %s against the CA's %s: %v", host, name, err)
			}
		}
	}
	client := ca.TLSCertificate(t, "client", x509.ExtKeyUsageClientAuth)
	cert, err := x509.ParseCertificate(client.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
}
