package main

import "testing"

func TestParseDataSegsOut(t *testing.T) {
	t.Parallel()
	// ss -tinH prints the socket line and its tcp_info line; the second
	// is indented. Trimmed from a real walsender connection.
	const one = "0 0 127.0.0.1:55432 127.0.0.1:37850\n\t bbr wscale:10,10 rto:204 mss:65483 cwnd:128 bytes_sent:280635342 " +
		"segs_out:166944 segs_in:61548 data_segs_out:166943 data_segs_in:2 busy:3532ms\n"
	tests := []struct {
		name    string
		out     string
		want    int64
		wantErr bool
	}{
		{"one connection", one, 166943, false},
		{"no connection", "", 0, true},
		{"two connections", one + one, 0, true},
		{"garbled", "data_segs_out:12x", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseDataSegsOut([]byte(tt.out))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseDataSegsOut: got %d, %v; want %d (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
