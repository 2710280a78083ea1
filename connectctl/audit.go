package connectctl

import (
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func auditCmd(g *globals) *cobra.Command {
	var q AuditQuery
	var since, output string
	c := &cobra.Command{
		Use:   "audit [--cluster C] [--user U] [--since 1h|RFC3339] [--limit N]",
		Short: "Read the relay's audit log: who called which cluster, what, with what result",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since != "" {
				t, err := parseSince(since, g.now())
				if err != nil {
					return err
				}
				q.Since = t
			}
			if q.Limit < 0 {
				return fmt.Errorf("--limit %d: must not be negative", q.Limit)
			}
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			recs, err := cl.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			switch output {
			case "table", "":
				return printAudit(cmd.OutOrStdout(), recs)
			default:
				return printData(cmd.OutOrStdout(), output, api.AuditList{Value: recs})
			}
		},
	}
	f := c.Flags()
	f.StringVar(&q.Cluster, "cluster", "", "only calls to this cluster")
	f.StringVar(&q.User, "user", "", "only calls of this principal (object ID, user name or token ID)")
	f.StringVar(&since, "since", "", "only records this recent (a duration, e.g. 1h) or since this time (RFC 3339)")
	f.IntVar(&q.Limit, "limit", 0, "at most this many records (default: the relay's)")
	f.StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return c
}

// parseSince reads --since: a duration back from now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration (1h, 30m) or an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	return t, nil
}

// principalName is who made an audited call, short: "admin",
// "user:dana@contoso.example", "token:ci"; "-" when unauthenticated.
func principalName(p api.Principal, impersonate string) string {
	var s string
	switch {
	case p.Kind == "":
		s = "-"
	case p.Kind == api.PrincipalKindAdmin:
		s = "admin"
	case p.Name != "":
		s = p.Kind + ":" + p.Name
	default:
		s = p.Kind + ":" + p.ID
	}
	if impersonate != "" {
		s += " (as " + impersonate + ")"
	}
	return s
}

func printAudit(w io.Writer, recs []api.AuditRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TIME\tPRINCIPAL\tCLUSTER\tMETHOD\tPATH\tSTATUS\tBYTES IN/OUT\tDURATION\tCLIENT")
	for _, r := range recs {
		status := fmt.Sprint(r.Status)
		if r.Reason != "" {
			status += " " + r.Reason
		}
		if r.Kind == api.AuditSession && r.Event != "" {
			status += " (" + r.Event + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339), principalName(r.Principal, r.Impersonate),
			orDash(r.Cluster), r.Method, r.Path, status, r.BytesIn, r.BytesOut, duration(r.DurationMS), orDash(r.Client))
	}
	return tw.Flush()
}

// duration is a call's duration, rounded to what is worth reading.
func duration(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}
