package source_test

import (
	"github.com/replicator/replicator/pipeline"
	"github.com/replicator/replicator/source"
)

// The source finds a handler's optional capabilities by type assertion, so
// a renamed or re-typed method would silently disable them (a TRUNCATE or
// a schema change would then stop the stream). These fail to compile
// instead. They live in an external test package: source cannot import
// pipeline, which imports it.
var (
	_ source.Handler       = (*pipeline.Pipeline)(nil)
	_ source.Truncater     = (*pipeline.Pipeline)(nil)
	_ source.ShapeFollower = (*pipeline.Pipeline)(nil)
)
