package mapping

import (
	"encoding/binary"
	"fmt"
)

// confluentMagic is the first byte of a record framed for Confluent's schema
// registry.
const confluentMagic = 0

// AppendConfluentHeader appends the Confluent schema-registry framing to dst:
// the magic byte 0 and the 4-byte big-endian schema id. The Avro payload
// follows it.
func AppendConfluentHeader(dst []byte, schemaID int) []byte {
	dst = append(dst, confluentMagic)
	return binary.BigEndian.AppendUint32(dst, uint32(schemaID))
}

// SplitConfluent splits a record framed by [AppendConfluentHeader] into its
// schema id and its Avro payload (a sub-slice of b). It fails when b is
// shorter than the 5-byte header or does not start with the magic byte 0.
func SplitConfluent(b []byte) (id int, payload []byte, err error) {
	if len(b) < 5 {
		return 0, nil, fmt.Errorf("confluent framing: %d bytes, want at least 5 (magic byte and schema id)", len(b))
	}
	if b[0] != confluentMagic {
		return 0, nil, fmt.Errorf("confluent framing: magic byte 0x%02x, want 0x00", b[0])
	}
	return int(binary.BigEndian.Uint32(b[1:5])), b[5:], nil
}
