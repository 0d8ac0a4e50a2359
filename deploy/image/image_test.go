package image

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/meridianhq/meridian/internal/amtest"
	"github.com/meridianhq/meridian/storage/chdb"
)

const testVersion = "v0.0.0-imagetest"

// built is one build of both variants, shared by the tests: the embedded image alone
// compresses 0.5 GB.
var built struct {
	once sync.Once
	dir  string // layouts: dir/embedded, dir/slim
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		runChild() // never returns
	}
	dir, err := os.MkdirTemp("", "meridian-image-test-")
	if err != nil {
		panic(err)
	}
	built.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildAll builds the binary once and both variants into layouts under root.
func buildAll(t *testing.T, root string) map[Variant]v1.Hash {
	t.Helper()
	built.once.Do(func() {
		built.bin = filepath.Join(built.dir, "meridian")
		built.err = BuildBinary("../..", testVersion, built.bin)
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	work := filepath.Join(root, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	opts := Options{Binary: built.bin, ChdbLib: chdb.LibPath(""), Version: testVersion, Work: work}
	digests := map[Variant]v1.Hash{}
	for _, v := range []Variant{Embedded, Slim} {
		img, err := Build(opts, v)
		if err != nil {
			t.Fatal(err)
		}
		if digests[v], err = WriteLayout(filepath.Join(root, string(v)), img, Ref(testVersion, v)); err != nil {
			t.Fatal(err)
		}
	}
	return digests
}

var first struct {
	once    sync.Once
	digests map[Variant]v1.Hash
}

// layouts returns the shared first build.
func layouts(t *testing.T) (string, map[Variant]v1.Hash) {
	t.Helper()
	first.once.Do(func() { first.digests = buildAll(t, filepath.Join(built.dir, "a")) })
	if first.digests == nil {
		t.Fatal("the first build failed")
	}
	return filepath.Join(built.dir, "a"), first.digests
}

// TestReproducible builds both images a second time from the same inputs and expects
// the same digests, then reports their sizes.
func TestReproducible(t *testing.T) {
	dirA, a := layouts(t)
	b := buildAll(t, filepath.Join(built.dir, "b"))
	for _, v := range []Variant{Embedded, Slim} {
		if a[v] != b[v] {
			t.Errorf("%s: two builds gave %s and %s", v, a[v], b[v])
		}
		img, err := ReadLayout(filepath.Join(dirA, string(v)))
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := img.Digest(); d != a[v] {
			t.Errorf("%s: layout holds %s, build said %s", v, d, a[v])
		}
		s, err := SizeOf(img)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("BENCH image=%s digest=%s compressed_mb=%.1f unpacked_mb=%.1f", v, a[v], float64(s.Compressed)/1e6, float64(s.Uncompressed)/1e6)
	}
	if a[Embedded] == a[Slim] {
		t.Error("the variants have the same digest")
	}
}

// TestConfig checks what a runtime reads from the image: a non-root user, the entrypoint,
// the data volume as working directory, where libchdb.so is looked for, no shell.
func TestConfig(t *testing.T) {
	dir, _ := layouts(t)
	for _, v := range []Variant{Embedded, Slim} {
		img, err := ReadLayout(filepath.Join(dir, string(v)))
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != User || strings.Join(c.Entrypoint, " ") != BinaryPath || c.WorkingDir != DataDir {
			t.Errorf("%s: user %q entrypoint %q workdir %q", v, c.User, c.Entrypoint, c.WorkingDir)
		}
		if _, ok := c.Volumes[DataDir]; !ok {
			t.Errorf("%s: no volume at %s", v, DataDir)
		}
		if !cf.Created.Time.Equal(epoch) {
			t.Errorf("%s: created %s, want the fixed epoch", v, cf.Created)
		}
		if !strings.Contains(strings.Join(c.Env, " "), "MERIDIAN_CHDB_LIB="+ChdbLibPath) {
			t.Errorf("%s: env %q lacks MERIDIAN_CHDB_LIB", v, c.Env)
		}
		if !strings.Contains(c.Labels["io.meridian.debian-packages"], "libc6=") {
			t.Errorf("%s: labels %v do not say which Debian packages it holds", v, c.Labels)
		}
	}
}

// TestRootfsRuns unpacks each image and runs its entrypoint as a runtime would: in its
// own mount and PID namespaces, chrooted into a read-only root, as the image's user, in
// its working directory with its environment, with only the data directory writable.
func TestRootfsRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount namespaces, chroot and setuid (make test runs as root in CI)")
	}
	dir, _ := layouts(t)
	roots := map[Variant]string{}
	for _, v := range []Variant{Embedded, Slim} {
		img, err := ReadLayout(filepath.Join(dir, string(v)))
		if err != nil {
			t.Fatal(err)
		}
		roots[v] = filepath.Join(t.TempDir(), "rootfs")
		if err := Unpack(img, roots[v]); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(roots[v], "bin/sh")); err == nil {
			t.Errorf("%s: the image has a shell", v)
		}
		out, err := runInImage(t, img, roots[v], t.TempDir(), nil, "version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "meridian "+testVersion+" ") {
			t.Fatalf("%s: meridian version: %v\n%s", v, err, out)
		}
	}

	t.Run("embedded all reaches readyz", func(t *testing.T) {
		img, err := ReadLayout(filepath.Join(dir, string(Embedded)))
		if err != nil {
			t.Fatal(err)
		}
		data := t.TempDir()
		addr := fmt.Sprintf("127.0.0.1:%d", amtest.FreePort(t))
		var logs bytes.Buffer
		cmd := runInImage(t, img, roots[Embedded], data, []string{"MERIDIAN_API_TOKEN=image-test-token"},
			"-target=all", "-server.listen-address="+addr)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		deadline := time.Now().Add(3 * time.Minute)
		for {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case err := <-exited:
				t.Fatalf("meridian exited before /readyz answered 200: %v\n%s", err, logs.String())
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz not 200 within 3 minutes (last: %v)\n%s", err, logs.String())
			}
		}
		// The embedded engine and the spool live on the volume, the only writable place.
		for _, p := range []string{"data/clickhouse", "data/spool"} {
			st, err := os.Stat(filepath.Join(data, p))
			if err != nil {
				t.Errorf("%s not on the data volume: %v", p, err)
				continue
			}
			if st.Sys().(*syscall.Stat_t).Uid != UID {
				t.Errorf("%s owned by uid %d, want %d", p, st.Sys().(*syscall.Stat_t).Uid, UID)
			}
		}
	})
}

