package mgmtapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/httpjson"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

func etag(c *store.Cluster) string { return `"` + strconv.FormatInt(c.Version, 10) + `"` }

func (h *Handler) view(c *store.Cluster, withEvents bool) api.ConnectedCluster {
	status, _ := h.cfg.Status.Status(c)
	tags := c.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	v := api.ConnectedCluster{
		ID:         "/providers/clusterconnect/connectedClusters/" + c.Name,
		Name:       c.Name,
		Type:       "clusterconnect/connectedClusters",
		Location:   h.cfg.Location,
		Tags:       tags,
		Etag:       etag(c),
		SystemData: api.SystemData{CreatedAt: c.CreatedAt},
		Properties: api.ClusterProperties{
			ProvisioningState:                        "Succeeded",
			ConnectivityStatus:                       status,
			KubernetesVersion:                        c.Metadata.KubernetesVersion,
			AgentVersion:                             c.Metadata.AgentVersion,
			TotalNodeCount:                           c.Metadata.TotalNodeCount,
			TotalCoreCount:                           c.Metadata.TotalCoreCount,
			Distribution:                             c.Metadata.Distribution,
			Infrastructure:                           c.Metadata.Infrastructure,
			Agents:                                   agentRoles(c.Metadata.Agents),
			LastConnectivityTime:                     c.LastHeartbeat,
			ManagedIdentityCertificateExpirationTime: c.CertNotAfter,
			Tunnels:                                  h.cfg.Plane.Connected(c.Name),
			Replicas:                                 h.cfg.Plane.Replicas(c.Name),
			UID:                                      c.UID,
		},
	}
	if withEvents {
		for _, e := range c.Events {
			v.Properties.Events = append(v.Properties.Events, api.Event{Time: e.Time, From: e.From, To: e.To, Reason: e.Reason})
		}
	}
	return v
}

// listClusters answers GET /api/v1/clusters[?status=S][&tag=k=v…].
func (h *Handler) listClusters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want := map[string]string{}
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("tag filter %q: want tag=key=value", t))
			return
		}
		want[k] = v
	}
	statuses := q["status"]
	for _, st := range statuses {
		if !slices.Contains([]string{api.StatusConnecting, api.StatusConnected, api.StatusOffline, api.StatusExpired}, st) {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("status filter %q: want Connecting, Connected, Offline or Expired", st))
			return
		}
	}
	cs, err := h.cfg.Store.ListClusters(r.Context())
	if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	out := api.ClusterList{Value: []api.ConnectedCluster{}}
	for _, c := range cs {
		v := h.view(c, false)
		if len(statuses) > 0 && !slices.Contains(statuses, v.Properties.ConnectivityStatus) {
			continue
		}
		match := true
		for k, val := range want {
			if v.Tags[k] != val {
				match = false
			}
		}
		if match {
			out.Value = append(out.Value, v)
		}
	}
	slices.SortFunc(out.Value, func(a, b api.ConnectedCluster) int { return strings.Compare(a.Name, b.Name) })
	httpjson.Write(w, http.StatusOK, out)
}

func validTags(w http.ResponseWriter, tags map[string]string) bool {
	if len(tags) > 50 {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("%d tags: at most 50", len(tags)))
		return false
	}
	for k, v := range tags {
		if k == "" || len(k) > 512 || len(v) > 256 || strings.ContainsAny(k, "<>%&\\?/") {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("tag %q: names are 1-512 characters without <>%%&\\?/, values at most 256", k))
			return false
		}
	}
	return true
}

