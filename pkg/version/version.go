// Package version is the version of the clusterconnect binaries.
package version

import "runtime/debug"

// Version is set at build time with
// -ldflags "-X github.com/clusterconnect/clusterconnect/pkg/version.Version=v1.2.3";
// otherwise it is the module version the binary was built from, or "dev".
var Version = ""

// Get returns Version, falling back to the build info.
func Get() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
