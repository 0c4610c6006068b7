package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Set by the linker in `make build` (-ldflags "-X main.version=… -X
// main.buildDate=…"); empty in a plain `go build` or `go install`, which
// take what they can from the module's build info instead. They are the
// only package-level variables: constants the linker writes.
var (
	version   string
	buildDate string
)

// versionInfo is what `replicator version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	CommitAt  string `json:"commit_time,omitempty"`
	BuildDate string `json:"build_date,omitempty"`
	GoVersion string `json:"go_version"`
}

// buildVersion reads the version from the linker flags and from the build
// info Go embeds in every binary: the module version when installed with
// `go install …@vX`, the VCS revision, its time and whether the tree was
// modified when built from a checkout (go build -buildvcs).
func buildVersion(bi *debug.BuildInfo, linkVersion, linkDate string) versionInfo {
	v := versionInfo{Version: linkVersion, BuildDate: linkDate, GoVersion: "unknown"}
	if bi != nil {
		v.GoVersion = bi.GoVersion
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.CommitAt = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	return v
}

// String is the one-line form of `replicator --version`.
func (v versionInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "replicator %s", v.Version)
	if v.Commit != "" {
		fmt.Fprintf(&b, " commit %s", v.Commit)
		if v.Modified {
			b.WriteString(" (modified)")
		}
	}
	if v.CommitAt != "" {
		fmt.Fprintf(&b, " committed %s", v.CommitAt)
	}
	if v.BuildDate != "" {
		fmt.Fprintf(&b, " built %s", v.BuildDate)
	}
	fmt.Fprintf(&b, " %s", v.GoVersion)
	return b.String()
}

func currentVersion() versionInfo {
	bi, _ := debug.ReadBuildInfo()
	return buildVersion(bi, version, buildDate)
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := currentVersion()
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			_, err := fmt.Fprintln(stdout, v)
			return err
		},
	}
	cmd.Flags().Bool("json", false, "print as JSON")
	return cmd
}