func (h *Handler) createCluster(w http.ResponseWriter, r *http.Request) {
	var req api.CreateRequest
	if !decode(w, r, &req, `{"name": "prod-eu", "tags": {"env": "prod"}}`) {
		return
	}
	if !api.ValidClusterName(req.Name) {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("cluster name %q is invalid: use lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters", req.Name))
		return
	}
	if !validTags(w, req.Tags) {
		return
	}
	ttl, ok := h.tokenTTL(w, req.TokenTTLSeconds)
	if !ok {
		return
	}
	token := secret.Random(32)
	now := h.cfg.Now()
	c := &store.Cluster{Name: req.Name, UID: newUID(), CreatedAt: now.UTC().Truncate(time.Second), Tags: req.Tags,
		RegistrationTokenHash: secret.Hash(token), RegistrationTokenExpiresAt: now.Add(ttl)}
	c.Status, _ = h.cfg.Status.Status(c)
	c.AddEvent(store.Event{Time: now.UTC(), From: "None", To: c.Status, Reason: "cluster registered"})
	if err := h.cfg.Store.CreateCluster(r.Context(), c); errors.Is(err, store.ErrExists) {
		apistatus.Error(w, http.StatusConflict, fmt.Sprintf("cluster %q already exists; delete it first or pick another name", req.Name))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	h.log.Info("cluster registered", "cluster", c.Name, "uid", c.UID)
	v := h.view(c, true)
	v.RegistrationToken, v.RegistrationTokenExpiresAt = token, c.RegistrationTokenExpiresAt
	w.Header().Set("ETag", v.Etag)
	httpjson.Write(w, http.StatusCreated, v)
}

func (h *Handler) tokenTTL(w http.ResponseWriter, seconds int) (time.Duration, bool) {
	if seconds < 0 || seconds > 7*24*3600 {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("tokenTTLSeconds %d: want 1 s to 7 days", seconds))
		return 0, false
	}
	if seconds == 0 {
		return h.cfg.RegistrationTokenTTL, true
	}
	return time.Duration(seconds) * time.Second, true
}

// newRegistrationToken issues a fresh one-time registration token, e.g. to
// re-register a cluster whose certificate expired. Earlier tokens stop working.
func (h *Handler) newRegistrationToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if r.ContentLength != 0 && !decode(w, r, &req, `{"tokenTTLSeconds": 3600}`) {
		return
	}
	ttl, ok := h.tokenTTL(w, req.TokenTTLSeconds)
	if !ok {
		return
	}
	token := secret.Random(32)
	now := h.cfg.Now()
	c, err := h.cfg.Store.UpdateCluster(r.Context(), r.PathValue("name"), func(c *store.Cluster) error {
		c.RegistrationTokenHash, c.RegistrationTokenExpiresAt, c.RegistrationTokenUsed = secret.Hash(token), now.Add(ttl), false
		return nil
	})
	if !h.storeOK(w, r, err) {
		return
	}
	h.log.Info("registration token issued", "cluster", c.Name, "expires", c.RegistrationTokenExpiresAt)
	v := h.view(c, false)
	v.RegistrationToken, v.RegistrationTokenExpiresAt = token, c.RegistrationTokenExpiresAt
	httpjson.Write(w, http.StatusOK, v)
}

// storeOK answers a store error (404 for an unknown cluster, 412 for a
// stale etag) and reports whether there was none.
func (h *Handler) storeOK(w http.ResponseWriter, r *http.Request, err error) bool {
	var pf *preconditionFailed
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not registered with this relay", r.PathValue("name")))
	case errors.As(err, &pf):
		apistatus.Write(w, http.StatusPreconditionFailed, api.ReasonPreconditionFailed, pf.Error())
	default:
		h.storeUnavailable(w, err)
	}
	return false
}

type preconditionFailed struct{ name, sent, now string }

func (e *preconditionFailed) Error() string {
	return fmt.Sprintf("cluster %s changed since you read it (If-Match %s, etag now %s): get it again and retry", e.name, e.sent, e.now)
}

// checkIfMatch enforces an If-Match header against the cluster's etag.
func checkIfMatch(r *http.Request, c *store.Cluster) error {
	im := r.Header.Get("If-Match")
	if im == "" || im == "*" {
		return nil
	}
	for _, e := range strings.Split(im, ",") {
		if strings.TrimSpace(e) == etag(c) {
			return nil
		}
	}
	return &preconditionFailed{c.Name, im, etag(c)}
}

func (h *Handler) getCluster(w http.ResponseWriter, r *http.Request) {
	c, ok := h.lookup(w, r)
	if ok {
		v := h.view(c, true)
		w.Header().Set("ETag", v.Etag)
		httpjson.Write(w, http.StatusOK, v)
	}
}

func (h *Handler) lookup(w http.ResponseWriter, r *http.Request) (*store.Cluster, bool) {
	c, err := h.cfg.Store.GetCluster(r.Context(), r.PathValue("name"))
	if !h.storeOK(w, r, err) {
		return nil, false
	}
	return c, true
}

