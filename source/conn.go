package source

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sessionParams pin the text formats the decoders in package relation read,
// whatever the server or role defaults are. The walsender formats pgoutput
// text values with these too.
var sessionParams = map[string]string{
	"DateStyle":          "ISO, MDY",
	"TimeZone":           "UTC",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"application_name":   "replicator",
}

// parseConfig parses source.url with pgx's own parser, so pgx's URL
// parameters (statement_cache_capacity, default_query_exec_mode, …) configure
// pgx instead of reaching the server as unknown settings, and then pins
// sessionParams. For a replication connection only the embedded
// pgconn.Config is used; pgx's settings do not apply to it.
func parseConfig(url string, replication bool) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, parseURLError(err)
	}
	for k, v := range sessionParams {
		if _, set := cfg.RuntimeParams[k]; !set || k != "application_name" {
			cfg.RuntimeParams[k] = v
		}
	}
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	return cfg, nil
}

// parseURLError explains a source.url that does not parse without quoting
// any of it: pgconn redacts a malformed URL only on a best-effort basis, and
// net/url's errors quote the whole URL, password included. A parse failure
// that is not about syntax (an sslkey file that cannot be read, a bad
// sslmode) names no secret and is kept.
func parseURLError(err error) error {
	if !strings.Contains(err.Error(), "failed to parse as") {
		var pce *pgconn.ParseConfigError
		if errors.As(err, &pce) && pce.Unwrap() != nil {
			var ue *url.Error
			if !errors.As(pce.Unwrap(), &ue) {
				return fmt.Errorf("source.url: %w", pce.Unwrap())
			}
		}
	}
	return errors.New("source.url does not parse (not shown, it may hold a password): write a URL " +
		"postgres://user:password@host:5432/db?sslmode=verify-full with special characters in the password " +
		"percent-encoded (@ as %40, / as %2F, : as %3A), or key=value pairs host=h user=u dbname=d with " +
		"values containing spaces in single quotes")
}

// connectReplication opens a logical replication connection.
func connectReplication(ctx context.Context, url string) (*pgconn.PgConn, error) {
	cfg, err := parseConfig(url, true)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, &cfg.Config)
	if err != nil {
		return nil, explainConnectError(fmt.Errorf("connect for replication: %w", err))
	}
	return conn, nil
}

// Connect opens an ordinary SQL connection with replicator's session
// settings.
func Connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := parseConfig(url, false)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, explainConnectError(fmt.Errorf("connect: %w", err))
	}
	return conn, nil
}

// explainConnectError adds how to fix the usual connection failures.
func explainConnectError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			if strings.Contains(pgErr.Message, "replication") {
				return fmt.Errorf("%w (the role needs the REPLICATION attribute and a pg_hba.conf entry for replication connections)", err)
			}
			return fmt.Errorf("%w (check the user and password in source.url)", err)
		case "3D000":
			return fmt.Errorf("%w (check the database name in source.url)", err)
		case "42501":
			return fmt.Errorf("%w (grant the role REPLICATION: ALTER ROLE name REPLICATION)", err)
		}
	}
	if strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no such host") {
		return fmt.Errorf("%w (is PostgreSQL running at the host and port in source.url?)", err)
	}
	return err
}
