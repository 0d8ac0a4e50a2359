// Package build holds version information stamped in at link time.
package build

import "runtime/debug"

// Version is set with -ldflags "-X .../internal/build.Version=...".
var Version = "dev"

// Info returns the version and the Go build settings (VCS revision, Go version).
func Info() (version, revision, goVersion string) {
	version, revision, goVersion = Version, "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return version, revision, goVersion
}
