package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/replicator/replicator/broker"
	"github.com/replicator/replicator/source"
	"github.com/twmb/franz-go/pkg/kerr"
)

// A row whose record exceeds kafka.max_message_bytes fails Handle at once
// with the table, key, LSN, the columns largest first and the fix; nothing
// is produced or acknowledged for it.
func TestHandleRefusesTooLargeRecord(t *testing.T) {
	t.Parallel()
	const limit = 4096
	table := accountsTable()
	for _, tc := range []struct {
		name string
		c    func(row []any) *source.Change
	}{
		{"insert", func(row []any) *source.Change { return change(table, source.OpInsert, row, nil) }},
		{"key change", func(row []any) *source.Change { return change(table, source.OpUpdate, row, keyOnly(41)) }},
		{"snapshot text", func(row []any) *source.Change {
			text := accountText(42, 1)
			text[colNote] = []byte(row[colNote].(string))
			text[colAvatar] = []byte(fmt.Sprintf(`\x%x`, row[colAvatar]))
			return textChange(table, text)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var prod fakeProducer
			p := New(newEntities(t, table, "accounts"), &prod, WithMaxMessageBytes(limit))
			row := accountRow(42, 1)
			row[colNote] = strings.Repeat("n", 3000)
			row[colAvatar] = make([]byte, 1000)
			var ack countAck
			err := p.handle(t.Context(), tc.c(row), &ack)
			var tl *TooLargeError
			if !errors.As(err, &tl) {
				t.Fatalf("Handle: got %v, want a *TooLargeError", err)
			}
			if tl.Table != "public.accounts" || tl.Key != "42" || tl.Limit != limit || tl.Size <= limit || tl.Topic != "accounts" {
				t.Errorf("got %+v, want table public.accounts, key 42, topic accounts, size over %d", tl, limit)
			}
			if len(tl.Columns) < 3 || tl.Columns[0].Name != "note" || tl.Columns[1].Name != "avatar" || tl.Columns[0].Bytes != 3000 {
				t.Errorf("columns: got %v, want note (3000 bytes), then avatar, largest first", tl.Columns)
			}
			for _, s := range []string{"public.accounts", "key 42", testLSNText, "note 3000 bytes", "kafka.compression", "kafka.max_message_bytes",
				fmt.Sprintf("at least %d", tl.Size), `topic "accounts"`, "columns"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if n := len(prod.produced()); n != 0 {
				t.Errorf("produced %d records for a refused change, want none", n)
			}
			if ack.count() != 0 {
				t.Errorf("refused change acknowledged")
			}
		})
	}
}

// tooLarge counts at least what kgo does: a record it lets through is one
// the producer, limited to the same bytes, accepts and the broker stores;
// and it does not refuse more than a few bytes below kgo's limit.
func TestTooLargeMatchesProducer(t *testing.T) {
	t.Parallel()
	const limit = 2048
	b := startBroker(t)
	topic := topicName(t)
	ensureTopic(t, b.Addr(), topic, 1, map[string]string{"max.message.bytes": fmt.Sprint(limit)})
	table := accountsTable()
	cl := newClient(t, b.Addr(), &broker.ProducerConfig{BatchMaxBytes: limit})
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	checked := New(newEntities(t, table, topic), &fakeProducer{}, WithMaxMessageBytes(limit))
	unchecked := New(newEntities(t, table, topic), cl)
	accepted, refused := 0, 0
	var lastAccepted, firstRefused int
	for n := 1700; n < 2048; n++ {
		row := accountRow(1, 1)
		row[colNote] = strings.Repeat("x", n)
		err := checked.Handle(ctx, change(table, source.OpInsert, row, nil))
		var tl *TooLargeError
		switch {
		case err == nil:
			accepted++
			lastAccepted = n
			if err := unchecked.Handle(ctx, change(table, source.OpInsert, row, nil)); err != nil {
				t.Fatalf("note of %d bytes: %v", n, err)
			}
			if err := unchecked.Flush(ctx); err != nil {
				t.Fatalf("note of %d bytes passed the check but the producer failed it: %v", n, err)
			}
		case errors.As(err, &tl):
			if refused == 0 {
				firstRefused = n
			}
			refused++
		default:
			t.Fatalf("note of %d bytes: %v", n, err)
		}
	}
	if accepted == 0 || refused == 0 {
		t.Fatalf("accepted %d, refused %d: want the limit inside the range tried", accepted, refused)
	}
	if firstRefused != lastAccepted+1 {
		t.Fatalf("refused %d bytes before accepting %d: want one boundary", firstRefused, lastAccepted)
	}
	// kgo itself must refuse a little above our boundary.
	for extra := 0; extra < 100; extra++ {
		row := accountRow(1, 1)
		row[colNote] = strings.Repeat("x", firstRefused+extra)
		p := New(newEntities(t, table, topic), cl)
		if err := p.Handle(ctx, change(table, source.OpInsert, row, nil)); err != nil {
			t.Fatal(err)
		}
		err := p.Flush(ctx)
		if err == nil {
			continue
		}
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("note of %d bytes: %v", firstRefused+extra, err)
		}
		// We are stricter than kgo by at most the length prefix's slack.
		if extra > 5 {
			t.Fatalf("the producer refuses a note of %d bytes, we refuse from %d: our check is too strict", firstRefused+extra, firstRefused)
		}
		return
	}
	t.Fatalf("the producer accepts notes up to %d bytes, we refuse from %d: our check is too strict", firstRefused+100, firstRefused)
}

// A produce failure is reported through OnFailure as soon as the producer
// reports it, not at the next Handle; a broker's MESSAGE_TOO_LARGE says
// which limit and how to fix it.
func TestOnFailureReportsAtOnce(t *testing.T) {
	t.Parallel()
	table := accountsTable()
	var prod fakeProducer
	failures := make(chan error, 2)
	p := New(newEntities(t, table, "accounts"), &prod, WithMaxMessageBytes(1<<20), OnFailure(func(err error) { failures <- err }))
	for i := range 2 {
		if err := p.handle(t.Context(), change(table, source.OpInsert, accountRow(int64(i), 1), nil), &countAck{}); err != nil {
			t.Fatal(err)
		}
	}
	prod.complete(0, kerr.MessageTooLarge)
	select {
	case err := <-failures:
		for _, s := range []string{"produce to accounts", "max.message.bytes", "kafka.max_message_bytes (1048576)", "--entity-name accounts"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("failure %q does not contain %q", err, s)
			}
		}
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Errorf("failure %v does not wrap MESSAGE_TOO_LARGE", err)
		}
	default:
		t.Fatal("OnFailure not called when the promise failed")
	}
	prod.complete(1, errors.New("second"))
	select {
	case err := <-failures:
		t.Fatalf("OnFailure called twice, second time with %v", err)
	default:
	}
}
