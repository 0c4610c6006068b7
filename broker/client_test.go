package broker

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replicator/replicator/certtest"
)

func TestClientOptionsErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := []string{"127.0.0.1:9092"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; nil means no error
	}{
		{"minimal", Config{Brokers: ok}, nil},
		{"no brokers", Config{}, []string{"kafka.brokers"}},
		{"unknown mechanism", Config{Brokers: ok, SASL: SASLConfig{Mechanism: "GSSAPI", Username: "u", Password: "hunter2"}}, []string{"kafka.sasl.mechanism", "GSSAPI"}},
		{"lower-case mechanism", Config{Brokers: ok, SASL: SASLConfig{Mechanism: "scram-sha-512", Username: "u", Password: "hunter2"}}, nil},
		{"no user", Config{Brokers: ok, SASL: SASLConfig{Mechanism: "PLAIN", Password: "hunter2"}}, []string{"kafka.sasl.username"}},
		{"no password", Config{Brokers: ok, SASL: SASLConfig{Mechanism: "PLAIN", Username: "u"}}, []string{"kafka.sasl.password"}},
		{"credentials without mechanism", Config{Brokers: ok, SASL: SASLConfig{Username: "u", Password: "hunter2"}}, []string{"kafka.sasl.mechanism"}},
		{"ca without tls", Config{Brokers: ok, TLS: TLSConfig{CAFile: notPEM}}, []string{"kafka.tls.ca_file", "kafka.tls.enabled"}},
		{"missing ca", Config{Brokers: ok, TLS: TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")}}, []string{"kafka.tls.ca_file", "nope.pem"}},
		{"ca not pem", Config{Brokers: ok, TLS: TLSConfig{Enabled: true, CAFile: notPEM}}, []string{"kafka.tls.ca_file", "no PEM"}},
		{"cert without key", Config{Brokers: ok, TLS: TLSConfig{Enabled: true, CertFile: notPEM}}, []string{"kafka.tls.key_file"}},
		{"tls to the embedded broker", Config{Brokers: ok, TLS: TLSConfig{Enabled: true}, Dial: (&net.Dialer{}).DialContext}, []string{"kafka.tls.enabled", "embedded broker"}},
		{"all at once", Config{SASL: SASLConfig{Mechanism: "X", Username: "u", Password: "hunter2"}}, []string{"kafka.brokers", "kafka.sasl.mechanism"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.cfg.ClientOptions()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestClientOptionsSASL(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(mech, "alice", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			for _, tc := range []struct {
				name, pass string
				wantOK     bool
			}{
				{"right password", "s3cret", true},
				{"wrong password", "wrong", false},
			} {
				cfg := Config{Brokers: c.ListenAddrs(), SASL: SASLConfig{Mechanism: mech, Username: "alice", Password: tc.pass}}
				if err := ping(t, cfg); (err == nil) != tc.wantOK {
					t.Errorf("%s: got ping error %v, want success %v", tc.name, err, tc.wantOK)
				}
			}
		})
	}
}

// TestClientOptionsTLS connects with mutual TLS: the broker only accepts
// clients whose certificate our CA signed.
func TestClientOptionsTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "replicator test CA")
	serverCert := ca.TLSCertificate(t, "broker", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.WriteIssued(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()

	for _, tc := range []struct {
		name   string
		tls    TLSConfig
		wantOK bool
	}{
		{"mutual tls", TLSConfig{Enabled: true, CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}, true},
		{"no client cert", TLSConfig{Enabled: true, CAFile: caFile}, false},
		{"unknown ca", TLSConfig{Enabled: true, CertFile: clientCert, KeyFile: clientKey}, false},
		{"plain text", TLSConfig{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := ping(t, Config{Brokers: brokers, TLS: tc.tls}); (err == nil) != tc.wantOK {
				t.Fatalf("got ping error %v, want success %v", err, tc.wantOK)
			}
		})
	}
}

// ping connects with cfg's options and asks the broker for metadata.
func ping(t *testing.T, cfg Config) error {
	t.Helper()
	opts, err := cfg.ClientOptions()
	if err != nil {
		t.Fatalf("ClientOptions: %v", err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.RequestRetries(0), kgo.DialTimeout(5*time.Second))...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()
	return cl.Ping(t.Context())
}
