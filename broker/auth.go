package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/replicator/replicator/listenaddr"
)

// embeddedAuth returns the kfake options that make the embedded broker
// require SASL with s as its one user, and the kgo options the broker's
// own clients (the compactor) then need. Off when s.Mechanism is empty,
// which is refused for a listen address other than loopback: anyone on the
// network could otherwise read and write every topic. PLAIN is refused
// there too without TLS, since PLAIN sends the password in clear.
func embeddedAuth(listen string, s SASLConfig, tlsOn bool) ([]kfake.Opt, []kgo.Opt, error) {
	if s.Mechanism == "" {
		if !listenaddr.IsLoopback(listen) {
			return nil, nil, fmt.Errorf("%s %s is not a loopback address: the embedded broker would serve anyone who can reach it; set %s (SCRAM-SHA-256 or SCRAM-SHA-512), %s and %s so that it requires them, or listen on 127.0.0.1",
				keyListen, listen, keySASLMechanism, keySASLUser, keySASLPassword)
		}
		return nil, nil, nil
	}
	mech, err := s.mechanism()
	if err != nil {
		return nil, nil, err
	}
	name := strings.ToUpper(s.Mechanism)
	if name == MechanismPlain && !listenaddr.IsLoopback(listen) && !tlsOn {
		return nil, nil, fmt.Errorf("%s %s on %s %s: PLAIN would send the password in clear over the network; use SCRAM-SHA-256 or SCRAM-SHA-512, or serve TLS (%s, %s)",
			keySASLMechanism, s.Mechanism, keyListen, listen, keyTLSCert, keyTLSKey)
	}
	return []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(name, s.Username, s.Password)}, []kgo.Opt{kgo.SASL(mech)}, nil
}

// embeddedTLS loads the embedded broker's certificate: the kfake option
// that serves TLS with it, and the client configuration of in-process
// connections, which pins that very certificate (they never leave the
// process, so there is no name to check and no one in the middle).
func embeddedTLS(certFile, keyFile string) ([]kfake.Opt, *tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, nil, fmt.Errorf("%s and %s: set both or neither", keyTLSCert, keyTLSKey)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%s, %s: %w", keyTLSCert, keyTLSKey, err)
	}
	leaf := cert.Certificate[0]
	server := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	client := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], leaf) {
				return errors.New("embedded broker: in-process connection got another certificate than the broker's")
			}
			return nil
		},
	}
	return []kfake.Opt{kfake.TLS(server)}, client, nil
}