// patchCluster replaces a cluster's tags, honouring If-Match.
func (h *Handler) patchCluster(w http.ResponseWriter, r *http.Request) {
	var req api.PatchRequest
	if !decode(w, r, &req, `{"tags": {"env": "prod"}}`) || !validTags(w, req.Tags) {
		return
	}
	c, err := h.cfg.Store.UpdateCluster(r.Context(), r.PathValue("name"), func(c *store.Cluster) error {
		if err := checkIfMatch(r, c); err != nil {
			return err
		}
		c.Tags = req.Tags
		return nil
	})
	if !h.storeOK(w, r, err) {
		return
	}
	v := h.view(c, false)
	w.Header().Set("ETag", v.Etag)
	httpjson.Write(w, http.StatusOK, v)
}

func (h *Handler) deleteCluster(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.Header.Get("If-Match") != "" {
		c, err := h.cfg.Store.GetCluster(r.Context(), name)
		if err == nil {
			err = checkIfMatch(r, c)
		}
		if !h.storeOK(w, r, err) {
			return
		}
	}
	// The cluster's role assignments go with it (see Store.DeleteCluster):
	// a cluster created later under this name inherits none.
	if err := h.cfg.Store.DeleteCluster(r.Context(), name); !h.storeOK(w, r, err) {
		return
	}
	h.changed()
	h.cfg.Plane.CloseTunnels(name, "cluster deleted; its certificates are revoked")
	w.WriteHeader(http.StatusNoContent)
}

// Kubeconfig builds the kubeconfig for a cluster: the relay URL for it
// (/clusters/<name>), the relay's CA, and a context and user named after the
// cluster. With a hostSuffix it also names the cluster by the TLS server
// name <name>.<hostSuffix> (no DNS needed), so clients that drop the server
// URL's path (kubectl --raw before 1.34, kubectl proxy) still reach it, and
// clients that ignore tls-server-name reach it by path. The user entry
// carries no credential; the caller adds theirs (connectctl kubeconfig).
func Kubeconfig(externalURL string, caPEM []byte, name, hostSuffix string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cl := clientcmdapi.NewCluster()
	cl.Server = api.ClusterServerURL(externalURL, name)
	if hostSuffix != "" {
		cl.TLSServerName = name + "." + hostSuffix
	}
	cl.CertificateAuthorityData = caPEM
	cfg.Clusters[name] = cl
	cfg.AuthInfos[name] = clientcmdapi.NewAuthInfo()
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = name, name
	cfg.Contexts[name] = ctx
	cfg.CurrentContext = name
	return cfg
}

// kubeconfig answers a cluster's kubeconfig to a caller that may read
// clusters, or may connect to this one (Arc's listClusterUserCredential: a
// user with only a role on the cluster gets its kubeconfig too). Others get
// the same 403 for an unknown and a forbidden cluster.
func (h *Handler) kubeconfig(w http.ResponseWriter, r *http.Request) {
	if !access.MgmtAllows(callerRoles(r), access.OpRead) {
		p := caller(r)
		g, err := access.CanConnect(r.Context(), h.cfg.Store, r.PathValue("name"), p, h.cfg.Now())
		if err != nil {
			h.storeUnavailable(w, err)
			return
		}
		if !g.Allowed {
			apistatus.Write(w, http.StatusForbidden, api.ReasonForbidden, fmt.Sprintf("%s %s may not connect to cluster %q, or no such cluster is registered: ask an Owner for a role assignment on it", p.Kind, p.ID, r.PathValue("name")))
			return
		}
	}
	c, ok := h.lookup(w, r)
	if !ok {
		return
	}
	b, err := clientcmd.Write(*Kubeconfig(h.cfg.ExternalURL, h.cfg.CAPEM, c.Name, h.cfg.HostSuffix))
	if err != nil {
		apistatus.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(b)
}

// agentRoles is the wire form of the stored role health.
func agentRoles(rs []store.AgentRole) []api.AgentRole {
	var out []api.AgentRole
	for _, r := range rs {
		out = append(out, api.AgentRole{Role: r.Role, Version: r.Version, Replicas: r.Replicas,
			ReadyReplicas: r.ReadyReplicas, Ready: r.Ready, LastError: r.LastError})
	}
	return out
}
