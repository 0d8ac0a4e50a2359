package steering

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// ReplayUsage is the help of `meridian steering replay`.
const ReplayUsage = `usage: meridian steering replay -from T1 -to T2 [-config candidate.yaml] [-o text|json|csv]
       [-flap-window 5m] [-warmup 15m] [-server http://127.0.0.1:9470] [-server.token-file FILE]

Replays the steering inputs recorded in [T1, T2] through a fresh engine, with the live
configuration or a candidate (a YAML file with a steering: section; its fields replace the
live ones), and prints every decision, the differences from the live decisions and a
summary per service and region. T is an RFC 3339 time, "now", or a duration ago (90m).
It asks the running Meridian's /api/steering/replay; the token is read from
-server.token-file, else $%s.
`

// ReplayCmd runs `meridian steering replay` against a running Meridian; tokenEnv names
// the environment variable holding the API token when no token file is given.
func ReplayCmd(ctx context.Context, args []string, tokenEnv string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meridian steering replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, ReplayUsage, tokenEnv) }
	from := fs.String("from", "", "Start of the interval: RFC 3339, now, or a duration ago.")
	to := fs.String("to", "now", "End of the interval.")
	candidate := fs.String("config", "", "Candidate configuration (YAML with a steering: section); empty: the live configuration.")
	format := fs.String("o", "text", "Output: text, json or csv.")
	flap := fs.Duration("flap-window", DefaultFlapWindow, "A change undone within this long is a flap.")
	warmup := fs.Duration("warmup", DefaultReplayWarmup, "History before -from replayed unreported, to rebuild the engine's state.")
	server := fs.String("server", "http://127.0.0.1:9470", "Base URL of the running Meridian.")
	tokenFile := fs.String("server.token-file", "", "File holding the API token (else $"+tokenEnv+").")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	q := url.Values{"from": {*from}, "to": {*to}, "format": {*format}, "flap_window": {flap.String()}, "warmup": {warmup.String()}}
	method, body := http.MethodGet, []byte(nil)
	if *candidate != "" {
		b, err := os.ReadFile(*candidate)
		if err != nil {
			return err
		}
		method, body = http.MethodPost, b
	}
	token := os.Getenv(tokenEnv)
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(*server, "/")+"/api/steering/replay?"+q.Encode(), strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is Meridian running at %s? %w", *server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			if *candidate != "" && strings.HasPrefix(e.Error, "candidate configuration") {
				e.Error = *candidate + strings.TrimPrefix(e.Error, "candidate configuration")
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	_, err = io.Copy(stdout, resp.Body)
	return err
}
