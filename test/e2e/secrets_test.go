//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/replicator/replicator/certtest"
	"github.com/replicator/replicator/pgcluster/pgtest"
)

// TestSecretsStayOutOfOutput runs replicator at debug level with secrets in
// source.url (password and sslpassword), in the environment (the embedded
// broker's SASL password) and in the file (the embedded registry's
// password): a run, a check, a run that fails to connect and one whose URL
// does not parse. No secret and no row value appears in any output. The
// embedded broker and registry (over TLS) require their credentials: a client without
// them gets nothing, one with them reads the records.
func TestSecretsStayOutOfOutput(t *testing.T) {
	const (
		pgPassword       = "pg-url-secret-Q1"
		sslPassword      = "ssl-key-secret-Q2"
		kafkaPassword    = "kafka-env-secret-Q3"
		registryPassword = "registry-file-secret-Q4"
		rowSnapshot      = "row-value-snapshot-Q5"
		rowStream        = "row-value-stream-Q6"
	)
	secrets := []string{pgPassword, sslPassword, kafkaPassword, registryPassword, rowSnapshot, rowStream}

	pg := pgtest.Start(t)
	conn := connect(t, pg)
	mustExec(t, conn, `CREATE TABLE vault (id int PRIMARY KEY, payload text NOT NULL)`)
	mustExec(t, conn, `INSERT INTO vault VALUES (1, $1)`, rowSnapshot)

	// The cluster trusts local connections: the password is sent, not needed.
	withSecrets := func(database string) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", pgPassword),
			Host: "127.0.0.1:" + strconv.Itoa(pg.Port()), Path: "/" + database,
			RawQuery: "sslmode=disable&sslpassword=" + sslPassword}
		return u.String()
	}
	dataDir := t.TempDir()
	brokerAddr, registryAddr := freeAddr(t), freeAddr(t)
	certFile, keyFile, caPool := certtest.SelfSigned(t, "e2e registry")
	writeConfig := func(name, sourceURL string) string {
		path := filepath.Join(dataDir, name)
		cfg := fmt.Sprintf(`data_dir: %q
log: {level: debug}
source: {url: %q, status_interval: 100ms}
kafka:
  listen: %q
  partitions: 1
  sasl: {mechanism: SCRAM-SHA-256, username: replicator}
  tls: {enabled: true, cert_file: %q, key_file: %q}
registry: {listen: %q, username: replicator, password: %q, cert_file: %q, key_file: %q, ca_file: %q}
entities: [{table: vault}]
`, filepath.Join(dataDir, "data"), sourceURL, brokerAddr, certFile, keyFile, registryAddr, registryPassword, certFile, keyFile, certFile)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	env := append(os.Environ(), "REPLICATOR_KAFKA_SASL_PASSWORD="+kafkaPassword)
	var outputs []string

	good := writeConfig("good.yaml", withSecrets("postgres"))
	p := startReplicatorEnv(t, env, "run", "--config", good)
	waitSlot(t, conn, "replicator", p)
	mustExec(t, conn, `INSERT INTO vault VALUES (2, $1)`, rowStream)
	waitCaughtUp(t, conn, "replicator", p)

	// The broker, over TLS only: nothing without credentials, both records
	// with them.
	brokerTLS := kgo.DialTLSConfig(&tls.Config{RootCAs: caPool})
	anon, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr), kgo.RequestRetries(0), brokerTLS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = kadm.NewClient(anon).ListEndOffsets(ctx, "vault")
	cancel()
	anon.Close()
	if err == nil {
		t.Errorf("a client without SASL credentials read the topic's offsets")
	}
	if n := countRecords(t, brokerAddr, "vault", brokerTLS, kgo.SASL(scram.Auth{User: "replicator", Pass: kafkaPassword}.AsSha256Mechanism())); n != 2 {
		t.Errorf("records read with credentials: got %d, want 2", n)
	}
	// The registry, over HTTPS only: 401 without credentials, the subjects
	// with them.
	if resp, err := http.Get("http://" + registryAddr + "/subjects"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP to the registry: got 200")
		}
	}
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	for _, auth := range []bool{false, true} {
		req, err := http.NewRequest(http.MethodGet, "https://"+registryAddr+"/subjects", nil)
		if err != nil {
			t.Fatal(err)
		}
		want := http.StatusUnauthorized
		if auth {
			req.SetBasicAuth("replicator", registryPassword)
			want = http.StatusOK
		}
		resp, err := httpsClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /subjects (credentials %v): got %d, want %d", auth, resp.StatusCode, want)
		}
	}
	p.stop(t)
	waitSlotReleased(t, conn, "replicator")
	outputs = append(outputs, "run:\n"+p.output.String())

	check := exec.Command(replicatorBinary(t), "check", "--config", good)
	check.Env = env
	out, err := check.CombinedOutput()
	if err != nil {
		t.Errorf("check failed: %v\n%s", err, out)
	}
	outputs = append(outputs, "check:\n"+string(out))

	for name, sourceURL := range map[string]string{
		"no-such-db.yaml": withSecrets("no_such_db"),
		"unparsable.yaml": strings.Replace(withSecrets("postgres"), "@", ":"+pgPassword+"/x@", 1),
	} {
		for _, cmd := range []string{"run", "check"} {
			c := exec.Command(replicatorBinary(t), cmd, "--config", writeConfig(name, sourceURL))
			c.Env = env
			out, err := c.CombinedOutput()
			if err == nil {
				t.Errorf("%s with %s: succeeded\n%s", cmd, name, out)
			}
			outputs = append(outputs, cmd+" "+name+":\n"+string(out))
		}
	}

	for _, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("output contains %q:\n%s", s, out)
			}
		}
	}
	if !strings.Contains(strings.Join(outputs, "\n"), "level=DEBUG") {
		t.Errorf("no debug line in any output: the test did not run at debug level")
	}
}

// countRecords reads a topic from the start to its end with the given
// client options (credentials) and returns how many records it holds.
func countRecords(t *testing.T, brokers, topic string, opts ...kgo.Opt) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	var want int64
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	n := 0
	for int64(n) < want {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume %s: %v", topic, err)
		}
		n += fs.NumRecords()
	}
	return n
}
