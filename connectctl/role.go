package connectctl

import (
	"context"
	"fmt"
	"github.com/clusterconnect/clusterconnect/pkg/api"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

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

func roleCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "role", Short: "Role assignments and definitions that guard enforces (like az role assignment)"}
	var req api.AssignmentRequest
	assign := &cobra.Command{
		Use:   "assign --assignee <object id> --role <role> --cluster <name> [--namespace <ns>]",
		Short: "Grant a role to a user or group on a cluster, or on one namespace of it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			a, err := cl.Assign(cmd.Context(), req)
			if err != nil {
				return err
			}
			scope := "cluster " + a.Cluster
			if a.Namespace != "" {
				scope += ", namespace " + a.Namespace
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Assigned %s to %s %s on %s (assignment %s).\n", a.Role, strings.ToLower(a.PrincipalType), a.PrincipalID, scope, a.ID)
			return nil
		},
	}
	f := assign.Flags()
	f.StringVar(&req.PrincipalID, "assignee", "", "the user's object ID (oid) or the group's ID")
	f.StringVar(&req.PrincipalType, "assignee-type", "User", "User or Group")
	f.StringVar(&req.Role, "role", "", "Viewer, Writer, Admin, Cluster Admin, or a custom role")
	f.StringVar(&req.Cluster, "cluster", "", "the cluster")
	f.StringVar(&req.Namespace, "namespace", "", "limit the assignment to this namespace")

	var cluster string
	list := &cobra.Command{
		Use:   "list [--cluster <name>]",
		Short: "List role assignments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			as, err := cl.Assignments(cmd.Context(), cluster)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tTYPE\tPRINCIPAL\tCLUSTER\tNAMESPACE")
			for _, a := range as {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Role, a.PrincipalType, a.PrincipalID, a.Cluster, orDash(a.Namespace))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&cluster, "cluster", "", "only this cluster's assignments")
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a role assignment (guard's cache may keep the old decision for its TTL)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.client()
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
			cl, err := g.client()
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
			cl, err := g.client()
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
