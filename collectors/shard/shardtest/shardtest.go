// Package shardtest is a shard.Owner that tests move targets in and out of, as the
// collector ring would.
package shardtest

import "sync"

// Owner owns the targets last given to Set.
type Owner struct {
	mu  sync.Mutex
	own map[string]bool
}

// Owns implements shard.Owner.
func (o *Owner) Owns(target string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.own[target]
}

// Set makes targets the ones owned.
func (o *Owner) Set(targets ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.own = map[string]bool{}
	for _, t := range targets {
		o.own[t] = true
	}
}
