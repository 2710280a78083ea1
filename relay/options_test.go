package relay

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	o := NewOptions()
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	o.Flags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Listen": ":8443", "DataDir": "relay-data", "ExternalURL": "https://localhost:8443",
		"StreamWindow": uint(4 << 20), "MaxStreams": 1024,
		"KeepAliveInterval": 15 * time.Second, "KeepAliveTimeout": 10 * time.Second,
		"ShutdownTimeout": 15 * time.Second, "Log.Level": "info", "Log.Format": "text",
		"CertLifetime": 90 * 24 * time.Hour, "RegistrationTokenTTL": time.Hour, "Location": "local", "OfflineAfter": 15 * time.Minute,
		"HeartbeatWriteInterval": 30 * time.Second,
	}
	got := map[string]any{
		"Listen": o.Listen, "DataDir": o.DataDir, "ExternalURL": o.ExternalURL,
		"StreamWindow": o.StreamWindow, "MaxStreams": o.MaxStreams,
		"KeepAliveInterval": o.KeepAliveInterval, "KeepAliveTimeout": o.KeepAliveTimeout,
		"ShutdownTimeout": o.ShutdownTimeout, "Log.Level": o.Log.Level, "Log.Format": o.Log.Format,
		"CertLifetime": o.CertLifetime, "RegistrationTokenTTL": o.RegistrationTokenTTL, "Location": o.Location, "OfflineAfter": o.OfflineAfter,
		"HeartbeatWriteInterval": o.HeartbeatWriteInterval,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("default %s = %v, want %v", k, got[k], v)
		}
	}
	if strings.Join(o.Hostnames, ",") != "localhost,127.0.0.1,::1" {
		t.Errorf("default hostnames = %v", o.Hostnames)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nope"}, "--listen"},
		{[]string{"--external-url", "http://x"}, "--external-url"},
		{[]string{"--tls-cert-file", "a.crt"}, "go together"},
		{[]string{"--stream-window", "1000"}, "--stream-window"},
		{[]string{"--max-streams", "0"}, "--max-streams"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--heartbeat-write-interval", "-1s"}, "--heartbeat-write-interval"},
		{[]string{"--heartbeat-write-interval", "15m"}, "--heartbeat-write-interval"},
		{[]string{"--offline-after", "20s", "--heartbeat-write-interval", "30s"}, "--heartbeat-write-interval"},
	} {
		o := NewOptions()
		fs := flag.NewFlagSet("relay", flag.ContinueOnError)
		o.Flags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Validate() = %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	o := NewOptions()
	o.ExternalURL = "https://relay.example:443"
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if !contains(o.Hostnames, "relay.example") {
		t.Errorf("external URL host not added to the certificate names: %v", o.Hostnames)
	}
	// A short --offline-after (tests) shortens the default write interval.
	o = NewOptions()
	o.OfflineAfter = 2 * time.Second
	if err := o.Validate(); err != nil || o.HeartbeatWriteInterval != time.Second {
		t.Errorf("--offline-after 2s: Validate() = %v, heartbeat write interval %s; want 1s", err, o.HeartbeatWriteInterval)
	}
}
