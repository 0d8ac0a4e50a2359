// Package image builds Meridian's OCI images without a container engine: the binary, the
// glibc pieces purego's loader and libchdb need, CA certificates and tzdata, taken from
// the build host's Debian packages. Every tar entry has a fixed time, owner and order, so
// the same inputs give the same digest.
package image

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// Variant names an image flavour.
type Variant string

const (
	// Embedded carries libchdb.so: -target=all runs on the embedded ClickHouse engine.
	Embedded Variant = "embedded"
	// Slim has no libchdb.so: for -storage.clickhouse.dsn deployments, or with the library
	// mounted at ChdbLibPath from a volume.
	Slim Variant = "slim"
)

// Paths and identity inside the image.
const (
	BinaryPath  = "/usr/bin/meridian"
	ChdbLibPath = "/opt/chdb/libchdb.so"
	DataDir     = "/var/lib/meridian"
	UID, GID    = 65532, 65532
	User        = "65532:65532"
)

// epoch is every file's and the config's time: a fixed instant, so rebuilds are
// byte-identical (ko does the same).
var epoch = time.Unix(0, 0).UTC()

// hostFiles are copied from the build host. glibc: the loader and the libraries the Go
// binary (libc) and libchdb.so (libc, libm, libpthread, librt, libdl) link against.
var hostFiles = []string{
	"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"/usr/lib/x86_64-linux-gnu/libc.so.6",
	"/usr/lib/x86_64-linux-gnu/libm.so.6",
	"/usr/lib/x86_64-linux-gnu/libpthread.so.0",
	"/usr/lib/x86_64-linux-gnu/librt.so.1",
	"/usr/lib/x86_64-linux-gnu/libdl.so.2",
	"/etc/ssl/certs/ca-certificates.crt",
	"/usr/share/doc/libc6/copyright",
	"/usr/share/doc/ca-certificates/copyright",
	"/usr/share/doc/tzdata/copyright",
}

// hostTrees are copied whole.
var hostTrees = []string{"/usr/share/zoneinfo"}

// debianPackages are the host packages the files above come from; their versions are
// recorded in a label.
var debianPackages = []string{"libc6", "ca-certificates", "tzdata"}

// Options says what goes into the images.
type Options struct {
	Binary   string // linux/amd64 meridian binary (BuildBinary makes one)
	ChdbLib  string // libchdb.so, for the embedded variant
	Version  string
	HostRoot string // where hostFiles are read from; default "/"
	Work     string // scratch directory for layer files; they must outlive the images
}

// Build assembles one variant. Its layers are files under opts.Work.
func Build(opts Options, v Variant) (v1.Image, error) {
	if opts.HostRoot == "" {
		opts.HostRoot = "/"
	}
	base, err := baseEntries(opts.HostRoot)
	if err != nil {
		return nil, err
	}
	layers := [][]entry{base}
	if v == Embedded {
		if opts.ChdbLib == "" {
			return nil, fmt.Errorf("image %s: no libchdb.so given", v)
		}
		layers = append(layers, []entry{dir("opt/chdb", 0o755, 0), file("opt/chdb/libchdb.so", opts.ChdbLib, 0o644)})
	}
	layers = append(layers, []entry{file(strings.TrimPrefix(BinaryPath, "/"), opts.Binary, 0o755)})

	img := empty.Image
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, l := range layers {
		layer, err := writeLayer(filepath.Join(opts.Work, fmt.Sprintf("%s-%d.tar.gz", v, i)), l)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", v, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer}); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{
		User:         User,
		Entrypoint:   []string{BinaryPath},
		WorkingDir:   DataDir,
		Env:          []string{"PATH=/usr/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "MERIDIAN_CHDB_LIB=" + ChdbLibPath},
		ExposedPorts: map[string]struct{}{"9470/tcp": {}},
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "meridian",
			"org.opencontainers.image.version": opts.Version,
			"org.opencontainers.image.source":  "https://github.com/meridianhq/meridian",
			"io.meridian.variant":              string(v),
			"io.meridian.debian-packages":      packageVersions(opts.HostRoot),
		},
	}
	return mutate.ConfigFile(img, cf)
}

// BuildBinary compiles cmd/meridian of the module at moduleDir for linux/amd64, stripped
// of symbol tables and file paths so that it is smaller and does not depend on where it
// was built.
func BuildBinary(moduleDir, version, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X github.com/meridianhq/meridian/internal/build.Version="+version,
		"-o", out, "./cmd/meridian")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/meridian: %w\n%s", err, b)
	}
	return nil
}

// entry is one tar entry: a directory, a symlink, generated content or a host file.
type entry struct {
	name     string // relative, no leading slash
	mode     int64
	typ      byte
	link     string
	data     []byte
	src      string
	uid, gid int
}

