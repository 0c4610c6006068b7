package source

import "context"

// newBenchFeed returns a function that hands one CopyData payload to a
// stream of src reading for h, as the receive loop does.
func newBenchFeed(src *Source, h Handler) func(context.Context, []byte) error {
	st := &stream{src: src, h: h, cp: newCheckpoint(0)}
	st.r = newWALReader(nil, "bench", st, 0, nil)
	return func(ctx context.Context, data []byte) error {
		err := st.r.copyData(ctx, data)
		st.cp.advance()
		return err
	}
}
