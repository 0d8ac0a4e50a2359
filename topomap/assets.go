package topomap

import (
	"embed"
	"io/fs"
	"net/http"
)

// dist is the page built by `make web` (topomap/web, esbuild). Only dist/.gitkeep is
// committed, so `go build` works from a fresh clone; the page then says to run make web.
//
//go:embed all:web/dist
var dist embed.FS

const placeholder = `<!doctype html><meta charset="utf-8"><title>Meridian map</title>
<p>The map's web assets are not built into this binary. Run <code>make web</code> (or
<code>make build</code>) and rebuild; the websocket (<code>/map/ws</code>) and snapshot
(<code>/map/api/snapshot</code>) work without them.</p>`

// ContentSecurityPolicy is the policy the page works under: its own script, style and
// websocket only (the bundle carries everything it draws, the world map included), the
// inline empty favicon, and no framing (clickjacking).
const ContentSecurityPolicy = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func assetHandler() http.Handler {
	sub, _ := fs.Sub(dist, "web/dist")
	if _, err := fs.Stat(sub, "index.html"); err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte(placeholder))
		})
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", ContentSecurityPolicy)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}