func dir(name string, mode int64, owner int) entry {
	return entry{name: name, mode: mode, typ: tar.TypeDir, uid: owner, gid: owner}
}
func file(name, src string, mode int64) entry {
	return entry{name: name, mode: mode, typ: tar.TypeReg, src: src}
}
func content(name, data string) entry {
	return entry{name: name, mode: 0o644, typ: tar.TypeReg, data: []byte(data)}
}
func symlink(name, target string) entry {
	return entry{name: name, mode: 0o777, typ: tar.TypeSymlink, link: target}
}

// baseEntries is the layer every variant shares: a merged-/usr layout as on Debian, the
// user, glibc, certificates, tzdata, and the mount points a read-only root needs.
func baseEntries(root string) ([]entry, error) {
	es := []entry{
		dir("etc", 0o755, 0), dir("usr", 0o755, 0), dir("usr/bin", 0o755, 0), dir("usr/lib", 0o755, 0),
		dir("lib64", 0o755, 0), dir("dev", 0o755, 0), dir("proc", 0o555, 0), dir("sys", 0o555, 0),
		dir("tmp", 0o1777, 0), dir("var", 0o755, 0), dir("var/lib", 0o755, 0),
		dir(strings.TrimPrefix(DataDir, "/"), 0o750, UID),
		symlink("lib", "usr/lib"),
		symlink("lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
		content("etc/passwd", fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nmeridian:x:%d:%d:meridian:%s:/sbin/nologin\n", UID, GID, DataDir)),
		content("etc/group", fmt.Sprintf("root:x:0:\nmeridian:x:%d:\n", GID)),
		// Go's resolver stays pure Go (no NSS modules needed) with this file.
		content("etc/nsswitch.conf", "hosts: files dns\n"),
	}
	for _, f := range hostFiles {
		es = append(es, file(strings.TrimPrefix(f, "/"), filepath.Join(root, f), 0o644))
	}
	for _, t := range hostTrees {
		err := filepath.WalkDir(filepath.Join(root, t), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			switch {
			case d.IsDir():
				es = append(es, dir(rel, 0o755, 0))
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				es = append(es, symlink(rel, target))
			default:
				es = append(es, file(rel, p, 0o644))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("image: host %s: %w", t, err)
		}
	}
	// The loader and libc keep their execute bit, as in Debian.
	for i := range es {
		if strings.HasSuffix(es[i].name, "ld-linux-x86-64.so.2") || strings.HasSuffix(es[i].name, "libc.so.6") {
			if es[i].typ == tar.TypeReg {
				es[i].mode = 0o755
			}
		}
	}
	return addParents(es), nil
}

// addParents adds any missing parent directory (root-owned, 0755).
func addParents(es []entry) []entry {
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.name] = true
	}
	for _, e := range es {
		for p := path.Dir(e.name); p != "." && !seen[p]; p = path.Dir(p) {
			seen[p] = true
			es = append(es, dir(p, 0o755, 0))
		}
	}
	return es
}

// writeLayer writes es, sorted by name, as a gzipped tar at dst and opens it as a layer.
func writeLayer(dst string, es []entry) (v1.Layer, error) {
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	f, err := os.Create(dst)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, e := range es {
		if err := writeEntry(tw, e); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return tarball.LayerFromFile(dst, tarball.WithMediaType(types.OCILayer))
}

func writeEntry(tw *tar.Writer, e entry) error {
	h := &tar.Header{
		Name: e.name, Mode: e.mode, Typeflag: e.typ, Linkname: e.link,
		Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX,
	}
	if e.typ == tar.TypeDir {
		h.Name += "/"
	}
	var r io.Reader
	switch {
	case e.src != "":
		f, err := os.Open(e.src)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		h.Size, r = st.Size(), f
	case e.typ == tar.TypeReg:
		h.Size, r = int64(len(e.data)), strings.NewReader(string(e.data))
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("image: %s: %w", e.name, err)
	}
	if r != nil {
		if n, err := io.Copy(tw, r); err != nil || n != h.Size {
			return fmt.Errorf("image: %s: copied %d of %d bytes: %v", e.name, n, h.Size, err)
		}
	}
	return nil
}

// packageVersions reads the installed versions of debianPackages ("libc6=2.36-9+deb12u14 ...");
// empty when dpkg is not there to ask.
func packageVersions(root string) string {
	args := []string{"-W", "-f", "${Package}=${Version} "}
	if root != "/" {
		args = append([]string{"--admindir", filepath.Join(root, "var/lib/dpkg")}, args...)
	}
	out, err := exec.Command("dpkg-query", append(args, debianPackages...)...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
