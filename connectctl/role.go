package connectctl

import (
	"context"
	"errors"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Assign creates a role assignment.
func (c *Client) Assign(ctx context.Context, req api.AssignmentRequest) (*api.RoleAssignment, error) {
	var a api.RoleAssignment
	err := c.do(ctx, http.MethodPost, api.RoleAssignmentsPath, req, &a)
	return &a, err
}

// Assignments lists role assignments ("" = every cluster).
func (c *Client) Assignments(ctx context.Context, cluster string) ([]api.RoleAssignment, error) {
	var l api.AssignmentList
	err := c.do(ctx, http.MethodGet, api.RoleAssignmentsPath+"?cluster="+url.QueryEscape(cluster), nil, &l)
	return l.Value, err
}

// Unassign removes a role assignment.
func (c *Client) Unassign(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, api.RoleAssignmentPath(id), nil, nil)
}

// DefineRole creates or replaces a custom role.
func (c *Client) DefineRole(ctx context.Context, name string, req api.RoleRequest) (*api.Role, error) {
	var r api.Role
	err := c.do(ctx, http.MethodPut, api.RoleDefinitionPath(name), req, &r)
	return &r, err
}

// Roles lists the role definitions, built-in first.
func (c *Client) Roles(ctx context.Context) ([]api.Role, error) {
	var l api.RoleList
	err := c.do(ctx, http.MethodGet, api.RoleDefinitionsPath, nil, &l)
	return l.Value, err
}

// managementRole reports whether role is assigned on the relay as a whole.
func managementRole(role string) bool {
	return role == api.RoleOwner || role == api.RoleContributor || role == api.RoleReader
}

// scope is where an assignment applies: "relay" (a management role),
// "cluster" or "cluster/namespace".
func scope(a api.RoleAssignment) string {
	switch {
	case a.Cluster == "":
		return "relay"
	case a.Namespace == "":
		return a.Cluster
	default:
		return a.Cluster + "/" + a.Namespace
	}
}

func roleCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "role", Short: "Role assignments and definitions that the relay and guard enforce (like az role assignment)"}
	var req api.AssignmentRequest
	var expires time.Duration
	assign := &cobra.Command{
		Use:   "assign --assignee <object id> --role <role> [--cluster <name> [--namespace <ns>]] [--expires 8h]",
		Short: "Grant a role to a user or group on a cluster or one namespace of it, or a management role on the relay",
		Long: `Grants a role to a user (object ID) or a group:

  a cluster role (Cluster User, Viewer, Writer, Admin, Cluster Admin, or a custom
  role) on --cluster, or on one --namespace of it; or

  a management role (Owner, Contributor, Reader) on the relay as a whole: leave
  out --cluster. Owner and Contributor may also connect to every cluster.

With --expires the assignment ends that long from now (just-in-time access):
the relay stops honouring it then and deletes it soon after.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case req.PrincipalID == "" || req.Role == "":
				return errors.New("--assignee and --role are required")
			case req.Cluster == "" && req.Namespace != "":
				return errors.New("--namespace needs --cluster")
			case req.Cluster == "" && !managementRole(req.Role):
				return fmt.Errorf("--cluster is required for role %q: only %s, %s and %s are assigned on the relay as a whole",
					req.Role, api.RoleOwner, api.RoleContributor, api.RoleReader)
			case expires < 0:
				return errors.New("--expires must not be negative")
			}
			r := req
			if expires > 0 {
				r.ExpiresAt = g.now().Add(expires).UTC()
			}
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			a, err := cl.Assign(cmd.Context(), r)
			if err != nil {
				return err
			}
			where := "the relay (management role)"
			if a.Cluster != "" {
				where = "cluster " + a.Cluster
				if a.Namespace != "" {
					where += ", namespace " + a.Namespace
				}
			}
			until := ""
			if !a.ExpiresAt.IsZero() {
				until = ", until " + stamp(a.ExpiresAt, g.now())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Assigned %s to %s %s on %s%s (assignment %s).\n", a.Role, strings.ToLower(a.PrincipalType), a.PrincipalID, where, until, a.ID)
			return nil
		},
	}
	f := assign.Flags()
	f.StringVar(&req.PrincipalID, "assignee", "", "the user's object ID (oid) or the group's ID")
	f.StringVar(&req.PrincipalType, "assignee-type", "User", "User or Group")
	f.StringVar(&req.Role, "role", "", "Cluster User, Viewer, Writer, Admin, Cluster Admin or a custom role (with --cluster); Owner, Contributor or Reader (without)")
	f.StringVar(&req.Cluster, "cluster", "", "the cluster; leave out for a management role")
	f.StringVar(&req.Namespace, "namespace", "", "limit the assignment to this namespace of --cluster")
	f.DurationVar(&expires, "expires", 0, "end the assignment this long from now, e.g. 8h (default: never)")

	var cluster, output string
	list := &cobra.Command{
		Use:   "list [--cluster <name>]",
		Short: "List role assignments with their scope and expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			as, err := cl.Assignments(cmd.Context(), cluster)
			if err != nil {
				return err
			}
			switch output {
			case "table", "":
				return printAssignments(cmd.OutOrStdout(), as, g.now())
			default:
				return printData(cmd.OutOrStdout(), output, api.AssignmentList{Value: as})
			}
		},
	}
	list.Flags().StringVar(&cluster, "cluster", "", "only this cluster's assignments")
	list.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a role assignment (guard's cache may keep the old decision for its TTL)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := cl.Unassign(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Role assignment %s removed.\n", args[0])
			return nil
		},
	}
	var def api.RoleRequest
	define := &cobra.Command{
		Use:   "define NAME --data-actions … [--not-data-actions …]",
		Short: "Create or replace a custom role",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			r, err := cl.DefineRole(cmd.Context(), args[0], def)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Role %q defined: %d data actions, %d not-data-actions.\n", r.Name, len(r.DataActions), len(r.NotDataActions))
			return nil
		},
	}
	define.Flags().StringSliceVar(&def.DataActions, "data-actions", nil, "allowed actions, e.g. "+api.ActionPrefix+"pods/read (wildcards *)")
	define.Flags().StringSliceVar(&def.NotDataActions, "not-data-actions", nil, "actions taken out of the allowed ones")
	define.Flags().StringVar(&def.Description, "description", "", "what the role is for")
	defs := &cobra.Command{
		Use:   "definitions",
		Short: "List role definitions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client(cmd)
			if err != nil {
				return err
			}
			rs, err := cl.Roles(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBUILT-IN\tACTIONS\tDESCRIPTION")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%v\t%d\t%s\n", r.Name, r.BuiltIn, len(r.DataActions), r.Description)
			}
			return tw.Flush()
		},
	}
	c.AddCommand(assign, list, remove, define, defs)
	return c
}

func printAssignments(w io.Writer, as []api.RoleAssignment, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tTYPE\tPRINCIPAL\tSCOPE\tEXPIRES")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Role, a.PrincipalType, a.PrincipalID, scope(a), expiry(a.ExpiresAt, now))
	}
	return tw.Flush()
}
