package mgmtapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/pkg/api"
	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/relay/access"
	"github.com/clusterconnect/clusterconnect/relay/audit"
	"github.com/clusterconnect/clusterconnect/relay/clusterca"
	"github.com/clusterconnect/clusterconnect/relay/httpjson"
	"github.com/clusterconnect/clusterconnect/relay/secret"
	"github.com/clusterconnect/clusterconnect/relay/store"
)

func (h *Handler) whoami(w http.ResponseWriter, r *http.Request) {
	roles := callerRoles(r)
	if roles == nil {
		roles = []string{}
	}
	httpjson.Write(w, http.StatusOK, api.WhoAmI{Principal: caller(r), Roles: roles})
}

func tokenView(t *store.APIToken) api.APIToken {
	return api.APIToken{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, CreatedBy: t.CreatedBy}
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.APITokenRequest
	if !decode(w, r, &req, `{"name": "ci-deploy", "role": "Reader", "expiresInSeconds": 86400}`) {
		return
	}
	switch {
	case req.Name == "" || len(req.Name) > 128 || strings.ContainsAny(req.Name, "\n\r\t"):
		apistatus.Error(w, http.StatusBadRequest, "name is required: 1-128 characters naming what the token is for, e.g. ci-deploy")
		return
	case !access.IsManagement(req.Role):
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("role %q: an API token holds a management role: Owner, Contributor or Reader", req.Role))
		return
	case !access.AtMost(req.Role, access.Highest(callerRoles(r))):
		apistatus.Write(w, http.StatusForbidden, api.ReasonForbidden, fmt.Sprintf("you hold %s; an API token can have your role or a lesser one, not %s", strings.Join(callerRoles(r), ", "), req.Role))
		return
	case req.ExpiresInSeconds < 0:
		apistatus.Error(w, http.StatusBadRequest, "expiresInSeconds must be positive (or 0 for the default of "+h.cfg.TokenTTL.String()+")")
		return
	}
	ttl := h.cfg.TokenTTL
	if req.ExpiresInSeconds > 0 {
		ttl = time.Duration(req.ExpiresInSeconds) * time.Second
	}
	if ttl > h.cfg.MaxTokenTTL {
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("an API token may live at most %s on this relay; ask for less", h.cfg.MaxTokenTTL))
		return
	}
	// An API token never outlives the credential that made it, nor the
	// (time-bound) assignment that gives its creator the role.
	now := h.cfg.Now()
	if exp := callerExpires(r); !exp.IsZero() && now.Add(ttl).After(exp) && caller(r).Kind == api.PrincipalKindToken {
		ttl = exp.Sub(now)
	}
	if until, ok, err := access.RoleUntil(r.Context(), h.cfg.Store, caller(r), req.Role, now); err != nil {
		h.storeUnavailable(w, err)
		return
	} else if ok && !until.IsZero() && now.Add(ttl).After(until) {
		ttl = until.Sub(now)
	}
	b := make([]byte, 8)
	rand.Read(b)
	t := &store.APIToken{ID: hex.EncodeToString(b), Name: req.Name, Role: req.Role, CreatedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), CreatedBy: access.PrincipalRef(caller(r))}
	tok := api.APITokenPrefix + t.ID + "_" + secret.Random(32)
	t.Hash = secret.Hash(tok)
	if err := h.cfg.Store.CreateToken(r.Context(), t); err != nil {
		h.storeUnavailable(w, err)
		return
	}
	h.log.Info("API token created", "id", t.ID, "name", t.Name, "role", t.Role, "expires", t.ExpiresAt, "by", t.CreatedBy)
	v := tokenView(t)
	v.Token = tok
	httpjson.Write(w, http.StatusCreated, v)
}

