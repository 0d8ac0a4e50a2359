package topomap

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestZZDevScale(t *testing.T) {
	if os.Getenv("DEV") == "" {
		t.Skip()
	}
	s := newScale()
	m, srv := startMap(t, testConfig(), s.inv, nil)
	b := &testing.B{}
	_ = b
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if os.Getenv("LOAD") != "" {
		s.load(nil, ctx, m, 10000, nil)
	} else {
		s.load(nil, ctx, m, 0, nil)
	}
	os.WriteFile("/tmp/devurl", []byte(srv.URL+"/map/?token="+testToken), 0o644)
	time.Sleep(8 * time.Minute)
}
