package broker

import (
	"fmt"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// IsLoopback reports whether a listen address (host:port) accepts only
// connections from this machine: a loopback IP or "localhost". An empty
// host or a wildcard listens on every interface.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// embeddedAuth returns the kfake options that make the embedded broker
// require SASL with s as its one user, and the kgo options the broker's
// own clients (the compactor) then need. Off when s.Mechanism is empty,
// which is refused for a listen address other than loopback: anyone on the
// network could otherwise read and write every topic. PLAIN is refused
// there too, since the embedded broker has no TLS and PLAIN sends the
// password in clear.
func embeddedAuth(listen string, s SASLConfig) ([]kfake.Opt, []kgo.Opt, error) {
	if s.Mechanism == "" {
		if !IsLoopback(listen) {
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
	if name == MechanismPlain && !IsLoopback(listen) {
		return nil, nil, fmt.Errorf("%s %s on %s %s: PLAIN would send the password in clear over the network; use SCRAM-SHA-256 or SCRAM-SHA-512",
			keySASLMechanism, s.Mechanism, keyListen, listen)
	}
	return []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(name, s.Username, s.Password)}, []kgo.Opt{kgo.SASL(mech)}, nil
}