func callerExpires(r *http.Request) time.Time {
	p, _ := r.Context().Value(callerKey{}).(principal)
	return p.expires
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := h.cfg.Store.ListTokens(r.Context())
	if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	slices.SortFunc(ts, func(a, b *store.APIToken) int { return a.CreatedAt.Compare(b.CreatedAt) })
	out := api.TokenList{Value: make([]api.APIToken, 0, len(ts))}
	now := h.cfg.Now()
	for _, t := range ts {
		if now.Before(t.ExpiresAt) {
			out.Value = append(out.Value, tokenView(t))
		}
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (h *Handler) getToken(w http.ResponseWriter, r *http.Request) {
	t, err := h.cfg.Store.GetToken(r.Context(), r.PathValue("id"))
	if err == nil && t.Expired(h.cfg.Now()) {
		err = store.ErrNotFound // as the list: expired tokens are gone
	}
	if errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("API token %q does not exist (revoked or expired?): connectctl tokens list", r.PathValue("id")))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, tokenView(t))
}

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, err := h.cfg.Store.GetToken(r.Context(), id)
	if err == nil && !access.AtMost(t.Role, access.Highest(callerRoles(r))) {
		apistatus.Write(w, http.StatusForbidden, api.ReasonForbidden, fmt.Sprintf("API token %s holds %s; only a caller with that role may revoke it", id, t.Role))
		return
	}
	if err == nil {
		err = h.cfg.Store.DeleteToken(r.Context(), id)
	}
	if errors.Is(err, store.ErrNotFound) {
		apistatus.Error(w, http.StatusNotFound, fmt.Sprintf("API token %q does not exist (revoked or expired?): connectctl tokens list", id))
		return
	} else if err != nil {
		h.storeUnavailable(w, err)
		return
	}
	h.changed()
	h.log.Info("API token revoked", "id", id, "by", access.PrincipalRef(caller(r)))
	w.WriteHeader(http.StatusNoContent)
}

// clientCertificate issues the caller a short-lived relay client
// certificate: token mode's relay identity, presented beside a bearer
// token meant for the cluster's API server. It lives at most
// ClientCertLifetime and never longer than the credential that asked for it.
func (h *Handler) clientCertificate(w http.ResponseWriter, r *http.Request) {
	var req api.ClientCertificateRequest
	if !decode(w, r, &req, `{"csr": "-----BEGIN CERTIFICATE REQUEST-----\n…"}`) {
		return
	}
	csr, err := clusterca.ParseCSR([]byte(req.CSR))
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	now := h.cfg.Now()
	life := h.cfg.ClientCertLifetime
	if exp := callerExpires(r); !exp.IsZero() && exp.Sub(now) < life {
		life = exp.Sub(now)
	}
	p := caller(r)
	p.Via = ""
	certPEM, cert, err := h.cfg.ClusterCA.IssuePrincipal(csr, p, now, life)
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	h.log.Info("relay client certificate issued", "principal", access.PrincipalRef(p), "not_after", cert.NotAfter)
	httpjson.Write(w, http.StatusCreated, api.CertificateResponse{Certificate: string(certPEM), CABundle: string(h.cfg.CAPEM), NotAfter: cert.NotAfter.UTC().Format(time.RFC3339)})
}

// maxAuditRecords bounds one audit answer.
const maxAuditRecords = 10_000

func (h *Handler) readAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := audit.Filter{Cluster: q.Get("cluster"), User: q.Get("user"), Limit: 1000}
	if s := q.Get("since"); s != "" {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			f.Since = t
		} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
			f.Since = h.cfg.Now().Add(-d)
		} else {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("since=%q: want an RFC 3339 time or a duration such as 1h", s))
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxAuditRecords {
			apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want 1 to %d", s, maxAuditRecords))
			return
		}
		f.Limit = n
	}
	out := api.AuditList{Value: []api.AuditRecord{}}
	if h.cfg.Audit != nil {
		if recs := h.cfg.Audit.Query(f); recs != nil {
			out.Value = recs
		}
	}
	httpjson.Write(w, http.StatusOK, out)
}
