// Package broker is replicator's Kafka glue: franz-go client options (TLS,
// SASL), producer options that keep per-key order and bound memory, topic
// administration for compacted entity topics, and an embedded Kafka-protocol
// broker (franz-go's kfake) for the all-local mode.
//
// Nothing here knows about SQL or Avro: callers hand in plain config structs
// and get [kgo.Opt] values, a [kadm.Client] result or a running broker back.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Configuration keys named in errors. They match the keys of the config
// package so that a message points at the line of YAML to fix.
const (
	keyBrokers       = "kafka.brokers"
	keyTLSEnabled    = "kafka.tls.enabled"
	keyTLSCA         = "kafka.tls.ca_file"
	keyTLSCert       = "kafka.tls.cert_file"
	keyTLSKey        = "kafka.tls.key_file"
	keySASLMechanism = "kafka.sasl.mechanism"
	keySASLUser      = "kafka.sasl.username"
	keySASLPassword  = "kafka.sasl.password"
	keyCompression   = "kafka.compression"
	keyMaxBuffered   = "kafka.max_buffered_records"
	keyListen        = "kafka.listen"
)

// SASL mechanisms accepted in [SASLConfig.Mechanism] (case-insensitive).
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Config is how to reach a Kafka cluster (or any Kafka-protocol broker:
// Redpanda, the [Embedded] broker).
type Config struct {
	// Brokers are the seed brokers as host:port. Required; a seed without a
	// port gets Kafka's default 9092.
	Brokers []string
	// ClientID is sent with every request and shows up in broker logs and
	// quotas. Empty leaves kgo's default ("kgo").
	ClientID string
	// TLS encrypts the connections to the brokers. Off by default.
	TLS TLSConfig
	// SASL authenticates to the brokers. Off when Mechanism is empty.
	SASL SASLConfig
	// Dial, when set, opens the connections instead of a TCP dialer:
	// [Embedded.DialContext] for a client in the embedded broker's
	// process. It cannot be combined with TLS: [Embedded.DialContext]
	// does TLS itself when the broker serves it.
	Dial DialFunc
}

// DialFunc opens a connection to a broker (a kgo.Dialer).
type DialFunc = func(ctx context.Context, network, host string) (net.Conn, error)

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	// Enabled turns TLS on. Setting any file below without Enabled is an
	// error rather than a silent plain-text connection.
	Enabled bool
	// CAFile is a PEM bundle of the CAs that sign the brokers' certificates.
	// Empty uses the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and key (PEM) for
	// mutual TLS. Both or neither.
	CertFile, KeyFile string
	// InsecureSkipVerify disables verification of the brokers'
	// certificates. For tests only: it allows a man in the middle.
	InsecureSkipVerify bool
}

// SASLConfig authenticates to the brokers.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty disables
	// SASL. PLAIN sends the password in clear: pair it with TLS.
	Mechanism string
	// Username and Password are the credentials. The password is never
	// included in errors.
	Username, Password string
}

// ClientOptions returns the kgo options that connect to the configured
// brokers: seed brokers, client ID, TLS dialer and SASL mechanism. Errors
// name the configuration key at fault (for example kafka.sasl.mechanism) and
// never contain the password.
//
// The options are connection options only; add [ProducerOptions] for a
// producer and consumer options for a consumer.
func (c Config) ClientOptions() ([]kgo.Opt, error) {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, fmt.Errorf("%s: at least one broker is required", keyBrokers))
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			errs = append(errs, fmt.Errorf("%s: empty broker address", keyBrokers))
		}
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}

	tc, err := c.TLS.config()
	switch {
	case err != nil:
		errs = append(errs, err)
	case tc != nil && c.Dial != nil:
		errs = append(errs, fmt.Errorf("%s with an in-process dialer: the embedded broker's dialer does TLS itself (EmbeddedConfig.CertFile); leave TLS out of this client", keyTLSEnabled))
	case tc != nil:
		opts = append(opts, kgo.DialTLSConfig(tc))
	case c.Dial != nil:
		opts = append(opts, kgo.Dialer(c.Dial))
	}

	mech, err := c.SASL.mechanism()
	if err != nil {
		errs = append(errs, err)
	} else if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}

	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return opts, nil
}

// config builds the tls.Config, or nil when TLS is off. kgo sets ServerName
// per broker from the address it dials, so it is left empty here.
func (t TLSConfig) config() (*tls.Config, error) {
	if !t.Enabled {
		var set []string
		for _, f := range []struct{ key, v string }{{keyTLSCA, t.CAFile}, {keyTLSCert, t.CertFile}, {keyTLSKey, t.KeyFile}} {
			if f.v != "" {
				set = append(set, f.key)
			}
		}
		if len(set) > 0 {
			return nil, fmt.Errorf("%s set but kafka.tls.enabled is false", strings.Join(set, ", "))
		}
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	if t.CAFile != "" {
		pool, err := loadCAFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyTLSCA, err)
		}
		tc.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", keyTLSCert, keyTLSKey, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	case t.CertFile != "":
		return nil, fmt.Errorf("%s is set but %s is empty: a client certificate needs its key", keyTLSCert, keyTLSKey)
	case t.KeyFile != "":
		return nil, fmt.Errorf("%s is set but %s is empty: a client key needs its certificate", keyTLSKey, keyTLSCert)
	}
	return tc, nil
}

// loadCAFile reads a PEM bundle into a fresh pool.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate found in %s", path)
	}
	return pool, nil
}

// mechanism returns the SASL mechanism, or nil when SASL is off.
func (s SASLConfig) mechanism() (sasl.Mechanism, error) {
	if s.Mechanism == "" {
		if s.Username != "" || s.Password != "" {
			return nil, fmt.Errorf("%s is empty but credentials are set: choose %s, %s or %s",
				keySASLMechanism, MechanismPlain, MechanismScramSHA256, MechanismScramSHA512)
		}
		return nil, nil
	}
	if s.Username == "" {
		return nil, fmt.Errorf("%s: required with %s %s", keySASLUser, keySASLMechanism, s.Mechanism)
	}
	if s.Password == "" {
		return nil, fmt.Errorf("%s: required with %s %s", keySASLPassword, keySASLMechanism, s.Mechanism)
	}
	switch strings.ToUpper(s.Mechanism) {
	case MechanismPlain:
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case MechanismScramSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case MechanismScramSHA512:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	default:
		return nil, fmt.Errorf("%s: unknown mechanism %q, want %s, %s or %s",
			keySASLMechanism, s.Mechanism, MechanismPlain, MechanismScramSHA256, MechanismScramSHA512)
	}
}
