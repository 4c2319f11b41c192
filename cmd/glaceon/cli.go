package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/glaceon/glaceon/flyapi/version"
)

// Exit codes of the glaceon command.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one `glaceon` subcommand.
type command struct {
	name    string
	summary string
	run     func(env *cliEnv, args []string) error
}

// cliEnv holds a subcommand's streams, so tests run commands in-process.
type cliEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// usageError is a problem with the command line itself (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

func commands() []command {
	return []command{
		{name: "peer", summary: "create, list or remove Fly WireGuard peers (like `fly wireguard`)", run: runPeer},
		{name: "manager", summary: "run the admission webhook and the controllers", run: runManager},
		{name: "doctor", summary: "check the install, the FlyOrgs and FlyPeers, or one pod (`doctor pod NAME -n NS`)", run: runDoctor},
		{name: "inject", summary: "print a pod manifest as the webhook would inject it (offline, placeholder peer)", run: runInject},
		{name: "version", summary: "print the version and commit", run: func(env *cliEnv, _ []string) error {
			_, err := fmt.Fprintf(env.stdout, "glaceon %s\n", version.String())
			return err
		}},
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := &cliEnv{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return exitCode(stderr, c.run(env, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "glaceon: unknown command %q; run `glaceon help` for the list\n", args[0])
	return exitUsage
}

func exitCode(stderr io.Writer, err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errChecksFailed):
		// The results said what failed.
		return exitError
	}
	fmt.Fprintf(stderr, "glaceon: %v\n", err)
	var usage usageError
	if errors.As(err, &usage) {
		return exitUsage
	}
	return exitError
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: glaceon <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Environment: FLY_API_TOKEN (or FLY_ACCESS_TOKEN), FLY_API_BASE_URL (default https://api.fly.io).")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(env *cliEnv, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "Usage: %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and rejects stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q (flags only; see --help)", fs.Name(), strings.Join(fs.Args(), " "))
	}
	return nil
}
