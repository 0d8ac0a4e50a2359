// Package build says which Meridian this is: the version and the source revision.
package build

import "runtime/debug"

// Version and Revision may be set at link time (-ldflags "-X .../internal/build.Version=v1.2.3
// -X .../internal/build.Revision=abc123"), as `make build` does. Without them, Info reads
// Go's build info: the module version of `go install ...@v1.2.3`, and the VCS revision
// that `go build` stamps inside a git checkout (unless -buildvcs=false).
var (
	Version  = "dev"
	Revision = ""
)

// Info returns the version, the source revision ("unknown" when neither the linker nor
// Go's build info gives one; "+dirty" when built from modified sources) and the Go version.
func Info() (version, revision, goVersion string) {
	bi, _ := debug.ReadBuildInfo()
	return info(bi)
}

func info(bi *debug.BuildInfo) (version, revision, goVersion string) {
	version, revision, goVersion = Version, Revision, "unknown"
	if bi == nil {
		return version, orUnknown(revision), goVersion
	}
	goVersion = bi.GoVersion
	if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if revision == "" {
				revision = s.Value
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && revision != "" {
		revision += "+dirty"
	}
	return version, orUnknown(revision), goVersion
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
