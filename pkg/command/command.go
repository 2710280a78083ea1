// Package command is the main of a server command: parse the flags into
// the options, check them, build the logger, and run until SIGINT or
// SIGTERM, with the exit codes every command shares.
//
//	func main() {
//		o := guard.NewOptions()
//		os.Exit(command.Main("guard", os.Args[1:], o, func(ctx context.Context, log *slog.Logger) error {
//			return guard.Run(ctx, o, log, nil)
//		}))
//	}
package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes of [Main].
const (
	ExitOK    = 0 // run returned nil (or -h asked for the usage)
	ExitError = 1 // run failed
	ExitUsage = 2 // the flags do not parse or do not validate
)

// Options are a command's settings, the way every Options struct of this
// repository is written.
type Options interface {
	// Flags registers the options on fs.
	Flags(fs *flag.FlagSet)
	// Validate reports every option that cannot work.
	Validate() error
	// Logger returns the logger the options select (--log-level,
	// --log-format), writing to w.
	Logger(w io.Writer) *slog.Logger
}

// Main parses args into o and validates them (an error goes to stderr
// prefixed with name, and Main returns ExitUsage), then calls run with the
// logger of o and a context that ends on SIGINT or SIGTERM. It returns the
// exit code for os.Exit: ExitOK, or ExitError when run fails (logged as
// "<name> failed").
func Main(name string, args []string, o Options, run func(ctx context.Context, log *slog.Logger) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mainWith(ctx, name, args, os.Stderr, o, run)
}

// mainWith is Main with the context and stderr given (tests).
func mainWith(ctx context.Context, name string, args []string, stderr io.Writer, o Options, run func(ctx context.Context, log *slog.Logger) error) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.Flags(fs)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return ExitOK
	} else if err != nil {
		return ExitUsage // the flag set printed the error and the usage
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return ExitUsage
	}
	log := o.Logger(stderr)
	if err := run(ctx, log); err != nil {
		log.Error(name+" failed", "err", err)
		return ExitError
	}
	return ExitOK
}
