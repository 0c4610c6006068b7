package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	t.Parallel()
	installed := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}}
	checkout := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "82c1719abc"}, {Key: "vcs.time", Value: "2026-12-06T20:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	for _, tt := range []struct {
		name       string
		bi         *debug.BuildInfo
		link, date string
		want       versionInfo
		line       string
	}{
		{name: "go install of a tag", bi: installed,
			want: versionInfo{Version: "v1.4.0", GoVersion: "go1.26.8"},
			line: "replicator v1.4.0 go1.26.8"},
		{name: "go build in a modified checkout", bi: checkout,
			want: versionInfo{Version: "devel", Commit: "82c1719abc", Modified: true, CommitAt: "2026-12-06T20:00:00Z", GoVersion: "go1.26.8"},
			line: "replicator devel commit 82c1719abc (modified) committed 2026-12-06T20:00:00Z go1.26.8"},
		{name: "make build", bi: checkout, link: "v1.5.0-3-g82c1719", date: "2026-12-06T21:00:00Z",
			want: versionInfo{Version: "v1.5.0-3-g82c1719", Commit: "82c1719abc", Modified: true, CommitAt: "2026-12-06T20:00:00Z", BuildDate: "2026-12-06T21:00:00Z", GoVersion: "go1.26.8"},
			line: "replicator v1.5.0-3-g82c1719 commit 82c1719abc (modified) committed 2026-12-06T20:00:00Z built 2026-12-06T21:00:00Z go1.26.8"},
		{name: "no build info", bi: nil, want: versionInfo{Version: "devel", GoVersion: "unknown"}, line: "replicator devel unknown"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := buildVersion(tt.bi, tt.link, tt.date)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.line {
				t.Errorf("got line %q, want %q", got.String(), tt.line)
			}
		})
	}
}

// Both spellings print the running binary's Go version; --json is
// machine-readable.
func TestVersionCommand(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(out, "replicator ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("%v printed %q, want replicator <version> … %s", args, out, runtime.Version())
		}
	}
	out, err := runCLI(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.GoVersion != runtime.Version() || v.Version == "" {
		t.Errorf("version --json printed %q (%v), want JSON with version and go_version %s", out, err, runtime.Version())
	}
}

// make build's linker flags reach the binary.
func TestMakeBuildStampsVersion(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not installed: install it (apt-get install make) to test the Makefile's version stamping")
	}
	bin := filepath.Join(t.TempDir(), "replicator")
	cmd := exec.Command("make", "-C", "../..", "build", "BIN="+bin, "VERSION=v9.9.9-test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if !strings.HasPrefix(string(out), "replicator v9.9.9-test ") || !strings.Contains(string(out), " built ") {
		t.Errorf("--version of make build printed %q, want the stamped version and build date", out)
	}
}
