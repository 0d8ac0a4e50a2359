package scrape

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
)

// StatusError is an HTTP answer other than 200, e.g. a ceph-mgr's 503 while its cache is stale.
type StatusError struct {
	URL    string
	Status int
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: HTTP %d", e.URL, e.Status) }

// MaxBody bounds what one scrape may read (a 1,000-OSD ceph-mgr exposition is ~10 MiB).
const MaxBody = 256 << 20

// Fetch GETs url and returns its body, with one spare byte of capacity for Exposition.
func Fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &StatusError{URL: url, Status: resp.StatusCode}
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 && resp.ContentLength < MaxBody {
		buf.Grow(int(resp.ContentLength) + 1)
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if n > MaxBody {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", url, MaxBody)
	}
	return buf.Bytes(), nil
}
