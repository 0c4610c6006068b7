package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// Profile files written by `replicator run|sink|rebuild --profile-dir`.
const (
	cpuProfileFile    = "cpu.pprof"
	allocsProfileFile = "allocs.pprof"
)

// withProfile gives cmd the hidden --profile-dir flag: a diagnostic for
// developers, not a setting (docs/OPERATIONS.md, "Profiling"). The
// profiles cover the whole command and are written when it returns.
func withProfile(cmd *cobra.Command) *cobra.Command {
	runE := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) (err error) {
		if dir, _ := cmd.Flags().GetString("profile-dir"); dir != "" {
			stop, err := startProfiles(dir)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, stop()) }()
		}
		return runE(cmd, args)
	}
	cmd.Flags().String("profile-dir", "", "write cpu.pprof and allocs.pprof of this command into this directory when it exits")
	_ = cmd.Flags().MarkHidden("profile-dir")
	return cmd
}

// startProfiles starts a CPU profile into dir and returns the function that
// stops it and writes the allocation profile (every allocation since the
// process started, sampled: `go tool pprof -sample_index=alloc_space`).
// It is for finding where `replicator run`, `sink` or `rebuild` spends its time and memory
// (docs/OPERATIONS.md, "Profiling"); the CPU profiler is process-wide, so
// only one may run at a time.
func startProfiles(dir string) (stop func() error, err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("--profile-dir %s: %w", dir, err)
	}
	cpuPath := filepath.Join(dir, cpuProfileFile)
	f, err := os.Create(cpuPath)
	if err != nil {
		return nil, fmt.Errorf("--profile-dir: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--profile-dir: start CPU profile %s: %w", cpuPath, err)
	}
	return func() error {
		pprof.StopCPUProfile()
		errs := []error{f.Close()}
		errs = append(errs, writeProfile("allocs", filepath.Join(dir, allocsProfileFile)))
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("--profile-dir: write profiles: %w", err)
		}
		return nil
	}, nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("%s profile: %w", name, err)
	}
	return f.Close()
}
