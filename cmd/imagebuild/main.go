// Command imagebuild writes Meridian's OCI images under dist/ without a container engine
// (`make image`). The logic lives in deploy/image; this file only wires.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meridianhq/meridian/deploy/image"
	"github.com/meridianhq/meridian/storage/chdb"
)

func main() {
	out := flag.String("out", "dist", "Directory the OCI layouts (and tarballs) are written to.")
	version := flag.String("version", "dev", "Version stamped into the binary and used as the image tag.")
	lib := flag.String("chdb-lib", chdb.LibPath(""), "libchdb.so for the embedded variant.")
	tarballs := flag.Bool("tarballs", false, "Also write dist/meridian-VARIANT.tar for `docker load`, `podman load` or `kind load image-archive`.")
	flag.Parse()
	if err := run(*out, *version, *lib, *tarballs); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(out, version, lib string, tarballs bool) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(out, ".work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "meridian")
	if err := image.BuildBinary(".", version, bin); err != nil {
		return err
	}
	opts := image.Options{Binary: bin, ChdbLib: lib, Version: version, Work: work}
	for _, v := range []image.Variant{image.Embedded, image.Slim} {
		img, err := image.Build(opts, v)
		if err != nil {
			return err
		}
		ref := image.Ref(version, v)
		dir := filepath.Join(out, "meridian-"+string(v))
		digest, err := image.WriteLayout(dir, img, ref)
		if err != nil {
			return err
		}
		size, err := image.SizeOf(img)
		if err != nil {
			return err
		}
		fmt.Printf("%-8s %s  %s  %s  compressed %.1f MB, unpacked %.1f MB\n", v, dir, ref, digest,
			float64(size.Compressed)/1e6, float64(size.Uncompressed)/1e6)
		if tarballs {
			if err := image.WriteTarball(dir+".tar", img, ref); err != nil {
				return err
			}
		}
	}
	return nil
}
