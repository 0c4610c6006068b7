package source

import (
	"context"
	"errors"
	"fmt"
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

func parseConfig(url string, replication bool) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		// pgconn's ParseConfigError already redacts the connection string.
		return nil, fmt.Errorf("parse source.url: %w", err)
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

// connectReplication opens a logical replication connection.
func connectReplication(ctx context.Context, url string) (*pgconn.PgConn, error) {
	cfg, err := parseConfig(url, true)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, explainConnectError(fmt.Errorf("connect for replication: %w", err))
	}
	return conn, nil
}

// Connect opens an ordinary SQL connection with replicator's session
// settings.
func Connect(ctx context.Context, url string) (*pgx.Conn, error) {
	pcfg, err := parseConfig(url, false)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("pgx config: %w", err)
	}
	cfg.Config = *pcfg
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
