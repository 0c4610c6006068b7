// Package registry connects replicator to a Confluent-compatible schema
// registry: a client with basic auth and HTTPS, registration that checks
// compatibility first, and an embedded registry (franz-go's srfake plus a
// durable schema log) for the all-local mode.
package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/sr"
)

// Configuration keys named in errors; they match the config package.
const (
	keyURL      = "registry.url"
	keyUsername = "registry.username"
	keyPassword = "registry.password"
	keyCA       = "registry.ca_file"
)

// ClientConfig is how to reach a schema registry.
type ClientConfig struct {
	// URL is the registry's base URL, http:// or https://. Several URLs
	// may be given comma-separated; the client tries them in order on
	// connection errors. Required.
	URL string
	// Username and Password enable HTTP basic auth (Confluent's
	// basic.auth.user.info). The password is never included in errors.
	Username, Password string
	// CAFile is a PEM bundle of the CAs that sign the registry's HTTPS
	// certificate, for a private CA. Empty uses the system roots. Requires
	// an https:// URL.
	CAFile string
}

// NewClient builds a franz-go registry client from cfg. Errors name the
// configuration key at fault. The client is safe for concurrent use.
func NewClient(cfg ClientConfig) (*sr.Client, error) {
	var errs []error
	var urls []string
	https := false
	for u := range strings.SplitSeq(cfg.URL, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			errs = append(errs, fmt.Errorf("%s: %q is not an http:// or https:// URL", keyURL, u))
			continue
		}
		if pu.User != nil {
			errs = append(errs, fmt.Errorf("%s: credentials in the URL are not supported, use %s and %s", keyURL, keyUsername, keyPassword))
			continue
		}
		https = https || pu.Scheme == "https"
		urls = append(urls, u)
	}
	if len(urls) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: required", keyURL))
	}
	if cfg.Password != "" && cfg.Username == "" {
		errs = append(errs, fmt.Errorf("%s: required when %s is set", keyUsername, keyPassword))
	}
	var tc *tls.Config
	if cfg.CAFile != "" {
		pool, err := loadCAFile(cfg.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", keyCA, err))
		case !https && len(urls) > 0:
			errs = append(errs, fmt.Errorf("%s is set but %s has no https:// URL", keyCA, keyURL))
		default:
			tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	opts := []sr.ClientOpt{sr.URLs(urls...), sr.UserAgent("replicator")}
	if cfg.Username != "" {
		opts = append(opts, sr.BasicAuth(cfg.Username, cfg.Password))
	}
	if tc != nil {
		opts = append(opts, sr.DialTLSConfig(tc))
	}
	return sr.NewClient(opts...)
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

// IncompatibleError is returned by [Register] when the registry rejects a
// schema as incompatible with the subject's latest version under the
// subject's compatibility level (BACKWARD by default). Messages are the
// registry's reasons, when it gives any.
type IncompatibleError struct {
	Subject  string
	Messages []string
	// Local is set when replicator's own check refused the schema (see
	// [Evolve]), not the registry; Version is then the latest version it
	// was checked against, and Level the level required.
	Local   bool
	Version int
	Level   Level
}

func (e *IncompatibleError) Error() string {
	msg := fmt.Sprintf("schema for subject %q is incompatible with its latest version", e.Subject)
	if e.Local {
		msg = fmt.Sprintf("schema for subject %q is not %s compatible with its latest version %d", e.Subject, e.Level, e.Version)
	}
	if len(e.Messages) > 0 {
		msg += ": " + strings.Join(e.Messages, "; ")
	}
	return msg
}

// Register registers an Avro schema under subject and returns its id.
//
// It is idempotent: a schema already registered under the subject returns
// its existing id without a compatibility question, as the registry itself
// does. A new schema for an existing subject is first checked against the
// latest version (POST /compatibility/subjects/{subject}/versions/latest);
// if the registry says no, Register returns an [*IncompatibleError] and
// registers nothing. Then the schema is registered and the registry's id
// returned (the same id the registry gives an equal schema in any subject).
func Register(ctx context.Context, cl *sr.Client, subject, avroSchema string) (id int, err error) {
	s := sr.Schema{Schema: avroSchema, Type: sr.TypeAvro}

	have, err := cl.LookupSchema(ctx, subject, s)
	exists := true
	switch {
	case err == nil:
		return have.ID, nil
	case hasCode(err, sr.ErrSubjectNotFound):
		exists = false
	case hasCode(err, sr.ErrSchemaNotFound):
	default:
		return 0, fmt.Errorf("look up schema in subject %q: %w", subject, err)
	}

	if exists {
		res, err := cl.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), subject, -1, s)
		switch {
		case err == nil && !res.Is:
			return 0, &IncompatibleError{Subject: subject, Messages: res.Messages}
		case err == nil, hasCode(err, sr.ErrSubjectNotFound), hasCode(err, sr.ErrVersionNotFound):
			// Compatible, or the subject was deleted meanwhile.
		default:
			return 0, fmt.Errorf("check compatibility in subject %q: %w", subject, err)
		}
	}

	id, err = cl.RegisterSchema(ctx, subject, s, -1, -1)
	if err != nil {
		if hasCode(err, sr.ErrIncompatibleSchema) {
			// A concurrent registration moved the latest version.
			var re *sr.ResponseError
			errors.As(err, &re)
			return 0, &IncompatibleError{Subject: subject, Messages: []string{re.Message}}
		}
		return 0, fmt.Errorf("register schema in subject %q: %w", subject, err)
	}
	return id, nil
}

// hasCode reports whether err is a registry response with code's error code.
func hasCode(err error, code *sr.Error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && re.ErrorCode == code.Code
}
