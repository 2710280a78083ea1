// Package images checks the container images' Dockerfiles (cmd/<binary>/Dockerfile)
// without a container engine: multi-stage, a distroless final stage without
// a shell, a numeric non-root user, the exec-form entrypoint the charts run,
// a static binary stamped with its version. The checks are its tests.
package images
