// Package logging builds the slog.Logger the commands hand to their packages
// from --log-level and --log-format.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Options select the level and format.
type Options struct {
	Level  string // debug, info, warn, error
	Format string // text, json
}

// Defaults: info, text.
func Defaults() Options { return Options{Level: "info", Format: "text"} }

// Flags registers --log-level and --log-format.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Level, "log-level", o.Level, "debug, info, warn or error")
	fs.StringVar(&o.Format, "log-format", o.Format, "text or json")
}

// Validate reports an unknown level or format.
func (o *Options) Validate() error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.Level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.Level)
	}
	if o.Format != "text" && o.Format != "json" {
		return fmt.Errorf("--log-format %q: want text or json", o.Format)
	}
	return nil
}

// New returns a logger writing to w.
func (o *Options) New(w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(o.Level))
	ho := &slog.HandlerOptions{Level: l}
	if o.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}
