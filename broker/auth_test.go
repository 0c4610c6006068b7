package broker

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replicator/replicator/certtest"
)

// TestEmbeddedRefusesOpenNetworkListen: a broker that anyone on the
// network could use is refused before it binds anything.
func TestEmbeddedRefusesOpenNetworkListen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sasl SASLConfig
		want string
	}{
		{SASLConfig{}, "kafka.listen 0.0.0.0:0 is not a loopback address"},
		{SASLConfig{Mechanism: "PLAIN", Username: "u", Password: "p"}, "PLAIN would send the password in clear"},
		{SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u"}, "kafka.sasl.password: required"},
	}
	for _, tt := range tests {
		_, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "0.0.0.0:0", SASL: tt.sasl})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SASL %+v: got %v, want an error containing %q", tt.sasl.Mechanism, err, tt.want)
		}
		if err != nil && tt.sasl.Password != "" && strings.Contains(err.Error(), tt.sasl.Password+" ") {
			t.Errorf("error quotes the password: %v", err)
		}
	}
	// With SCRAM it is accepted (checked without binding 0.0.0.0 here).
	if _, _, err := embeddedAuth("0.0.0.0:9092", SASLConfig{Mechanism: "scram-sha-512", Username: "u", Password: "p"}, false); err != nil {
		t.Errorf("SCRAM-SHA-512 on a wildcard address: %v", err)
	}
}

// TestEmbeddedSASL: with SASL on, a client without credentials (or with
// a wrong password) gets nothing; one with them creates, produces and
// consumes.
func TestEmbeddedSASL(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{MechanismScramSHA256, MechanismScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			creds := SASLConfig{Mechanism: mech, Username: "replicator", Password: "s3cret pass"}
			e := startEmbedded(t, EmbeddedConfig{SASL: creds, DataDir: t.TempDir(), CompactionInterval: 10 * time.Millisecond})

			for name, sasl := range map[string]SASLConfig{
				"no credentials": {},
				"wrong password": {Mechanism: mech, Username: "replicator", Password: "guess"},
			} {
				opts, err := Config{Brokers: []string{e.Addr()}, SASL: sasl}.ClientOptions()
				if err != nil {
					t.Fatal(err)
				}
				cl, err := kgo.NewClient(append(opts, kgo.RequestRetries(0))...)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				_, err = kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "stolen")
				cancel()
				cl.Close()
				if err == nil {
					t.Errorf("%s: CreateTopic succeeded", name)
				}
			}

			opts, err := Config{Brokers: []string{e.Addr()}, SASL: creds}.ClientOptions()
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			ensure(t, kadm.NewClient(cl), TopicSpec{Name: "allowed", Partitions: 1})
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "allowed", Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatalf("produce with credentials: %v", err)
			}
			topics, err := kadm.NewClient(cl).ListTopics(ctx)
			if err != nil || !topics.Has("allowed") || topics.Has("stolen") {
				t.Errorf("topics: got %v (%v), want allowed and not stolen", topics.Names(), err)
			}
		})
	}
}

// TestEmbeddedTLS: with a certificate the broker serves TLS only: a TCP
// client trusting it (and with the SASL credentials) produces, a plain one
// gets nothing, and the in-process dialer speaks TLS by itself.
func TestEmbeddedTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := certtest.SelfSigned(t, "broker test")
	creds := SASLConfig{Mechanism: MechanismPlain, Username: "replicator", Password: "pw"}
	e := startEmbedded(t, EmbeddedConfig{SASL: creds, CertFile: certFile, KeyFile: keyFile})

	opts, err := Config{Brokers: []string{e.Addr()}, SASL: creds}.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	tlsClient, err := kgo.NewClient(append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool}))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tlsClient.Close)
	ensure(t, kadm.NewClient(tlsClient), TopicSpec{Name: "secure", Partitions: 1})
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := tlsClient.ProduceSync(ctx, &kgo.Record{Topic: "secure", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce over TLS: %v", err)
	}

	plain, err := kgo.NewClient(append(opts, kgo.RequestRetries(0))...)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(t.Context(), 5*time.Second)
	_, err = kadm.NewClient(plain).ListTopics(pctx)
	pcancel()
	plain.Close()
	if err == nil {
		t.Errorf("a plain-text client listed the topics of a TLS broker")
	}

	opts, err = Config{Brokers: []string{e.Addr()}, SASL: creds, Dial: e.DialContext}.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	inproc, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inproc.Close)
	if err := inproc.ProduceSync(ctx, &kgo.Record{Topic: "secure", Value: []byte("w")}).FirstErr(); err != nil {
		t.Fatalf("produce in process: %v", err)
	}
	if _, err := StartEmbedded(t.Context(), EmbeddedConfig{Listen: "127.0.0.1:0", CertFile: certFile}); err == nil || !strings.Contains(err.Error(), "kafka.tls.key_file") {
		t.Errorf("cert without key: got %v, want an error naming kafka.tls.key_file", err)
	}
	if _, _, err := embeddedAuth("0.0.0.0:9092", creds, true); err != nil {
		t.Errorf("PLAIN over TLS on a wildcard address: %v", err)
	}
}
