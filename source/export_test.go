package source

// The optional handler interfaces, named for the compile-time checks in
// handlers_test.go (package source_test, which may import pipeline).
type (
	Truncater     = truncater
	ShapeFollower = shapeFollower
)
