package build

import (
	"runtime/debug"
	"testing"
)

func TestInfo(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "4bc384f0"}, {Key: "vcs.modified", Value: "true"}}}
	installed := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}}
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		linkVer, linkRev string
		wantVer, wantRev string
	}{
		{"go build in a checkout", stamped, "dev", "", "dev", "4bc384f0+dirty"},
		{"go install @version", installed, "dev", "", "v1.2.3", "unknown"},
		{"make build (linker flags)", installed, "v1.3.0-4-gabc", "abc", "v1.3.0-4-gabc", "abc"},
		{"no build info", nil, "dev", "", "dev", "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			Version, Revision = tc.linkVer, tc.linkRev
			defer func() { Version, Revision = "dev", "" }()
			v, r, _ := info(tc.bi)
			if v != tc.wantVer || r != tc.wantRev {
				t.Fatalf("got %s %s, want %s %s", v, r, tc.wantVer, tc.wantRev)
			}
		})
	}
}
