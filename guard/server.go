package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
)

// Webhook paths.
const (
	TokenReviewPath         = "/tokenreviews"
	SubjectAccessReviewPath = "/subjectaccessreviews"
)

// Verifier verifies bearer tokens; *entra.Verifier implements it.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*entra.Identity, error)
}

// Config configures the webhook [Handler].
type Config struct {
	// Verifier answers TokenReviews; nil means guard does not serve them
	// (404), for an apiserver that authenticates users otherwise.
	Verifier Verifier
	// Authorizer answers SubjectAccessReviews. Required.
	Authorizer *Authorizer
	// Metrics; nil records nothing.
	Metrics *Metrics
	// Logger; nil discards.
	Logger *slog.Logger
}

// Handler serves POST /tokenreviews and POST /subjectaccessreviews.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

// NewHandler returns the webhook handler.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Authorizer == nil {
		return nil, errors.New("guard: the handler needs an authorizer")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	if cfg.Verifier != nil {
		h.mux.HandleFunc("POST "+TokenReviewPath, h.tokenReview)
	}
	h.mux.HandleFunc("POST "+SubjectAccessReviewPath, h.subjectAccessReview)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	if err != nil {
		apistatus.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("review body unreadable or over %d bytes: %v", MaxReviewBytes, err))
		return nil, false
	}
	return b, true
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		apistatus.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func (h *Handler) tokenReview(w http.ResponseWriter, r *http.Request) {
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := DecodeTokenReview(b)
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	resp := authnv1.TokenReview{
		TypeMeta:   metav1.TypeMeta{APIVersion: TokenReviewAPIVersion, Kind: TokenReviewKind},
		ObjectMeta: metav1.ObjectMeta{UID: req.UID},
	}
	id, err := h.cfg.Verifier.Verify(r.Context(), req.Spec.Token)
	switch {
	case err == nil:
		h.cfg.Metrics.authnReview("authenticated")
		extra := map[string]authnv1.ExtraValue{}
		for k, v := range id.Extra() {
			extra[k] = v
		}
		resp.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
			Username: id.Username, UID: id.ObjectID, Groups: id.Groups, Extra: extra,
		}}
	case entra.ReasonOf(err) == entra.ReasonIssuerUnavailable:
		// The token may well be good: an error (not a cached
		// "unauthenticated") makes the apiserver retry and not remember it.
		h.cfg.Metrics.authnReview("error")
		h.cfg.Logger.Warn("token review: issuer unavailable", "err", err)
		apistatus.Error(w, http.StatusServiceUnavailable, err.Error())
		return
	default:
		h.cfg.Metrics.authnReview("unauthenticated")
		msg := err.Error()
		if errors.Is(err, entra.ErrNotEntra) {
			msg = "guard: " + msg
		} else {
			h.cfg.Logger.Info("token review: token refused", "reason", string(entra.ReasonOf(err)), "err", err)
		}
		resp.Status = authnv1.TokenReviewStatus{Error: msg}
	}
	writeJSON(w, &resp)
}

func (h *Handler) subjectAccessReview(w http.ResponseWriter, r *http.Request) {
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := DecodeSubjectAccessReview(b)
	if err != nil {
		apistatus.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	resp := authzv1.SubjectAccessReview{
		TypeMeta:   metav1.TypeMeta{APIVersion: SubjectAccessReviewAPIVersion, Kind: SubjectAccessReviewKind},
		ObjectMeta: metav1.ObjectMeta{UID: req.UID},
		Status:     h.cfg.Authorizer.Authorize(r.Context(), &req.Spec),
	}
	writeJSON(w, &resp)
}
