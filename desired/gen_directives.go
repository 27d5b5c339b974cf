//go:build ignore

// gen_directives writes directives_gen.go, the directives systemd knows per
// section, from this machine's systemd:
//
//	go generate ./desired/   (or: cd desired && go run gen_directives.go)
//
// TestDirectivesUpToDate fails when the committed file differs from what
// the installed systemd prints.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"

	"resil.dev/resil/desired/internal/directivegen"
)

func main() {
	bin := flag.String("systemd", "/lib/systemd/systemd", "the systemd binary to ask")
	out := flag.String("o", "directives_gen.go", "output file")
	flag.Parse()
	if err := run(*bin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen_directives:", err)
		os.Exit(1)
	}
}

func run(bin, out string) error {
	ver, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", bin, err)
	}
	version, err := directivegen.Version(ver)
	if err != nil {
		return err
	}
	dump, err := exec.Command(bin, "--dump-configuration-items").Output()
	if err != nil {
		return fmt.Errorf("%s --dump-configuration-items: %w", bin, err)
	}
	src, err := directivegen.Generate(dump, version)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, src, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
