package topomap

import (
	"context"
	"strings"
	"testing"
)

func TestZZScaleStatus(t *testing.T) {
	s := newScale()
	m, _ := startMap(t, testConfig(), s.inv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.load(t, ctx, m, 0, nil)
	data, _ := m.hub.snapshot(nil, nil)
	t.Log(len(data), strings.Count(string(data), `"status":"ok"`), strings.Count(string(data), `"status":"unknown"`), m.hub.seq)
}
