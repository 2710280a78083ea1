package limits

import (
	"flag"
	"math"
	"strings"
	"testing"
	"time"
)

// The defaults are part of the relay's contract: pin them.
func TestDefaults(t *testing.T) {
	want := Config{
		CallerRate: 100, CallerBurst: 400, CallerConcurrent: 400, CallerLongRunning: 100,
		ClusterRate: 1000, ClusterBurst: 2000, ClusterConcurrent: 2000, ClusterLongRunning: 1000,
		IdleAfter: 10 * time.Minute,
	}
	if got := Defaults(); got != want {
		t.Errorf("Defaults() = %+v, want %+v", got, want)
	}
	if got := (Config{}).withDefaults(); got != want {
		t.Errorf("zero Config = %+v, want the defaults", got)
	}
	var c Config
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	c.Flags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if c != want {
		t.Errorf("flags without arguments = %+v, want the defaults", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

func TestFlags(t *testing.T) {
	c := Config{CallerBurst: 7} // a value set before Flags is the flag's default
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	c.Flags(fs)
	err := fs.Parse([]string{
		"--limit-caller-rate=5", "--limit-caller-concurrent=-1", "--limit-caller-long-running=3",
		"--limit-cluster-rate=50.5", "--limit-cluster-burst=60", "--limit-cluster-concurrent=70", "--limit-cluster-long-running=80",
		"--limit-idle-after=1m",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{CallerRate: 5, CallerBurst: 7, CallerConcurrent: -1, CallerLongRunning: 3,
		ClusterRate: 50.5, ClusterBurst: 60, ClusterConcurrent: 70, ClusterLongRunning: 80, IdleAfter: time.Minute}
	if c != want {
		t.Errorf("parsed %+v, want %+v", c, want)
	}
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for _, f := range []string{"limit-caller-burst", "limit-cluster-rate", "negative = unlimited", "(default 7)", "(default 1000)"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("help does not mention %q:\n%s", f, help.String())
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{CallerRate: math.NaN()}, "--limit-caller-rate"},
		{Config{ClusterRate: math.Inf(1)}, "--limit-cluster-rate"},
		{Config{IdleAfter: -time.Second}, "--limit-idle-after"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %s", tc.c, err, tc.want)
		}
	}
	c := unlimited()
	if err := c.Validate(); err != nil {
		t.Errorf("negative limits (unlimited): %v", err)
	}
}
