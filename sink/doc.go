// Package sink builds consumer-owned read models from entity topics: it
// consumes the topics with a consumer group per read model, decodes each
// record by its schema id (Avro schema resolution against the fields the
// read model needs), and applies batches to a SQL store (PostgreSQL, MySQL or
// MariaDB, SQLite) in one transaction together with the consumed offsets.
//
// The topic format (docs/ARCHITECTURE.md, "Mapping and formats") is the only
// contract: the package imports neither source/ nor pipeline/, so any
// producer that follows the format can feed it.
//
// The apply rule, the side table and the offsets' compare-and-set are
// described in docs/ARCHITECTURE.md, "The sink".
package sink
