package command

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

type opts struct {
	addr  string
	level slog.Level
}

func (o *opts) Flags(fs *flag.FlagSet) { fs.StringVar(&o.addr, "listen", o.addr, "address") }

func (o *opts) Validate() error {
	if o.addr == "" {
		return errors.New("--listen is required")
	}
	return nil
}

func (o *opts) Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: o.level}))
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		runErr error
		code   int
		stderr string // a substring; "" means empty
		ran    bool
	}{
		{"ok", []string{"--listen=:1"}, nil, ExitOK, "", true},
		{"run fails", []string{"--listen=:1"}, errors.New("port taken"), ExitError, `msg="demo failed" err="port taken"`, true},
		{"invalid", nil, nil, ExitUsage, "demo: --listen is required\n", false},
		{"unknown flag", []string{"--nope"}, nil, ExitUsage, "flag provided but not defined: -nope", false},
		{"help", []string{"-h"}, nil, ExitOK, "Usage of demo", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, ran := &opts{}, false
			code := mainWith(t.Context(), "demo", tc.args, &stderr, o, func(ctx context.Context, log *slog.Logger) error {
				ran = true
				if ctx == nil || log == nil || o.addr != ":1" {
					t.Errorf("run called with ctx %v, log %v, options %+v", ctx, log, o)
				}
				return tc.runErr
			})
			if code != tc.code || ran != tc.ran {
				t.Errorf("exit code %d, ran %v; want %d, %v", code, ran, tc.code, tc.ran)
			}
			if got := stderr.String(); (tc.stderr == "") != (got == "") || !strings.Contains(got, tc.stderr) {
				t.Errorf("stderr %q, want %q", got, tc.stderr)
			}
		})
	}
}
