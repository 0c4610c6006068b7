package config

import (
	"errors"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

const redacted = "xxxxx"

// libpqSecrets are the connection parameters whose value is a secret:
// password (the login password) and sslpassword (the passphrase of the
// sslkey file) are the only two in libpq and pgconn (their lists of
// parameters; sslkey, sslcert, passfile and servicefile are paths). Any other
// key that names a password, secret or token is hidden too, should a later
// version add one.
var libpqSecrets = map[string]bool{"password": true, "sslpassword": true}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	return libpqSecrets[k] || strings.Contains(k, "password") || strings.Contains(k, "secret") ||
		strings.Contains(k, "token") || strings.Contains(k, "passphrase")
}

// RedactSourceURL renders a libpq connection URL or keyword/value string
// without its secrets, for logs, errors and `check`. Its syntax is checked
// by pgconn's own parser first; a string that does not parse is never shown
// (a password with an unencoded '@' or '/' has no reliable boundaries), only
// a placeholder naming source.url.
func RedactSourceURL(s string) string {
	if s == "" {
		return s
	}
	out, ok := redactSource(s)
	if !ok {
		return "(" + KeySourceURL + " does not parse: not shown)"
	}
	return out
}

// redactSource is RedactSourceURL, reporting whether s has unambiguous
// boundaries (pgconn parses it, and so do net/url or our keyword/value
// reader) rather than a placeholder.
func redactSource(s string) (string, bool) {
	if !pgconnParses(s) {
		return "", false
	}
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		return redactURL(s)
	}
	return redactKeywordValue(s)
}

// RedactRegistryURL renders an http(s) URL without its user password or
// secret query parameters; a URL that does not parse is not shown.
func RedactRegistryURL(s string) string {
	if s == "" {
		return s
	}
	out, ok := redactURL(s)
	if !ok {
		return "(" + KeyRegistryURL + " does not parse: not shown)"
	}
	return out
}

// RedactStoreURL renders a read model's store URL (postgres://, mysql://,
// sqlite://) without its password or secret query parameters; a URL that
// does not parse is not shown.
func RedactStoreURL(s string) string {
	if s == "" {
		return s
	}
	out, ok := redactURL(s)
	if !ok {
		return "(" + KeyReadModels + " store URL does not parse: not shown)"
	}
	return out
}

// pgconnParses reports whether pgconn accepts the syntax of s. An empty
// allow-list makes pgconn stop right after parsing, before it reads any file
// or resolves any host: a syntax error says "failed to parse as", a valid
// string fails on its first key instead.
func pgconnParses(s string) bool {
	_, err := pgconn.ParseConfigWithOptions(s, pgconn.ParseConfigOptions{ConnStringAllowedKeys: []string{}})
	var pce *pgconn.ParseConfigError
	if err == nil || !errors.As(err, &pce) {
		return err == nil
	}
	return !strings.Contains(err.Error(), "failed to parse as")
}

// redactURL hides the userinfo password and every secret query parameter.
// Keys are compared decoded, so pass%77ord is caught.
//
// An '@' after the userinfo means the boundaries are ambiguous: in
// postgres://u:p@ss/word@h the password was most likely "p@ss/word" with its
// '@' and '/' not percent-encoded, and the rest of it would show as host and
// path. Such a URL is not shown.
func redactURL(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return "", false
	}
	if strings.Contains(u.Host+u.Path+u.RawPath+u.RawQuery+u.Fragment, "@") {
		return "", false
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return "", false
		}
		for k := range q {
			if isSecretKey(k) {
				q[k] = []string{redacted}
			}
		}
		u.RawQuery = q.Encode()
	}
	if u.Fragment != "" {
		u.Fragment = redacted
	}
	return u.String(), true
}

// redactKeywordValue re-renders a keyword/value string (libpq's syntax:
// key = value, value optionally in single quotes, backslash escaping the
// next character) with secret values hidden.
func redactKeywordValue(s string) (string, bool) {
	type kv struct{ k, v string }
	var pairs []kv
	s = strings.TrimLeft(s, " \t\n\r\v\f")
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return "", false
		}
		key := strings.Trim(s[:eq], " \t\n\r\v\f")
		if key == "" || strings.ContainsAny(key, " \t\n\r\v\f") {
			return "", false
		}
		s = strings.TrimLeft(s[eq+1:], " \t\n\r\v\f")
		var val strings.Builder
		switch {
		case s == "":
		case s[0] == '\'':
			i := 1
			for ; i < len(s) && s[i] != '\''; i++ {
				if s[i] == '\\' {
					i++
					if i == len(s) {
						return "", false
					}
				}
				val.WriteByte(s[i])
			}
			if i >= len(s) {
				return "", false
			}
			s = s[i+1:]
		default:
			i := 0
			for ; i < len(s) && !strings.ContainsRune(" \t\n\r\v\f", rune(s[i])); i++ {
				if s[i] == '\\' {
					i++
					if i == len(s) {
						break
					}
				}
				val.WriteByte(s[i])
			}
			s = s[min(i, len(s)):]
		}
		s = strings.TrimLeft(s, " \t\n\r\v\f")
		pairs = append(pairs, kv{key, val.String()})
	}
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := p.v
		if isSecretKey(p.k) {
			v = redacted
		}
		b.WriteString(p.k + "=" + quoteValue(v))
	}
	return b.String(), true
}

func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\v\f'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
