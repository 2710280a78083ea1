// Package relay is the cloud side of cluster connect: agents dial in and hold
// tunnels; kubectl reaches a cluster at /clusters/<name>/… and is proxied
// into a stream of one of that cluster's tunnels; a management API registers
// clusters and issues kubeconfigs. Server is an http.Handler.
package relay