// envChild carries the child's instructions: the test binary re-runs itself as the
// container's init, which sets up its namespaces and execs the entrypoint.
const envChild = "MERIDIAN_IMAGE_TEST_CHILD"

// runInImage prepares a command that runs img's entrypoint with args in rootfs, data
// mounted at DataDir.
func runInImage(t *testing.T, img v1.Image, rootfs, data string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, UID, GID); err != nil {
		t.Fatal(err)
	}
	var uid, gid int
	if _, err := fmt.Sscanf(cf.Config.User, "%d:%d", &uid, &gid); err != nil {
		t.Fatalf("image user %q: %v", cf.Config.User, err)
	}
	cmd := exec.Command(os.Args[0], args...)
	// Like a runtime: the image's environment, HOME from its user's passwd entry.
	cmd.Env = append(append([]string{"HOME=" + DataDir}, cf.Config.Env...), env...)
	cmd.Env = append(cmd.Env, envChild+"="+strings.Join([]string{rootfs, data, cf.Config.WorkingDir,
		fmt.Sprint(uid), fmt.Sprint(gid), strings.Join(cf.Config.Entrypoint, "\x1f")}, "\x1e"))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd
}

// runChild is the container's init: mounts, chroot, user, exec.
func runChild() {
	f := strings.Split(os.Getenv(envChild), "\x1e")
	rootfs, data, workdir, entry := f[0], f[1], f[2], strings.Split(f[5], "\x1f")
	var uid, gid int
	fmt.Sscan(f[3], &uid)
	fmt.Sscan(f[4], &gid)
	must := func(what string, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "image test init: %s: %v\n", what, err)
			os.Exit(111)
		}
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, envChild+"=") {
			env = append(env, e)
		}
	}
	must("private mounts", syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""))
	must("bind root", syscall.Mount(rootfs, rootfs, "", syscall.MS_BIND|syscall.MS_REC, ""))
	must("read-only root", syscall.Mount("", rootfs, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""))
	must("proc", syscall.Mount("proc", filepath.Join(rootfs, "proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""))
	must("tmp", syscall.Mount("tmpfs", filepath.Join(rootfs, "tmp"), "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777"))
	must("data", syscall.Mount(data, filepath.Join(rootfs, DataDir), "", syscall.MS_BIND, ""))
	must("dev", syscall.Mount("tmpfs", filepath.Join(rootfs, "dev"), "tmpfs", syscall.MS_NOSUID, "mode=755"))
	for _, d := range []string{"null", "zero", "random", "urandom"} {
		p := filepath.Join(rootfs, "dev", d)
		must(p, os.WriteFile(p, nil, 0o666))
		must(p, syscall.Mount("/dev/"+d, p, "", syscall.MS_BIND, ""))
	}
	must("chroot", syscall.Chroot(rootfs))
	must("chdir", syscall.Chdir(workdir))
	must("setgroups", syscall.Setgroups(nil))
	must("setgid", syscall.Setgid(gid))
	must("setuid", syscall.Setuid(uid))
	must("exec", syscall.Exec(entry[0], append(entry, os.Args[1:]...), env))
}
