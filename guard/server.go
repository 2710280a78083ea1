package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/pkg/apistatus"
	"github.com/clusterconnect/clusterconnect/pkg/entra"
	"github.com/clusterconnect/clusterconnect/pkg/serve"
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
	// BodyTimeout bounds reading a review's body (up to MaxReviewBytes),
	// so that a client trickling one cannot hold a connection; zero means
	// DefaultBodyTimeout. A body not read in time is answered 408.
	BodyTimeout time.Duration
}

// DefaultBodyTimeout is Config.BodyTimeout's default: the apiserver sends a
// review at once, and waits for the answer at most 30 s.
const DefaultBodyTimeout = 10 * time.Second

// Handler serves POST /tokenreviews and POST /subjectaccessreviews.
type Handler struct {
	cfg     Config
	mux     *http.ServeMux
	handler http.Handler // mux, with the body deadline
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
	if cfg.BodyTimeout == 0 {
		h.cfg.BodyTimeout = DefaultBodyTimeout
	}
	h.handler = serve.BodyDeadline(h.mux, h.cfg.BodyTimeout)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return b, true
	case serve.IsTimeout(err):
		apistatus.Error(w, http.StatusRequestTimeout, fmt.Sprintf("review body not received within %s", h.cfg.BodyTimeout))
	case errors.As(err, &tooLarge):
		apistatus.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("review body over %d bytes", MaxReviewBytes))
	default:
		apistatus.Error(w, http.StatusBadRequest, fmt.Sprintf("review body unreadable: %v", err))
	}
	return nil, false
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
	b, ok := h.readBody(w, r)
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
	b, ok := h.readBody(w, r)
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
