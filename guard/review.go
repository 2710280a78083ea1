package guard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
)

// API versions and kinds of the reviews guard serves (the apiserver is
// configured with version v1 for both webhooks).
const (
	TokenReviewAPIVersion         = "authentication.k8s.io/v1"
	TokenReviewKind               = "TokenReview"
	SubjectAccessReviewAPIVersion = "authorization.k8s.io/v1"
	SubjectAccessReviewKind       = "SubjectAccessReview"
)

// MaxReviewBytes bounds a review request body: a SubjectAccessReview of a
// user in thousands of groups is a few hundred KiB.
const MaxReviewBytes = 2 << 20

// ErrReview is wrapped by every decoding error.
var ErrReview = errors.New("invalid review")

func decodeReview(b []byte, v any, apiVersion, kind string) error {
	if len(b) > MaxReviewBytes {
		return fmt.Errorf("%w: %d bytes, over %d", ErrReview, len(b), MaxReviewBytes)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(b, &tm); err != nil {
		return fmt.Errorf("%w: not a JSON object: %v", ErrReview, err)
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		return fmt.Errorf("%w: got %s %q, want %s %s (configure the apiserver's webhook version v1)", ErrReview, tm.APIVersion, tm.Kind, apiVersion, kind)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrReview, err)
	}
	return nil
}

// DecodeTokenReview parses an authentication.k8s.io/v1 TokenReview request.
func DecodeTokenReview(b []byte) (*authnv1.TokenReview, error) {
	var r authnv1.TokenReview
	if err := decodeReview(b, &r, TokenReviewAPIVersion, TokenReviewKind); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeSubjectAccessReview parses an authorization.k8s.io/v1
// SubjectAccessReview request.
func DecodeSubjectAccessReview(b []byte) (*authzv1.SubjectAccessReview, error) {
	var r authzv1.SubjectAccessReview
	if err := decodeReview(b, &r, SubjectAccessReviewAPIVersion, SubjectAccessReviewKind); err != nil {
		return nil, err
	}
	return &r, nil
}
